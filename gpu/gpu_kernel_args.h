/* SPDX-License-Identifier: MIT */
/*
 * gpu_kernel_args.h - what the host code hands to the kernels: one struct
 * per operation, passed by value as the kernel's only parameter, and the
 * device-side record of data errors. Plain C, compiled by gcc (the host
 * side, which fills the structs) and by nvcc (the kernels), so that the
 * two sides cannot disagree on a field's place. Only fixed-size integers
 * and pointers appear here: both compilers lay them out the same way on
 * x86-64 and on the device.
 */
#ifndef MOES_GPU_KERNEL_ARGS_H
#define MOES_GPU_KERNEL_ARGS_H

#include <stdint.h>

#include "data_error.h"
#include "numerics.h"

/* The context's device-side error state, in one small allocation. */
typedef struct gpu_device_state {
    /* The first data error since the last synchronize: sticky. Every kernel
     * returns at once while its status is set, so that nothing is written
     * after an error, in this call or in later ones, until the host has
     * been told. */
    moes_data_error record;
    /* The smallest error key of the call in flight, ~0 when none:
     * rank << 56 | flat index (data_error.h ranks). Reset by the kernel
     * that turns it into the record, at the end of every validation. */
    unsigned long long key;
    /* Rows the last contiguous/grouped routing needs (saturated at
     * INT64_MAX), and the (t, k) a masked scatter drops. */
    int64_t rows_needed;
    int64_t dropped;
    /* Blocks of the checking kernel in flight that have finished: the last
     * one turns the key into the record and sets this back to 0. */
    unsigned int blocks_done;
    /* The expert ranges of moes_scan_ranges handed out so far (in the
     * order its blocks start): set to 0 by the counting kernel before. */
    unsigned int scan_ticket;
    /* The grid-wide barriers of the cooperative kernels
     * (grid_barrier.cuh), even ones and odd ones: a word's top bit flips
     * each time a barrier on it opens; the low bits are the same before
     * and after. */
    unsigned int grid_arrived[2];
} gpu_device_state;

/* Launch shapes shared by the host code, which sizes the grids, and the
 * kernels, which are written for them.
 *
 * The gather and the row copy give each warp a (token, chunk of the row)
 * item: the warp loads the token's out_index entries (and weights) one
 * per lane, keeps the valid ones in registers, and each lane then moves
 * a few vectors of the chunk (16 bytes where the alignment allows) for
 * every valid row, so that each thread has that many independent loads
 * in flight whatever the number of valid k, and no block-wide barrier or
 * shared memory is needed. A chunk is 32 vectors per vector a lane moves;
 * blocks have GPU_ROW_THREADS threads. */
#define GPU_ROW_PER_THREAD 2      /* row copy: vectors per lane and row  */
/* The grid path's copy of rows that move in 16-byte vectors takes 8 per
 * lane (a chunk of 4 KiB) in a kernel of its own, without the label
 * blocks of the one-block path: 3-7% faster at prefill on an H200
 * (bench/NOTES.md). Decode keeps 2, so that its few tokens still spread
 * over many warps. */
#define GPU_ROW_WIDE_PER_THREAD 8
#define GPU_ROW_THREADS 256
/* The grid path places the choices of 16-byte rows inside the copy
 * (moes_place_copy_rows) when K is at most a warp, there is no expert
 * map, the tiles hold at most GPU_PLACE_IN_COPY_MAX_TILE choices and each
 * warp of the copy's grid has at most GPU_PLACE_IN_COPY_MAX_ITEMS items.
 * Each copying warp counts its token's choices' ranks over the part of
 * the tile before the token (a ballot per choice and 32 choices) and
 * places an item before it copies it, so the placement's loads sit on
 * the item's path. On an H200 (bench/NOTES.md, v14), DeepSeek-V3 over 256
 * experts: 2048 tokens 60.6 -> 51.9 us, 4096 99.6 -> 91.1 (tiles of 64),
 * 16384 (four items a warp) 354 -> 347; 4096 tokens over 16384 experts
 * (tiles of 128) 146.8 -> 138.1. Lost: 4096 tokens over 65536 experts
 * (tiles of 512) 164 -> 173, EP8 prefill with the map, where most tokens
 * have one row to write: 16384 tokens 78.3 -> 80.6, 32768 (eight items a
 * warp) 138 -> 160. */
