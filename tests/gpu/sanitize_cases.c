/* SPDX-License-Identifier: MIT */
/*
 * sanitize_cases.c - a representative run of the CUDA backend for the
 * compute-sanitizer tools (memcheck, racecheck, synccheck, initcheck),
 * compared bit for bit with the CPU backend on the way.
 *
 * The scenarios cover what the kernels must get right at the edges: E =
 * 256 and E = 65536 experts, H = 7168, an odd H and H = 1, both index
 * widths, an expert map, strided rows, every layout, padding flags, both
 * scale formats, drops, N = 0, and each kind of data error (bad id, bad
 * map entry, capacity too small, bad out_index, bad UE8M0 scale) with
 * outputs that must stay untouched. Each scenario runs a count, a scatter
 * with rows, a gather, and the same scatter index-only (no rows:
 * out_index, expert_end of the real rows, m_indices and row_source).
 * Outputs start poisoned with a canary, and the workspace is allocated
 * in memory that was just poisoned and freed, so a read of something
 * never written shows up as a difference (and to initcheck).
 *
 *   sanitize_cases        prints one line per scenario and a last line
 *                         "sanitize_cases: <n> scenarios, <n> failed"
 *   sanitize_cases large  the same for one scenario past 2^31 elements
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescatter.h"
#include "test_random.h"

#define CANARY 0xA5

typedef struct scenario {
    const char *name;
    int64_t n, k, e, e_global; /* e_global 0: no map                  */
    int64_t h, x_pad;          /* x and out strides are h + x_pad      */
    int x_dtype, ids_dtype, index_dtype;
    int layout;
    int64_t alignment;
    unsigned flags;
    int scales;                /* moes_scale_format                    */
    int64_t block;
    int fault;                 /* enum fault                           */
} scenario;

enum fault { VALID, BAD_ID, BAD_MAP, BAD_CAPACITY, BAD_OUT_INDEX, BAD_SCALE };