#define GPU_PLACE_IN_COPY_MAX_TILE 128
#define GPU_PLACE_IN_COPY_MAX_ITEMS 4
#define GPU_ROW_BLOCKS_PER_SM 8   /* grid cap, in blocks per multiprocessor */
#define GPU_GATHER_VEC 8          /* elements per vector of the gather   */
/* The gather's shape, measured on an H200 (bench/NOTES.md): 4 vectors
 * per lane (a chunk of 1024 elements), the loads of 2 valid rows in
 * flight together, and registers for 2 blocks a multiprocessor (up to
 * 128 a thread, which ptxas needs for that without spilling). Smaller
 * shapes with more blocks a multiprocessor kept fewer bytes in flight
 * and were slower at every size but the smallest; register caps that
 * made ptxas spill were slower everywhere. */
#define GPU_GATHER_PER_THREAD 4
#define GPU_GATHER_ROW_BATCH 2
#define GPU_GATHER_MIN_BLOCKS 2
/* A call of 16-byte vectors with fewer items of that shape than the
 * gather's warps that fit at once (decode sizes) takes kernels of
 * half-size items with twice the rows in flight: the same bytes a warp,
 * on twice the warps. On an H200, 9.6 -> 8.5 us a graph replay at 128
 * tokens; a loss wherever the items already fill the GPU
 * (bench/NOTES.md). */
#define GPU_GATHER_SMALL_PER_THREAD 2
#define GPU_GATHER_SMALL_ROW_BATCH 4
#define GPU_CHECK_THREADS 256     /* moes_check_out_index                 */
/* Indices a thread of a self-check loads at once (kernel_common.cuh). */
#define GPU_SELF_CHECK_LOADS 8
/* A gather with at most this many out_index entries (a batch for each
 * thread of a block) has no check kernel: every block of the gather
 * checks them all (gather.cu). */
#define GPU_GATHER_SELF_CHECK_ENTRIES (GPU_SELF_CHECK_LOADS * GPU_ROW_THREADS)
#define GPU_DISTINCT_THREADS 128  /* moes_distinct_rows: a token a thread */
/* Up to this many choices (and map entries) moes_distinct_rows checks
 * them in every block instead of after the routing kernels. */
#define GPU_DISTINCT_SELF_CHECK_MAX 8192

/* The scatter of a small call in one launch (scatter_small.cu): every
 * block routes all the choices itself, so no block waits for another.
 * Its limits, checked by the host before it picks that kernel: the
 * choices and map entries each block reads, the experts of its shared
 * tables, and the choices of the tokens one block places and copies. */
#define GPU_SMALL_SCATTER_THREADS 512
#define GPU_SMALL_SCATTER_CHOICES 8192
#define GPU_SMALL_SCATTER_EXPERTS 512
#define GPU_SMALL_SCATTER_MAP 8192
#define GPU_SMALL_SCATTER_OWN 512
/* UE8M0 scales each block of it checks, all of them (every block must
 * reach the same verdict): EP8 decode's 1024 tokens of 56 fit. */
#define GPU_SMALL_SCATTER_SCALES 65536
/* A block of the one-launch scatter whose rows are too many to load into
 * registers at entry asks the L2 for them at entry instead, so that they
 * arrive while it routes, when they are at most this many bytes. On an
 * H200: Qwen3 1024 tokens 19.3 -> 18.2 us, DeepSeek-V3 1024 with UE8M0
 * 34.5 -> 33.1; but Mixtral 4096 (254 KB a block) 36.2 -> 37.5, its
 * 128 KB blocks at 2048 tokens unchanged (bench/NOTES.md, v21). */
#define GPU_SMALL_SCATTER_PREFETCH_BYTES 65536
/* 16-byte vectors of a block's own token rows that each thread of the
 * one-launch scatter loads into registers at entry, beside the ids, when
 * they all fit: a block of one or two DeepSeek-V3 tokens. On an H200 this
 * took decode 128 from 8.8 to 8.2 us a graph replay; with eight a thread,
 * EP8 decode (eight tokens a block, a third of them with no local expert)
 * went from 14.4 to 15.0 us, so larger blocks keep the copy list. */
#define GPU_SMALL_SCATTER_PRELOAD 2

/* Whether a block of the one-launch scatter with n_tokens tokens, whose
 * rows copy 16 bytes at a time (row_vectors of them a row), holds their
 * rows, and their fp32 scale words where there are some (n_scale_cols a
 * row, else 0), in registers from entry: the kernel decides by it for
 * each block, and the host by it whether the launch stages rows in shared
 * memory. The host's limits on the kernel (n_tokens at most
 * GPU_SMALL_SCATTER_OWN, row_vectors and n_scale_cols at most INT32_MAX
 * over it) keep the products in 32 bits. */
MOES_HD int gpu_small_scatter_preloads(uint32_t n_tokens, uint32_t row_vectors,
                                       uint32_t n_scale_cols)
{
    return n_tokens * row_vectors <=
               (uint32_t)(GPU_SMALL_SCATTER_THREADS *
                          GPU_SMALL_SCATTER_PRELOAD) &&
           n_tokens * n_scale_cols <= (uint32_t)GPU_SMALL_SCATTER_THREADS;
}

/* The routing of a larger scatter in one cooperative launch
 * (scatter_grid.cu; the whole call when it is index-only): a block a
 * multiprocessor at most, all resident at once, each counting only its
 * own tokens' choices (at most GPU_GRID_SCATTER_OWN) and meeting the
 * others at one grid-wide barrier. Its shared tables hold
 * GPU_GRID_SCATTER_EXPERTS experts and GPU_GRID_SCATTER_MAP map entries. */
#define GPU_GRID_SCATTER_THREADS 512
#define GPU_GRID_SCATTER_OWN 4096
#define GPU_GRID_SCATTER_EXPERTS 512
#define GPU_GRID_SCATTER_MAP 8192
/* Its blocks' table, in the workspace's tile table: an error key of 8
 * bytes a block (an even number of them, so that the counts start on 16
 * bytes), then each block's count per expert in 16 bits (a block has at
 * most GPU_GRID_SCATTER_OWN choices), n_experts a block. */
#define GPU_GRID_TABLE_KEYS(blocks) (((blocks) + 1) / 2 * 2)
#define GPU_GRID_TABLE_BYTES(blocks, experts)                               \
    (GPU_GRID_TABLE_KEYS(blocks) * 8 + (blocks) * 2 * (experts))
/* The most tokens a block of the one-launch or cooperative scatter
 * takes: block b takes tokens [b n / blocks, (b + 1) n / blocks). The
 * host sizes its tables and staging with it, and the cooperative kernel
 * finds the list after the mask with it. */
MOES_HD int64_t gpu_tokens_per_block(int64_t n_tokens, int64_t blocks)
{
    return (n_tokens + blocks - 1) / blocks;
}

/* The cooperative scatter's dynamic shared memory: stage_tokens staged
 * rows of row_bytes; with an expert map, after them a bit a token of the
 * block (set for the staged ones) and the staged tokens' offsets from
 * the block's first, in 16 bits: with a map a block stages the first of
 * its tokens that a local expert takes, not its first tokens. */
MOES_HD int64_t gpu_grid_stage_mask_words(int64_t tokens_per_block)
{
    return (tokens_per_block + 31) / 32;
}