static const scenario scenarios[] = {
    {"E=256 bf16 H=7168 contiguous, UE8M0 scales, zero+label padding", 333,
     8, 256, 0, 7168, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_ZERO_PADDING | MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_UE8M0, 128, VALID},
    {"E=256 fp8 H=7168 grouped, fp32 scales, map E_global=384, strided",
     200, 6, 256, 384, 7168, 3, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT64,
     MOES_DTYPE_INT64, MOES_LAYOUT_GROUPED, 64, 0, MOES_SCALES_FP32, 128,
     VALID},
    {"E=65536 bf16 H=96 contiguous A=16", 4096, 8, 65536, 0, 96, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 16, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"E=1 fp32 H=1 masked with drops", 1000, 4, 1, 0, 1, 0, MOES_DTYPE_FP32,
     MOES_DTYPE_INT32, MOES_DTYPE_INT32, MOES_LAYOUT_MASKED, 1,
     MOES_SCATTER_ZERO_PADDING, 0, 128, VALID},
    {"E=64 fp16 H=7 masked, map E_global=100, fp32 scales B=3", 517, 5, 64,
     100, 7, 1, MOES_DTYPE_FP16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_MASKED, 1, MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32, 3,
     VALID},
    {"E=1024 fp8 H=1 contiguous A=1", 5000, 3, 1024, 0, 1, 0,
     MOES_DTYPE_FP8_E5M2, MOES_DTYPE_INT32, MOES_DTYPE_INT64,
     MOES_LAYOUT_CONTIGUOUS, 1, 0, 0, 128, VALID},
    /* Past the one-block routing (more than 8192 choices) with few
     * experts: the tile passes' shared-memory counts. */
    {"E=256 of 512 bf16 H=64 masked with drops, N=2048 K=8", 2048, 8, 256,
     512, 64, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_MASKED, 1, MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32, 32,
     VALID},
    {"E=32 of 256 fp8 H=128 grouped A=64, N=4096 K=8", 4096, 8, 32, 256,
     128, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT64,
     MOES_LAYOUT_GROUPED, 64, MOES_SCATTER_ZERO_PADDING, 0, 128, VALID},
    /* The one-launch scatter at its limit of choices (8192, dense int32
     * ids read four at a time, eight tokens a block), and its capacity
     * check. */
    {"E=32 of 256 fp8 H=7168 contiguous, fp32 scales, N=1024 K=8", 1024, 8,
     32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32, 128, VALID},
    /* Blocks of one or two tokens, whose rows and scales the one-launch
     * scatter loads at entry and stores once placed (on 132 or fewer
     * multiprocessors). */
    {"E=32 of 256 fp8 H=7168 contiguous, fp32 scales, N=200 K=8", 200, 8,
     32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32, 128, VALID},
    /* The one-launch scatter's copy list with blocks of several tokens
     * of 16-byte rows (12 and 16 tokens a block on 132 multiprocessors):
     * masked with drops (tokens placed in fewer rows than they chose),
     * and a map with K = 4. */
    {"E=8 bf16 H=2048 masked with drops, fp32 scales, N=1500 K=5", 1500, 5,
     8, 0, 2048, 8, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_MASKED, 1, MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32,
     128, VALID},
    {"E=100 of 160 bf16 H=2048 grouped A=8, fp32 scales, N=2000 K=4", 2000,
     4, 100, 160, 2048, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64,
     MOES_DTYPE_INT64, MOES_LAYOUT_GROUPED, 8, 0, MOES_SCALES_FP32, 128,
     VALID},
    {"capacity too small, E=256, N=128 K=8", 128, 8, 256, 0, 64, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT64,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, 0, 128, BAD_CAPACITY},
    {"bad id in a large call, E=256, N=3000 K=8", 3000, 8, 256, 0, 64, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, 0, 128, BAD_ID},
    {"N=0", 0, 8, 256, 0, 128, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_ZERO_PADDING, 0, 128, VALID},
    {"bad id, E=256", 300, 8, 256, 0, 512, 0, MOES_DTYPE_BF16,
     MOES_DTYPE_INT32, MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_ZERO_PADDING, MOES_SCALES_UE8M0, 128, BAD_ID},
    /* UE8M0 scales in the one-launch scatter, which checks all of them
     * in every block: rows and scales loaded at entry (a token a
     * block), the copy list at its limit of choices (57,344 scales), a
     * bad scale (two: the smaller index is named), and past its limit
     * of scales (128 a token), where the one-block routing checks. */
    {"E=256 fp8 H=7168 contiguous, UE8M0 scales, N=128 K=8", 128, 8, 256,
     0, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_UE8M0, 128, VALID},
    {"E=32 of 256 fp8 H=7168 contiguous, UE8M0 scales, N=1024 K=8", 1024,
     8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_LABEL_PADDING, MOES_SCALES_UE8M0, 128, VALID},
    {"bad UE8M0 scale, E=256 fp8 H=7168, N=128 K=8", 128, 8, 256, 0, 7168,
     0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_UE8M0, 128, BAD_SCALE},
    /* Errors where the one-launch scatter stages its blocks' rows in
     * shared memory (eight tokens of 7168 bytes a block): every block
     * leaves with the copies into its shared memory in flight, and must
     * wait for them first. */
    {"bad id, staged rows, E=32 of 256 fp8 H=7168, N=1024 K=8", 1024, 8,
     32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_FP32,
     128, BAD_ID},
    {"bad UE8M0 scale, staged rows, E=32 of 256 fp8 H=7168, N=1024 K=8",
     1024, 8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_UE8M0,
     128, BAD_SCALE},
    {"bad map entry, staged rows, E=32 of 256 fp8 H=7168, N=1024 K=8",
     1024, 8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_FP32,
     128, BAD_MAP},
    {"E=64 bf16 H=16384 masked with drops, UE8M0 scales, N=1000 K=8", 1000,
     8, 64, 0, 16384, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64,
     MOES_DTYPE_INT32, MOES_LAYOUT_MASKED, 1, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_UE8M0, 128, VALID},
    /* Zeroed padding after the one-launch scatter, which leaves its
     * routing in the workspace for the zeroing launch: EP8 decode's
     * shape with a map, grouped, and contiguous with the tail up to the
     * capacity. */
    {"E=32 of 256 fp8 H=7168 grouped A=64, fp32 scales, zero padding, "
     "N=1024 K=8", 1024, 8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3,
     MOES_DTYPE_INT32, MOES_DTYPE_INT64, MOES_LAYOUT_GROUPED, 64,
     MOES_SCATTER_ZERO_PADDING, MOES_SCALES_FP32, 128, VALID},
    {"E=256 bf16 H=512 contiguous, zero+label padding, N=128 K=8", 128, 8,
     256, 0, 512, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_ZERO_PADDING | MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"bad map entry, E=256", 300, 8, 256, 300, 512, 0, MOES_DTYPE_BF16,
     MOES_DTYPE_INT64, MOES_DTYPE_INT32, MOES_LAYOUT_GROUPED, 128, 0, 0, 128,
     BAD_MAP},
    /* The grid routing's two scans: 1024 tiles of an expert scanned by a
     * block (more than 32768 choices), and tables of 9000 and 20000
     * experts zeroed in a pass of their own, counted by any warp and
     * scanned in ranges of experts, a block each. */
    {"E=32 of 256 fp8 H=64 contiguous A=128, N=8192 K=8", 8192, 8, 32, 256,
     64, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_FP32, 64, VALID},
    {"E=20000 of 24000 bf16 H=32 masked with drops, N=3000 K=8", 3000, 8,
     20000, 24000, 32, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32,
     MOES_DTYPE_INT64, MOES_LAYOUT_MASKED, 1, MOES_SCATTER_ZERO_PADDING, 0,
     128, VALID},
    {"E=9000 bf16 H=16 grouped A=7, N=2000 K=6", 2000, 6, 9000, 0, 16, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_GROUPED, 7, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    /* Placed by the sort of the choices by expert (more than 4096
     * experts): two passes of 8 bits, DeepSeek-V3 rows with a map (and
     * 3,500 choices on each of the few hot experts), the smallest E
     * that sorts, and 157 tiles of the sort with masked drops. Where the
     * device launches cooperatively these take the one-launch routing
     * (sort_grid.cu), its blocks holding their first pass's ids; the
     * two after them have tiles of two rounds, which it loads in each
     * step instead, one with rows at the sorted positions (alignment 1)
     * and a map, one without. */
    {"E=65536 of 70000 fp8 H=7168 contiguous A=1, fp32 scales, N=4096 K=8",
     4096, 8, 65536, 70000, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT64,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 1, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_FP32, 128, VALID},
    {"E=4097 bf16 H=16 grouped A=3, N=3000 K=5", 3000, 5, 4097, 0, 16, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT64,
     MOES_LAYOUT_GROUPED, 3, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"E=5000 bf16 H=8 masked with drops, N=20000 K=8", 20000, 8, 5000, 0, 8,
     0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_MASKED, 1, MOES_SCATTER_ZERO_PADDING, 0, 128, VALID},
    {"E=6000 of 8000 bf16 H=8 grouped A=1, N=40000 K=8", 40000, 8, 6000,
     8000, 8, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_GROUPED, 1, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"E=4500 bf16 H=8 contiguous A=4, N=36000 K=8", 36000, 8, 4500, 0, 8, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT64,
     MOES_LAYOUT_CONTIGUOUS, 4, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"bad id, E=65536, N=4096 K=8", 4096, 8, 65536, 0, 16, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 1, 0, 0, 128, BAD_ID},
    /* Many experts and long columns: the table zeroed before, the
     * columns scanned a block each. */
    {"E=2048 bf16 H=16 contiguous A=1, N=8192 K=8", 8192, 8, 2048, 0, 16,
     0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 1, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    /* Tiles longer than the rounds a placing warp loads at once (157 and
     * 274 choices), each meeting every expert several times: the running
     * ranks carried from round to round. */
    {"E=64 of 96 bf16 H=8 masked with drops, N=40000 K=8", 40000, 8, 64,
     96, 8, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_MASKED, 1, 0, 0, 128, VALID},
    {"E=300 bf16 H=8 grouped A=5, N=70000 K=8", 70000, 8, 300, 0, 8, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT64,
     MOES_LAYOUT_GROUPED, 5, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    /* The grid path's copy placing its own choices (no map, 16-byte
     * rows): drops of the masked layout with DeepSeek-V3 rows, tokens
     * whose choices straddle two tiles of 64 (K = 7 and K = 20). */
    {"E=1024 fp8 H=7168 masked with drops, fp32 scales, N=2000 K=8", 2000,
     8, 1024, 0, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_MASKED, 1, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_FP32, 128, VALID},
    {"E=600 bf16 H=64 contiguous A=16, fp32 scales, N=3000 K=7", 3000, 7,
     600, 0, 64, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 16, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_FP32, 32, VALID},
    {"E=700 fp8 H=512 grouped A=3, N=1000 K=20", 1000, 20, 700, 0, 512, 16,
     MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT64,
     MOES_LAYOUT_GROUPED, 3, MOES_SCATTER_ZERO_PADDING, 0, 128, VALID},
    /* The map checked by the counting kernel (few experts, grid path). */
    {"bad map entry, E=32 of 256, N=8192 K=8", 8192, 8, 32, 256, 64, 0,
     MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_FP32, 64, BAD_MAP},
    {"bad map entry, E=20000 of 24000", 3000, 8, 20000, 24000, 32, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 1, 0, 0, 128, BAD_MAP},
    {"capacity too small, E=4096", 700, 8, 4096, 0, 64, 0, MOES_DTYPE_BF16,
     MOES_DTYPE_INT32, MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_ZERO_PADDING, 0, 128, BAD_CAPACITY},
    /* The index-only scatter in one cooperative launch (more than 8192
     * choices, at most 512 experts, a block a multiprocessor at most, of
     * at most 4096 choices): one expert (32 threads summing each column
     * of the table), 500 experts of 512 with K = 7 (one thread a column,
     * warps' runs that end inside a token), its error verdicts reached by
     * every block alike, EP8 prefill's 32768 tokens (about 2,000 choices
     * a block on an H200). N = 40000 above too; N = 70000 takes the grid
     * path. */
    {"E=32 of 256 fp8 H=8 contiguous A=64, N=32768 K=8", 32768, 8, 32, 256,
     8, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 64, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"E=1 bf16 H=8 contiguous A=1, N=5000 K=4", 5000, 4, 1, 0, 8, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT64,
     MOES_LAYOUT_CONTIGUOUS, 1, 0, 0, 128, VALID},
    {"E=500 of 512 bf16 H=8 grouped A=3, N=3001 K=7", 3001, 7, 500, 512, 8,
     0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_GROUPED, 3, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID},
    {"bad id, E=64, N=6000 K=8", 6000, 8, 64, 0, 8, 0, MOES_DTYPE_BF16,
     MOES_DTYPE_INT32, MOES_DTYPE_INT64, MOES_LAYOUT_CONTIGUOUS, 16, 0, 0,
     128, BAD_ID},
    {"capacity too small, E=64, N=4096 K=8", 4096, 8, 64, 0, 8, 0,
     MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, 0, 128, BAD_CAPACITY},
    /* The grid path's copy of 16-byte rows: DeepSeek-V3 rows on a
     * stride with a map (chunks of 256 vectors and a last one of 192),
     * and, placed inside the copy (no map), rows of 257 vectors (a last
     * chunk of one vector) with K = 20, tokens placed in up to 20 rows. */
    {"E=32 of 256 fp8 H=7168 contiguous, fp32 scales, strided, N=2048 K=8",
     2048, 8, 32, 256, 7168, 16, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32, 128, VALID},
    {"E=200 bf16 H=2056 grouped A=8, fp32 scales, N=1200 K=20", 1200, 20,
     200, 0, 2056, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT64,
     MOES_LAYOUT_GROUPED, 8, 0, MOES_SCALES_FP32, 128, VALID},
    /* EP8 prefill's map with UE8M0 scales, which each block checks for
     * its own tokens (the two bad ones below in different blocks): rows
     * of 7 KiB, more than twice as many tokens a block as rows fit, so
     * the cooperative routing is followed by the copy of 16-byte rows;
     * rows of 512 bytes, all of a block's local tokens staged, listed;
     * and a call with no map large enough to take the copy too. */
    {"E=32 of 256 fp8 H=7168 contiguous, UE8M0 scales, N=16384 K=8", 16384,
     8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_LABEL_PADDING, MOES_SCALES_UE8M0, 128, VALID},
    {"bad UE8M0 scale, E=32 of 256 fp8 H=512, N=16384 K=8", 16384, 8, 32,
     256, 512, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_UE8M0, 128, BAD_SCALE},
    {"E=256 bf16 H=256 grouped A=64, fp32 scales, N=20000 K=8", 20000, 8,
     256, 0, 256, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT32,
     MOES_LAYOUT_GROUPED, 64, MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32,
     128, VALID},
    /* The cooperative scatter copying its own tokens' rows, as many as
     * fit staged in shared memory once its barrier opens: DeepSeek-V3's
     * prefill (on an H200 26 of each block's 31 or 32 rows of 7 KiB, in
     * one bulk copy, the rest read from x) with UE8M0 scales, with one
     * bad scale and with a bad id (no block may write, and every block
     * waits for its staged rows before it exits); masked with drops,
     * rows on a stride (staged a row at a time). */
    {"E=256 fp8 H=7168 contiguous, UE8M0 scales, N=4096 K=8", 4096, 8, 256,
     0, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, MOES_SCATTER_LABEL_PADDING,
     MOES_SCALES_UE8M0, 128, VALID},
    {"bad UE8M0 scale, E=256 fp8 H=7168, N=4096 K=8", 4096, 8, 256, 0, 7168,
     0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_UE8M0, 128, BAD_SCALE},
    {"bad id, E=256 fp8 H=7168 grouped, fp32 scales, N=4096 K=8", 4096, 8,
     256, 0, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT64,
     MOES_DTYPE_INT32, MOES_LAYOUT_GROUPED, 128, 0, MOES_SCALES_FP32, 128,
     BAD_ID},
    /* With a map the cooperative scatter stages the first of its
     * tokens that a local expert takes, listed: EP8 prefill's shape
     * (more local tokens than fit), 4 local experts of 256 (about 15
     * local tokens a block, fewer than fit), a stride (a row a copy in
     * either case), and a bad map entry (every block waits for its
     * listed rows before it exits). */
    {"E=32 of 256 fp8 H=7168 contiguous, fp32 scales, N=16384 K=8", 16384,
     8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128,
     MOES_SCATTER_LABEL_PADDING, MOES_SCALES_FP32, 128, VALID},
    {"E=4 of 256 bf16 H=4096 contiguous A=1, strided, N=16384 K=8",
     16384, 8, 4, 256, 4096, 8, MOES_DTYPE_BF16, MOES_DTYPE_INT64,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 1, 0, 0, 128, VALID},
    {"bad map entry, listed staged rows, E=32 of 256 fp8 H=7168, N=8192 K=8",
     8192, 8, 32, 256, 7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32,
     MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128, 0, MOES_SCALES_FP32,
     128, BAD_MAP},
    {"E=64 bf16 H=2048 masked with drops, fp32 scales, strided, N=3000 K=6",
     3000, 6, 64, 0, 2048, 8, MOES_DTYPE_BF16, MOES_DTYPE_INT64,
     MOES_DTYPE_INT64, MOES_LAYOUT_MASKED, 1, 0, MOES_SCALES_FP32, 128,
     VALID},
    {"bad out_index in the gather", 300, 8, 256, 0, 256, 0, MOES_DTYPE_BF16,
     MOES_DTYPE_INT32, MOES_DTYPE_INT32, MOES_LAYOUT_CONTIGUOUS, 128, 0, 0,
     128, BAD_OUT_INDEX},
    /* Few enough entries (at most 2048) for the gather's blocks to check
     * them all themselves, with no check kernel: every block reaches the
     * verdict, block 0 writes the record. */
    {"bad out_index in a self-checking gather, N=128 K=8", 128, 8, 256, 0,
     256, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, 0, 128, BAD_OUT_INDEX},
    {"bad out_index in a self-checking gather, int64, N=250 K=8", 250, 8,
     256, 0, 512, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT64, MOES_DTYPE_INT64,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, 0, 128, BAD_OUT_INDEX},
    {"bad out_index in a self-checking gather, rows of 100, N=64 K=6", 64,
     6, 32, 0, 100, 0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 8, 0, 0, 128, BAD_OUT_INDEX},
    /* The same in a gather of more items than the small calls' shape
     * (the check's 94 blocks: the two bad entries in different ones). */
    {"bad out_index in a large gather, N=3000 K=8", 3000, 8, 256, 0, 2048,
     0, MOES_DTYPE_BF16, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
     MOES_LAYOUT_CONTIGUOUS, 128, 0, 0, 128, BAD_OUT_INDEX},
};

/* Past 2^31 elements: out is 2.5 GB of fp8, y 5 GB of bf16, so every row
 * offset must be formed in 64 bits. Too heavy for the sanitizers: run on
 * its own ("sanitize_cases large"). */
static const scenario large_scenario = {
    "64-bit offsets: out 2.5 GB fp8, y 5 GB bf16, H=7168", 40000, 8, 256, 0,
    7168, 0, MOES_DTYPE_FP8_E4M3, MOES_DTYPE_INT32, MOES_DTYPE_INT32,
    MOES_LAYOUT_CONTIGUOUS, 128, MOES_SCATTER_LABEL_PADDING, 0, 128, VALID};

static uint64_t rng_state;

static uint64_t rnd(void)
{
    return test_xorshift(&rng_state);
}

static void *xmalloc(int64_t bytes)
{
    void *p = malloc(bytes > 0 ? (size_t)bytes : 1);
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        exit(2);
    }
    return p;
}

static void random_bytes(void *p, int64_t bytes)
{
    unsigned char *b = p;
    int64_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t v = rnd();
        memcpy(b + i, &v, 8);
    }
    for (; i < bytes; i++)
        b[i] = (unsigned char)(rnd() >> 24);
}

static void store_index(void *base, int dtype, int64_t i, int64_t v)
{
    if (dtype == MOES_DTYPE_INT32)
        ((int32_t *)base)[i] = (int32_t)v;
    else
        ((int64_t *)base)[i] = v;
}

/* The buffers of one side. Host pointers on the CPU, device on CUDA. */
enum { B_IDS, B_MAP, B_X, B_XS, B_Y, B_W, B_GIDX, /* inputs */
       B_COUNT, B_OUT, B_OUTS, B_OIDX, B_COUNTS, B_START, B_END, B_MIDX,
       B_MASKED, B_DROP, B_GOUT,
       /* the index-only scatter's */
       B_IO_OIDX, B_IO_END, B_IO_MIDX, B_IO_SOURCE, B_N };
enum { CALLS = 4 }; /* count, scatter, gather, index-only scatter */
#define FIRST_OUTPUT B_COUNT

static const char *const buffer_names[B_N] = {
    "ids", "map", "x", "x_scales", "y", "weights", "gather out_index",
    "count counts", "out", "out_scales", "out_index", "counts",
    "expert_start", "expert_end", "m_indices", "masked_m", "n_dropped",
    "gather out", "index-only out_index", "index-only expert_end",
    "index-only m_indices", "index-only row_source"};

typedef struct side {
    moes_context *ctx;
    int on_device;
    void *buf[B_N];
    int status[CALLS];
    char message[CALLS][512];
} side;

static int sync_status(side *s, int st)
{
    if (st == MOES_OK && s->on_device)
        st = moes_synchronize(s->ctx);
    return st;
}

/* Runs count, scatter and gather of the scenario on one side. */
static int run_side(side *s, const scenario *sc, void *const host[B_N],
                    const int64_t bytes[B_N], int64_t capacity,
                    int64_t out_rows)
{
    moes_routing r;
    moes_scatter_args a;
    moes_gather_args g;
    for (int i = 0; i < B_N; i++) {
        s->buf[i] = NULL;
        if (!bytes[i])
            continue;
        if (s->on_device) {
            if (moes_malloc(s->ctx, &s->buf[i], bytes[i]) != MOES_OK)
                return 0;
            if (i < FIRST_OUTPUT)
                moes_copy_to_backend(s->ctx, s->buf[i], host[i], bytes[i]);
            else
                moes_fill(s->ctx, s->buf[i], CANARY, bytes[i]);
        } else {
            s->buf[i] = xmalloc(bytes[i]);
            if (i < FIRST_OUTPUT)
                memcpy(s->buf[i], host[i], (size_t)bytes[i]);
            else
                memset(s->buf[i], CANARY, (size_t)bytes[i]);
        }
    }

    moes_routing_init(&r);
    r.n_tokens = sc->n;
    r.top_k = sc->k;
    r.ids = s->buf[B_IDS];
    r.ids_dtype = sc->ids_dtype;
    r.expert_map = s->buf[B_MAP];
    r.n_experts_global = sc->e_global ? sc->e_global : sc->e;
    r.n_experts = sc->e;
    s->status[0] = sync_status(s, moes_count(s->ctx, &r, s->buf[B_COUNT],
                                             sc->index_dtype));
    snprintf(s->message[0], sizeof s->message[0], "%s",
             s->status[0] ? moes_last_error(s->ctx) : "");

    moes_scatter_args_init(&a);
    a.layout = sc->layout;
    a.alignment = sc->alignment;
    a.capacity = capacity;
    a.flags = sc->flags;
    a.x = s->buf[B_X];
    a.x_dtype = sc->x_dtype;
    a.hidden = sc->h;
    a.x_stride = sc->h + sc->x_pad;
    a.out = s->buf[B_OUT];
    a.out_stride = sc->h + sc->x_pad;
    if (sc->scales) {
        a.x_scales = s->buf[B_XS];
        a.scale_block = sc->block;
        a.out_scales = s->buf[B_OUTS];
        a.out_scales_format = sc->scales;
    }
    a.index_dtype = sc->index_dtype;
    a.out_index = s->buf[B_OIDX];
    a.counts = s->buf[B_COUNTS];
    a.expert_start = s->buf[B_START];
    a.expert_end = s->buf[B_END];
    a.m_indices = s->buf[B_MIDX];
    a.masked_m = s->buf[B_MASKED];
    a.n_dropped = s->buf[B_DROP];
    s->status[1] = sync_status(s, moes_scatter(s->ctx, &r, &a));
    snprintf(s->message[1], sizeof s->message[1], "%s",
             s->status[1] ? moes_last_error(s->ctx) : "");

    moes_gather_args_init(&g);
    g.n_tokens = sc->n;
    g.top_k = sc->k;
    g.hidden = sc->h;
    g.y = s->buf[B_Y];
    g.y_dtype = MOES_DTYPE_BF16;
    g.y_rows = out_rows;
    g.out_index = s->buf[B_GIDX];
    g.index_dtype = sc->index_dtype;
    g.weights = s->buf[B_W];
    g.out = s->buf[B_GOUT];
    g.out_dtype = MOES_DTYPE_BF16;
    s->status[2] = sync_status(s, moes_gather(s->ctx, &g));
    snprintf(s->message[2], sizeof s->message[2], "%s",
             s->status[2] ? moes_last_error(s->ctx) : "");

    /* The same routing with no rows: the indices alone, row_source padded
     * with N*K and the ends of the real rows (zeroed padding needs rows). */
    moes_scatter_args_init(&a);
    a.layout = sc->layout;
    a.alignment = sc->alignment;
    a.capacity = capacity;
    a.flags = (sc->flags & ~MOES_SCATTER_ZERO_PADDING) |
              MOES_SCATTER_UNPADDED_END;
    a.index_dtype = sc->index_dtype;
    a.out_index = s->buf[B_IO_OIDX];
    a.expert_end = s->buf[B_IO_END];
    a.m_indices = s->buf[B_IO_MIDX];
    a.row_source = s->buf[B_IO_SOURCE];
    a.row_source_pad = sc->n * sc->k;
    s->status[3] = sync_status(s, moes_scatter(s->ctx, &r, &a));
    snprintf(s->message[3], sizeof s->message[3], "%s",
             s->status[3] ? moes_last_error(s->ctx) : "");
    return 1;
}

static void free_side(side *s)
{
    for (int i = 0; i < B_N; i++) {
        if (s->on_device)
            moes_free(s->ctx, s->buf[i]);
        else
            free(s->buf[i]);
        s->buf[i] = NULL;
    }
}

static int run_scenario(moes_context *cpu_ctx, moes_context *cuda_ctx,
                        const scenario *sc)
{
    const int64_t e_global = sc->e_global ? sc->e_global : sc->e;
    const int64_t choices = sc->n * sc->k;
    const int64_t stride = sc->h + sc->x_pad;
    size_t x_elem = 1, ie = sc->index_dtype == MOES_DTYPE_INT32 ? 4 : 8;
    size_t id_elem = sc->ids_dtype == MOES_DTYPE_INT32 ? 4 : 8;
    int64_t capacity, out_rows, n_scales = 0, scale_cols = 0;
    int64_t bytes[B_N] = {0};
    void *host[B_N] = {0};
    side cpu = {cpu_ctx, 0, {0}, {0}, {{0}}};
    side gpu = {cuda_ctx, 1, {0}, {0}, {{0}}};
    int failed = 0;

    moes_dtype_size(sc->x_dtype, &x_elem);
    moes_scatter_capacity(NULL, sc->layout, sc->n, sc->k, sc->e,
                          sc->alignment, &capacity);
    if (sc->layout == MOES_LAYOUT_MASKED)
        capacity = choices / sc->e / 2 + 1; /* some experts drop */
    if (sc->fault == BAD_CAPACITY)
        capacity = 1;
    out_rows = sc->layout == MOES_LAYOUT_MASKED ? capacity * sc->e : capacity;
    if (sc->scales) {
        n_scales = (sc->h + sc->block - 1) / sc->block;
        scale_cols = sc->scales == MOES_SCALES_FP32 ? n_scales
                                                    : (n_scales + 3) / 4;
    }

    bytes[B_IDS] = choices * (int64_t)id_elem;
    bytes[B_MAP] = sc->e_global ? e_global * 4 : 0;
    bytes[B_X] = sc->n * stride * (int64_t)x_elem;
    bytes[B_XS] = sc->n * n_scales * 4;
    bytes[B_Y] = out_rows * sc->h * 2;
    bytes[B_W] = choices * 4;
    bytes[B_GIDX] = choices * (int64_t)ie;
    bytes[B_COUNT] = sc->e * (int64_t)ie;
    bytes[B_OUT] = out_rows * stride * (int64_t)x_elem;
    bytes[B_OUTS] = out_rows * scale_cols * 4;
    bytes[B_OIDX] = choices * (int64_t)ie;
    bytes[B_COUNTS] = sc->e * (int64_t)ie;
    bytes[B_START] = sc->e * (int64_t)ie;
    bytes[B_END] = sc->e * (int64_t)ie;
    bytes[B_MIDX] =
        sc->layout == MOES_LAYOUT_MASKED ? 0 : out_rows * (int64_t)ie;
    bytes[B_MASKED] =
        sc->layout == MOES_LAYOUT_MASKED ? sc->e * (int64_t)ie : 0;
    bytes[B_DROP] = sc->layout == MOES_LAYOUT_MASKED ? 8 : 0;
    bytes[B_GOUT] = sc->n * sc->h * 2;
    bytes[B_IO_OIDX] = bytes[B_OIDX];
    bytes[B_IO_END] = bytes[B_END];
    bytes[B_IO_MIDX] = bytes[B_MIDX];
    bytes[B_IO_SOURCE] = out_rows * (int64_t)ie;

    for (int i = 0; i < FIRST_OUTPUT; i++) {
        host[i] = xmalloc(bytes[i]);
        random_bytes(host[i], bytes[i]);
    }
    for (int64_t c = 0; c < choices; c++) {
        int64_t id =
            rnd() % 20 == 0 ? -1 : (int64_t)(rnd() % (uint64_t)e_global);
        /* Skewed: half the choices on a few experts, so blocks overflow
         * their alignment and masked experts drop. */
        if (rnd() % 2 == 0)
            id = (int64_t)(rnd() % (e_global < 7 ? (uint64_t)e_global : 7));
        store_index(host[B_IDS], sc->ids_dtype, c, id);
        store_index(host[B_GIDX], sc->index_dtype, c,
                    rnd() % 10 == 0 ? -1
                                    : (int64_t)(rnd() % (uint64_t)out_rows));
        ((float *)host[B_W])[c] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    }
    for (int64_t i = 0; sc->e_global && i < e_global; i++)
        ((int32_t *)host[B_MAP])[i] =
            rnd() % 8 == 0 ? -1 : (int32_t)(rnd() % (uint64_t)sc->e);
    /* UE8M0 holds powers of two only (2^-30 .. 2^30 here): anything else
     * is a bad scale. */
    for (int64_t i = 0; i < sc->n * n_scales; i++) {
        float *f = (float *)host[B_XS] + i;
        if (sc->scales == MOES_SCALES_UE8M0) {
            uint32_t bits = (uint32_t)(97 + rnd() % 61) << 23;
            memcpy(f, &bits, 4);
        } else {
            *f = (float)(rnd() % 1000 + 1) / 64.0f;
        }
    }
    if (sc->fault == BAD_SCALE && sc->n * n_scales > 10) {
        ((float *)host[B_XS])[sc->n * n_scales / 2] = 3.0f;
        ((float *)host[B_XS])[sc->n * n_scales / 3] = -0.5f;
    }
    if (sc->fault == BAD_ID && choices > 10) {
        store_index(host[B_IDS], sc->ids_dtype, choices / 2, e_global + 5);
        store_index(host[B_IDS], sc->ids_dtype, choices / 3, -7);
    }
    if (sc->fault == BAD_MAP) {
        ((int32_t *)host[B_MAP])[e_global - 1] = (int32_t)sc->e + 3;
        ((int32_t *)host[B_MAP])[e_global / 2] = -2;
    }
    if (sc->fault == BAD_OUT_INDEX && choices > 10) {
        store_index(host[B_GIDX], sc->index_dtype, choices - 1, out_rows);
        store_index(host[B_GIDX], sc->index_dtype, choices / 4, -3);
    }

    if (!run_side(&cpu, sc, host, bytes, capacity, out_rows) ||
        !run_side(&gpu, sc, host, bytes, capacity, out_rows)) {
        printf("FAIL %s: cannot allocate\n", sc->name);
        failed = 1;
    }
    for (int call = 0; !failed && call < CALLS; call++) {
        if (cpu.status[call] != gpu.status[call] ||
            strcmp(cpu.message[call], gpu.message[call]) != 0) {
            printf("FAIL %s: call %d: CPU %s \"%s\", CUDA %s \"%s\"\n",
                   sc->name, call, moes_strerror(cpu.status[call]),
                   cpu.message[call], moes_strerror(gpu.status[call]),
                   gpu.message[call]);
            failed = 1;
        }
    }
    for (int i = FIRST_OUTPUT; !failed && i < B_N; i++) {
        unsigned char *got;
        if (!bytes[i])
            continue;
        got = xmalloc(bytes[i]);
        moes_copy_to_host(cuda_ctx, got, gpu.buf[i], bytes[i]);
        for (int64_t b = 0; b < bytes[i]; b++) {
            if (got[b] != ((unsigned char *)cpu.buf[i])[b]) {
                printf("FAIL %s: %s differs at byte %lld: CPU 0x%02x, CUDA "
                       "0x%02x\n", sc->name, buffer_names[i], (long long)b,
                       ((unsigned char *)cpu.buf[i])[b], got[b]);
                failed = 1;
                break;
            }
        }
        free(got);
    }
    if (!failed)
        printf("ok   %s (count: %s, scatter: %s, gather: %s, index-only: "
               "%s)\n", sc->name, moes_strerror(cpu.status[0]),
               moes_strerror(cpu.status[1]), moes_strerror(cpu.status[2]),
               moes_strerror(cpu.status[3]));
    free_side(&cpu);
    free_side(&gpu);
    for (int i = 0; i < FIRST_OUTPUT; i++)
        free(host[i]);
    return failed;
}

int main(int argc, char **argv)
{
    const int large = argc > 1 && strcmp(argv[1], "large") == 0;
    moes_context_options opts;
    moes_context *cpu = NULL, *cuda = NULL;
    const int n = (int)(sizeof scenarios / sizeof scenarios[0]);
    int failed = 0;
    void *poison = NULL;

    unsetenv("MOES_BACKEND");
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CPU;
    if (moes_context_create(&cpu, &opts) != MOES_OK)
        return 2;
    opts.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&cuda, &opts) != MOES_OK) {
        fprintf(stderr, "sanitize_cases: %s\n", moes_last_error(NULL));
        return 2;
    }
    /* Memory the workspace will likely reuse: poisoned, then freed. */
    if (moes_malloc(cuda, &poison, (int64_t)64 << 20) == MOES_OK) {
        moes_fill(cuda, poison, CANARY, (int64_t)64 << 20);
        moes_synchronize(cuda);
        moes_free(cuda, poison);
    }
    rng_state = 0x9E3779B97F4A7C15ull;
    if (large)
        failed += run_scenario(cpu, cuda, &large_scenario);
    else
        for (int i = 0; i < n; i++)
            failed += run_scenario(cpu, cuda, &scenarios[i]);
    printf("sanitize_cases: %d scenarios, %d failed\n", large ? 1 : n,
           failed);
    moes_context_destroy(cuda);
    moes_context_destroy(cpu);
    return failed ? 1 : 0;
}