MOES_HD int64_t gpu_grid_stage_bytes(int64_t stage_tokens, int64_t row_bytes,
                                     int map, int64_t tokens_per_block)
{
    return stage_tokens * row_bytes +
           (map ? 4 * gpu_grid_stage_mask_words(tokens_per_block) +
                      2 * stage_tokens
                : 0);
}

/* The grid routing's prefix sums (expert_scan.cu). With few experts, or
 * columns of more than GPU_SCAN_RANGE_MAX_TILES tiles,
 * moes_scan_routing: a block of GPU_SCAN_BLOCK threads scans each
 * expert's column and the last block to finish scans the experts, one a
 * thread. With more than
 * GPU_SCAN_RANGE_EXPERTS experts (and shorter columns),
 * moes_scan_ranges: the experts are cut into at most GPU_SCAN_MAX_RANGES
 * ranges, one per block of GPU_SCAN_RANGE_BLOCK threads (as many as fit
 * at once, GPU_SCAN_RANGE_BLOCKS_PER_SM a multiprocessor); a block scans
 * its range's columns as one flat array, then its experts, up to
 * GPU_SCAN_EXPERT_RUN a thread a round, and takes the rows of the ranges
 * before it from the sums they publish (GPU_SCAN_STATUS_WORDS words each
 * in the workspace), so that no block walks all the experts. */
#define GPU_SCAN_RANGE_MAX_TILES 512
#define GPU_SCAN_BLOCK 256
#define GPU_SCAN_EXPERT_RUN 8
#define GPU_SCAN_RANGE_EXPERTS 1024
#define GPU_SCAN_RANGE_BLOCK 512
#define GPU_SCAN_RANGE_BLOCKS_PER_SM 2
#define GPU_SCAN_MAX_RANGES 1024
#define GPU_SCAN_STATUS_WORDS 3

/* The placement of calls with many experts (sort_route.cu): more than
 * GPU_SORT_MIN_EXPERTS experts and at most GPU_SORT_MAX_CHOICES choices
 * (its arrays take 17 bytes a choice of workspace; larger calls keep the
 * tiles) take a radix sort of the choices by expert, GPU_SORT_DIGIT_BITS
 * bits a pass, in blocks of GPU_SORT_THREADS threads (one a digit), each
 * taking a tile of whole rounds of GPU_SORT_ROUND elements: one round
 * each while that makes at most GPU_SORT_MAX_BLOCKS blocks, so that the
 * table every block sums stays small. The routing before it scans the
 * experts in ranges of GPU_SORT_SCAN_RANGE_EXPERTS at least. On an
 * H200, DeepSeek-V3 rows, 4096 tokens (bench/NOTES.md, v19): the scatter
 * took 123 us sorted against 119 with tiles at 4096 experts, 128 against
 * 134 at 8192, 129 against 139 at 16384, 133 against 165 at 65536. */
#define GPU_SORT_MIN_EXPERTS 4096
#define GPU_SORT_MAX_CHOICES (1 << 24)
#define GPU_SORT_DIGIT_BITS 8
#define GPU_SORT_THREADS 256
#define GPU_SORT_ROUND 1024
#define GPU_SORT_MAX_BLOCKS 256
#define GPU_SORT_SCAN_RANGE_EXPERTS 1024
/* The sort's routing in one cooperative launch (sort_grid.cu): blocks of
 * GPU_SORT_THREADS, this many a multiprocessor, all resident at once. */
#define GPU_SORT_GRID_BLOCKS_PER_SM 2

/* Rounds of 32 choices a counting warp loads together. */
#define GPU_COUNT_ROUNDS 4

#define GPU_ERROR_KEY_NONE (~0ull)
#define GPU_ERROR_KEY(rank, index) \
    (((unsigned long long)(rank) << 56) | (unsigned long long)(index))

/* Which operation a validation belongs to, for the record's fields. */
#define GPU_OP_ROUTE 0  /* count and scatter: map, ids, capacity */
#define GPU_OP_GATHER 1 /* gather: out_index                     */

/* Count and scatter. The route fields are used by both; the rest only by
 * the scatter. Byte strides are precomputed by the host (64-bit). */
typedef struct gpu_scatter_args {
    gpu_device_state *state;

    /* Routing. */
    const void *ids;
    int64_t ids_stride;          /* elements                              */
    int64_t ids_elem;            /* 4 or 8                                */
    const int32_t *map;          /* NULL without a map                    */
    int64_t n_global;            /* E_global                              */
    int64_t n_experts;           /* E                                     */
    int64_t n_tokens;            /* N                                     */
    int64_t top_k;               /* K                                     */
    int64_t n_choices;           /* N * K                                 */

    /* The tiles of choices, which keep each expert's rows in t*K + k
     * order without an atomic deciding a row (docs/design-rules.md, What
     * the operations mean), and the workspace arrays. tile_table is
     * [E][tiles]: counts per (expert, tile), then each tile's first rank
     * within the expert. */
    int64_t tiles;
    int64_t tile_size;
    int64_t *tile_table;
    int64_t *counts;             /* [E] totals                            */
    int64_t *start;              /* [E] first row of each expert          */
    int64_t scan_ranges;         /* moes_scan_ranges' expert ranges (its
                                  * blocks); 0: moes_scan_routing instead */
    int64_t *range_status;       /* [GPU_SCAN_MAX_RANGES]
                                  * [GPU_SCAN_STATUS_WORDS] in the
                                  * workspace: flag, rows of the range,
                                  * rows of it and those before          */
    int64_t zero_table;          /* 1: moes_prepare_route zeroes the tile
                                  * table (many experts: a warp zeroing
                                  * its own column would store to every
                                  * tiles-th word, 32 sectors a store)
                                  * and any counting warp adds to it     */

    /* The sort that places the choices of calls with many experts
     * (sort_route.cu; NULL sort_first: the tiles place them). Pass p
     * reads sort_keys/sort_choices [(p - 1) % 2] (the choices themselves
     * for p = 0) and writes [p % 2]. */
    int32_t *sort_keys[2];       /* [C] local experts                     */
    int32_t *sort_choices[2];    /* [C] flat indices t * K + k            */
    int32_t *sort_first;         /* [E] each expert's first position      */
    int32_t *sort_hist;          /* [sort_passes][sort_blocks][digits]
                                  * counts, zeroed by moes_prepare_route:
                                  * the first pass's added by the routing's
                                  * count, each next pass's by the pass
                                  * before                               */
    int32_t *sort_valid;         /* [1] the choices with a local expert   */
    int64_t sort_tile;           /* elements a block, whole rounds        */
    int64_t sort_blocks;
    int64_t sort_passes;
    int64_t sort_pass;           /* the pass of this launch               */

    /* Scatter. */
    int64_t layout;              /* moes_layout                           */
    int64_t alignment;
    int64_t capacity;
    int64_t flags;
    int64_t out_rows;
    const unsigned char *x;
    int64_t x_stride_bytes;
    int64_t row_bytes;
    unsigned char *out;
    int64_t out_stride_bytes;
    int64_t copy_width;          /* bytes per vector in the row copy      */
    int64_t copy_chunks;         /* row chunks per token (one per warp)   */
    int64_t place_blocks;        /* moes_place_and_label: its first part  */
    int64_t label_blocks;        /* and its second; after the one-block
                                  * routing, the blocks that label
                                  * (moes_copy_rows' last ones, or a
                                  * moes_place_and_label of their own)    */
    int64_t copy_blocks;         /* moes_copy_rows: blocks that copy; any
                                  * after them label                      */
    int64_t copy_walk_tokens;    /* the copy grid's warps as whole tokens */
    int64_t copy_walk_chunks;    /* and chunks left over (moes_item_walk) */
    int64_t stage_tokens;        /* above 0: moes_scatter_grid copies its
                                  * blocks' own tokens' rows itself, this
                                  * many of each block's first loaded
                                  * into shared memory; the one-launch
                                  * scatter's STAGED form loads a block's
                                  * rows there when it has at most this
                                  * many tokens                           */
    const float *x_scales;       /* NULL without scales                   */
    int64_t x_scales_stride;
    int64_t n_scales;
    void *out_scales;
    int64_t out_scales_format;
    int64_t out_scales_row_stride;
    int64_t out_scales_col_stride;
    int64_t n_scale_cols;

    /* Index outputs, index_elem bytes each. For a count, counts_out is
     * the caller's counts (of index_elem bytes) and the rest are NULL. */
    int64_t index_elem;
    void *out_index;
    int64_t out_index_stride;
    void *counts_out;
    void *start_out;
    void *end_out;
    void *m_indices;
    void *masked_m;
    int64_t *n_dropped;
    void *row_source;            /* [out_rows] or NULL                    */
    int64_t row_source_pad;      /* its value on rows without a choice    */

    /* moes_distinct_experts: [N][distinct_out_stride] of index_elem
     * bytes; NULL for a count or a scatter. distinct_self_check: 1 when
     * the kernel checks the map and ids itself (no routing kernels before
     * it). */
    void *distinct_out;
    int64_t distinct_self_check;
    int64_t distinct_out_stride;
} gpu_scatter_args;

typedef struct gpu_gather_args {
    gpu_device_state *state;
    int64_t flags;
    int64_t n_tokens;
    int64_t top_k;
    int64_t hidden;
    const void *y;
    int64_t y_dtype;
    int64_t y_rows;
    int64_t y_stride;            /* elements                              */
    const void *out_index;
    int64_t index_elem;
    int64_t out_index_stride;
    const float *weights;        /* NULL: all 1.0                         */
    int64_t weights_stride;
    void *out;
    int64_t out_dtype;
    int64_t out_stride;          /* elements                              */
    int64_t vector;              /* 1: groups of 8 elements, 16-byte aligned */
    int64_t chunks;              /* row chunks per token (one per warp)   */
} gpu_gather_args;

/* The kernel that turns a key into the record takes this. */
typedef struct gpu_finish_args {
    gpu_device_state *state;
    int64_t op;                  /* GPU_OP_*                              */
    const void *ids;             /* ids (route) or out_index (gather)     */
    int64_t ids_stride;
    int64_t ids_elem;
    int64_t row_len;             /* K                                     */
    const int32_t *map;
    int64_t n_global;            /* the bound of an id                    */
    int64_t n_experts;           /* the bound of a map entry              */
    int64_t y_rows;              /* the bound of an out_index entry       */
    int64_t capacity;
    const float *x_scales;       /* the scale a UE8M0 error names         */
    int64_t x_scales_stride;
    int64_t n_scales;            /* S, the scales of a row                */
} gpu_finish_args;

/* moes_fill_rows: the pattern travels inside the kernel's parameter (at
 * most 4 KiB on every GPU and driver the library supports), so that the
 * call needs no staging copy and a graph captures the bytes with it.
 * Threads a block of its kernel; each thread sets one unit (a 32-bit word
 * where dst, the stride and the pattern's length are all multiples of 4,
 * else a byte) of one row at a time. */
#define GPU_FILL_ROWS_MAX_PATTERN 2048
#define GPU_FILL_ROWS_THREADS 256
typedef struct gpu_fill_rows_args {
    char *dst;
    int64_t rows;
    int64_t row_stride;          /* bytes                                 */
    int64_t units;               /* per row: words (word) or bytes        */
    int64_t word;                /* 1: 32-bit units                       */
    uint32_t pattern[GPU_FILL_ROWS_MAX_PATTERN / 4]; /* zeros past its end */
} gpu_fill_rows_args;

#endif /* MOES_GPU_KERNEL_ARGS_H */
