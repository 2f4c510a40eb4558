/* SPDX-License-Identifier: MIT */
/*
 * scatter_small.cu - a whole small scatter in one launch.
 *
 * At decode sizes the scatter's time is latency: a routing block that the
 * copy must wait for costs a launch and a grid-wide dependency. Here
 * every block routes all the choices (a few thousand ids, from L2 after
 * the first block) and then writes only its share of the outputs, so no
 * block waits for another. Each step is a few instructions per thread
 * between block barriers; nothing runs on one warp while the others wait:
 *
 *   1. every id (and map entry) is loaded at once, and the block's own
 *      rows with them (into registers when they are few, else into
 *      shared memory by the copy engine in the kernel's STAGED form,
 *      which the host launches with room for them, else asked of the
 *      L2); the map is checked and kept in shared memory;
 *   2. every choice's local expert is counted, and so are those before
 *      the block's own tokens, both in one word an expert (shared
 *      atomics: a count does not depend on the order of its additions);
 *   3. thread e rounds expert e's count up and the block scans them into
 *      first rows, while the threads of the block's own choices rank them
 *      among the same expert's choices before them in t*K + k order: the
 *      placement of every other routing kernel, bit for bit;
 *   4. every block has checked everything (the UE8M0 scales of every
 *      token too), so all reach the same verdict: on an error block 0
 *      turns the smallest key into the record and no block writes
 *      anything;
 *   5. the block places its own choices (out_index, row_source), copies
 *      its choices' rows and scales, and writes its share of the labels
 *      and of the per-expert outputs while the rows' stores drain; an
 *      index-only call writes the labels right after the placement and
 *      leaves, so that it never jumps over the copy's code.
 *
 * The host picks this kernel only within the GPU_SMALL_SCATTER_* limits
 * (GPU_SMALL_SCATTER_SCALES for the UE8M0 scales that every block
 * checks). Zeroed padding is a second launch, as on the grid path.
 */
#include "block_route.cuh"
#include "row_copy.cuh"

enum {
    SMALL_SCATTER_ROUNDS =
        GPU_SMALL_SCATTER_CHOICES / GPU_SMALL_SCATTER_THREADS,
    SMALL_SCATTER_WARPS = GPU_SMALL_SCATTER_THREADS / MOES_WARP,
    /* Row vectors each thread loads before it stores them. EP8 decode
     * (about 3,600 vectors a block, 7 a thread) took two trips to DRAM
     * with 4: 12.4 -> 11.9 us a graph replay on an H200 with 8. With 16
     * (a block of 512 threads holds one multiprocessor either way, so
     * the registers cost nothing): EP8 decode 10.45 -> 10.25, with UE8M0
     * scales 18.3 -> 16.9 us a call, Qwen3 1024 tokens 18.35 -> 17.55,
     * Mixtral 4096 36.45 -> 36.0 (bench/NOTES.md, v21). */
    SMALL_SCATTER_COPY_BATCH = 16,
    /* The same for rows staged in shared memory, whose loads wait tens
     * of cycles, not a trip to DRAM. The 16-wide batch is some 700
     * instructions that a warp runs once, and a profile of EP8 decode
     * put a quarter of its samples in fetching them (bench/NOTES.md,
     * v45). Fewer a thread, less code: EP8 decode from sixteen to four
     * 9.23 -> 8.54 us a graph replay on an H200; on an H100 four 9.37,
     * two 9.21, one 9.14; decode 128 the same in each (bench/NOTES.md,
     * v51-v52). */
    SMALL_SCATTER_STAGED_BATCH = 1
};

/* Thread e scans expert e, and thread i ranks own choice i. */
static_assert(GPU_SMALL_SCATTER_CHOICES < 65536,
              "a count and a count before the block share 32 bits");
static_assert(GPU_SMALL_SCATTER_EXPERTS <= GPU_SMALL_SCATTER_THREADS &&
                  GPU_SMALL_SCATTER_OWN <= GPU_SMALL_SCATTER_THREADS,
              "one expert and one own choice per thread");

struct small_scatter_shared {
    /* Per expert: every choice in the low 16 bits, those before the
     * block's own in the high 16 (small_count_word). */
    uint32_t count[GPU_SMALL_SCATTER_EXPERTS];
    int64_t counts[GPU_SMALL_SCATTER_EXPERTS]; /* a.counts, a.start       */
    int64_t start[GPU_SMALL_SCATTER_EXPERTS];
    int16_t map[GPU_SMALL_SCATTER_MAP];        /* local expert or -1      */
    __align__(16) int16_t own_expert[GPU_SMALL_SCATTER_OWN];
    /* The placed choices of the block's tokens: token and row. */
    int32_t copy_token[GPU_SMALL_SCATTER_OWN];
    int32_t copy_row[GPU_SMALL_SCATTER_OWN];
    int32_t own_row[GPU_SMALL_SCATTER_OWN];    /* own choice's row or -1  */
    int32_t warp_rows[SMALL_SCATTER_WARPS];    /* scan: rows per warp     */
    int32_t warp_dropped[SMALL_SCATTER_WARPS];
    int32_t warp_copies[SMALL_SCATTER_WARPS];  /* placed own choices      */
    unsigned long long key;
    int64_t rows_needed;
    int64_t dropped;
    int32_t copies;
    unsigned long long staged_landed; /* an mbarrier: the staged rows    */
};

/* Where the copy list's rows are read: token t's row at
 * base + (t - first_token) * stride, from x, or from the block's rows
 * staged in shared memory. */
struct small_row_source {
    const unsigned char *base;
    int64_t stride;
    int32_t first_token;
};

/* Rows of the copy list, B vectors a thread in flight; a token placed in
 * several rows is read once per row (from L2 after the first, or from
 * shared memory where the block staged them).
 * A thread walks its (entry, vector) positions by the block's threads
 * split once into entries and vectors (moes_walk), and walks the batch a
 * second time for the stores instead of keeping a pointer per vector:
 * sixteen pointers made ptxas spill. A division by the row's vectors for
 * each load and store had been the loop's longest chain. */
template <typename V, int B>
__device__ void small_copy_rows(const gpu_scatter_args &a,
                                const small_scatter_shared &sh,
                                const small_row_source src)
{
    const uint32_t n_vec = (uint32_t)(a.row_bytes / (int64_t)sizeof(V));
    const uint32_t copies = (uint32_t)sh.copies;
    /* Never 0 with rows to copy (hidden >= 1); no division by it if so. */
    if (n_vec == 0)
        return;
    const uint32_t step_j = blockDim.x / n_vec;
    const uint32_t step_s = blockDim.x - step_j * n_vec;
    moes_walk<uint32_t> w = moes_walk_start<uint32_t>(threadIdx.x, n_vec);
    while (w.t < copies) {
        const moes_walk<uint32_t> batch = w;
        V v[B];
#pragma unroll
        for (int b = 0; b < B; b++) {
            if (w.t < copies)
                v[b] = ((const V *)(src.base +
                                    (sh.copy_token[w.t] - src.first_token) *
                                        src.stride))[w.c];
            moes_walk_step(w, step_j, step_s, n_vec);
        }
        w = batch;
#pragma unroll
        for (int b = 0; b < B; b++) {
            if (w.t < copies)
                ((V *)(a.out + sh.copy_row[w.t] * a.out_stride_bytes))[w.c] =
                    v[b];
            moes_walk_step(w, step_j, step_s, n_vec);
        }
    }
}

/* The scale words of the copy list, in the output's format F. */
template <int F>
__device__ void small_copy_scales(const gpu_scatter_args &a,
                                  const small_scatter_shared &sh)
{
    const uint32_t cols = (uint32_t)a.n_scale_cols;
    const uint32_t total = (uint32_t)sh.copies * cols;
    for (uint32_t i = threadIdx.x; i < total; i += blockDim.x) {
        const uint32_t j = i / cols, col = i - j * cols;
        const float *src = a.x_scales + sh.copy_token[j] * a.x_scales_stride;
        moes_dev_store_scale(a, sh.copy_row[j], col,
                             moes_dev_scale_word_as<F>(a, src, col));
    }
}

/* The smallest error key among the UE8M0 scales this thread checks
 * (every scale of every token must be a power of two that UE8M0 holds,
 * placed or not, as moes_stage_check_scales has it), or key. Each block
 * checks them all, from L2 after the first, so that all reach the same
 * verdict; the host keeps them within GPU_SMALL_SCATTER_SCALES, so 32
 * bits index them. Scale i is t * S + s; dense rows on a 16-byte boundary
 * are one array read four scales a load, else one a load. A thread's
 * scales ascend, so its first bad one is its smallest. The loads of a
 * batch go out together. On an H200, EP8 decode's 57,344 scales added 23
 * us to the call read one a load and four loads at a time, and 6 us read
 * four a load and eight loads at a time (bench/NOTES.md, v20). */
__device__ __forceinline__ unsigned long long
small_check_scales(const gpu_scatter_args &a, unsigned long long key)
{
    enum { T = GPU_SMALL_SCATTER_THREADS, B = 8 };
    const uint32_t per_token = (uint32_t)a.n_scales;
    const uint32_t n = (uint32_t)a.n_tokens * per_token;
    uint32_t i0 = 0;
    if (a.x_scales_stride == a.n_scales &&
        ((uintptr_t)a.x_scales & 15u) == 0) {
        const uint4 *quad = (const uint4 *)a.x_scales;
        const uint32_t n_quads = n / 4;
        for (uint32_t q0 = threadIdx.x; q0 < n_quads; q0 += B * T) {
            uint4 w[B];
#pragma unroll
            for (int b = 0; b < B; b++) {
                const uint32_t q = q0 + b * T;
                /* 1.0 past the end: a good scale. */
                w[b] = q < n_quads ? quad[q]
                                   : make_uint4(0x3F800000u, 0x3F800000u,
                                                0x3F800000u, 0x3F800000u);
            }
#pragma unroll
            for (int b = 0; b < B; b++) {
                const uint32_t word[4] = {w[b].x, w[b].y, w[b].z, w[b].w};
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (!moes_ue8m0_scale_ok(word[j])) {
                        const unsigned long long bad = GPU_ERROR_KEY(
                            MOES_DATA_ERROR_RANK_SCALE, 4 * (q0 + b * T) + j);
                        return bad < key ? bad : key;
                    }
            }
        }
        i0 = n_quads * 4; /* the last n % 4 scales, one a load */
    }
    return moes_dev_check_scales<uint32_t, B>(a, i0 + threadIdx.x, n, T, key);
}

/* The block's own token rows, loaded at entry so that their latency
 * hides behind the routing: vector p = tid + b * threads of the block's
 * rows (token p / n_vec, vector p % n_vec) in v[b]. Only for rows of
 * 16-byte vectors that fit GPU_SMALL_SCATTER_PRELOAD vectors a thread; the
 * caller has checked. */
struct small_preload {
    uint4 v[GPU_SMALL_SCATTER_PRELOAD];
    uint32_t scale; /* scale word tid of the block's tokens */
};

template <int F>
__device__ __forceinline__ void small_preload_rows(const gpu_scatter_args &a,
                                                   int64_t t0, uint32_t n_tok,
                                                   uint32_t n_vec,
                                                   small_preload &pre)
{
    const uint32_t total = n_tok * n_vec;
#pragma unroll
    for (int b = 0; b < GPU_SMALL_SCATTER_PRELOAD; b++) {
        const uint32_t p = threadIdx.x + b * GPU_SMALL_SCATTER_THREADS;
        if (p < total) {
            const uint32_t j = p / n_vec, s = p - j * n_vec;
            pre.v[b] = ((const uint4 *)(a.x + (t0 + j) * a.x_stride_bytes))[s];
        }
    }
    const uint32_t cols = (uint32_t)a.n_scale_cols;
    if (a.x_scales && threadIdx.x < n_tok * cols) {
        const uint32_t j = threadIdx.x / cols, col = threadIdx.x - j * cols;
        pre.scale = moes_dev_scale_word_as<F>(
            a, a.x_scales + (t0 + j) * a.x_scales_stride, col);
    }
}

/* The block's tokens' scales, which small_copy_scales reads after the
 * rows' copy: from DRAM, that was the kernel's last wait. One prefetch of
 * the block's span of x_scales, widened to whole 16-byte granules (each
 * holds a byte of the span, so it lies in the span's pages). */
__device__ __forceinline__ void
small_prefetch_scales(const gpu_scatter_args &a, int64_t t0, uint32_t n_tok)
{
    if (!a.x_scales || n_tok == 0 ||
        threadIdx.x != GPU_SMALL_SCATTER_THREADS - 1)
        return;
    const uintptr_t first = (uintptr_t)(a.x_scales + t0 * a.x_scales_stride);
    const uintptr_t end =
        (uintptr_t)(a.x_scales + (t0 + n_tok - 1) * a.x_scales_stride +
                    a.n_scales);
    const uintptr_t lo = first & ~(uintptr_t)15;
    const uintptr_t hi = (end + 15) & ~(uintptr_t)15;
    if (hi - lo <= GPU_SMALL_SCATTER_PREFETCH_BYTES)
        moes_dev_prefetch_l2((const void *)lo, (uint32_t)(hi - lo));
}

/* The block's own token rows asked of the L2 at entry, one bulk prefetch
 * a row, so that the copy at the end finds them there; for blocks whose
 * rows do not fit small_preload but are at most
 * GPU_SMALL_SCATTER_PREFETCH_BYTES (past that it measured slower, maybe
 * because the lines leave the L2 again before the copy; not profiled).
 * Rows of 16-byte vectors only, so every row starts on a 16-byte
 * boundary and is a multiple of 16 bytes long. */
__device__ __forceinline__ void small_prefetch_rows(const gpu_scatter_args &a,
                                                    int64_t t0,
                                                    uint32_t n_tok)
{
    for (uint32_t j = threadIdx.x; j < n_tok; j += GPU_SMALL_SCATTER_THREADS)
        moes_dev_prefetch_l2(a.x + (t0 + j) * a.x_stride_bytes,
                             (uint32_t)a.row_bytes);
    small_prefetch_scales(a, t0, n_tok);
}

/* Stores the preloaded vectors (and scale words) to every row their
 * token was placed in (sh.own_row). */
__device__ __forceinline__ void small_store_preloaded(
    const gpu_scatter_args &a, const small_scatter_shared &sh, uint32_t n_tok,
    uint32_t n_vec, const small_preload &pre)
{
    const uint32_t total = n_tok * n_vec, top_k = (uint32_t)a.top_k;
#pragma unroll
    for (int b = 0; b < GPU_SMALL_SCATTER_PRELOAD; b++) {
        const uint32_t p = threadIdx.x + b * GPU_SMALL_SCATTER_THREADS;
        if (p < total) {
            const uint32_t j = p / n_vec, s = p - j * n_vec;
            for (uint32_t k = 0; k < top_k; k++) {
                const int32_t row = sh.own_row[j * top_k + k];
                if (row >= 0)
                    ((uint4 *)(a.out + row * a.out_stride_bytes))[s] =
                        pre.v[b];
            }
        }
    }
    const uint32_t cols = (uint32_t)a.n_scale_cols;
    if (a.x_scales && threadIdx.x < n_tok * cols) {
        const uint32_t j = threadIdx.x / cols, col = threadIdx.x - j * cols;
        for (uint32_t k = 0; k < top_k; k++) {
            const int32_t row = sh.own_row[j * top_k + k];
            if (row >= 0)
                moes_dev_store_scale(a, row, col, pre.scale);
        }
    }
}

/* The choice a thread takes in round r of steps 1 and 2: with dense
 * int32 ids (vec), choice r % 4 of its vector r / 4, the vector
 * tid + r / 4 * threads; else choice tid + r * threads. A thread's choices
 * grow with tid, so thread 0's is the round's first in the block. */
__device__ __forceinline__ int small_choice(bool vec, int tid, int r)
{
    enum { T = GPU_SMALL_SCATTER_THREADS };
    return vec ? (tid + r / 4 * T) * 4 + r % 4 : tid + r * T;
}

/* How many of the block's own choices before own choice i have local
 * expert e (>= 0): eight entries a 16-byte load, two compared at once.
 * At EP8 decode a block owns about 64 choices, and one compare a load
 * made the last of them wait on 63 loads in a row. Entries from i on
 * (some never written in this launch) are loaded with the last vector
 * and masked off. */
__device__ __forceinline__ int small_rank_among_own(const int16_t *own, int i,
                                                    int e)
{
    const uint32_t pair = (uint32_t)(uint16_t)e * 0x10001u;
    const uint4 *v = (const uint4 *)own;
    const int full = i / 8, rest = i % 8;
    int bits = 0;
#pragma unroll 4
    for (int q = 0; q < full; q++) {
        const uint4 w = v[q];
        bits += __popc(__vcmpeq2(w.x, pair)) + __popc(__vcmpeq2(w.y, pair)) +
                __popc(__vcmpeq2(w.z, pair)) + __popc(__vcmpeq2(w.w, pair));
    }
    if (rest) {
        const uint4 w = v[full];
        const uint32_t word[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int halves = rest - 2 * j; /* entries of word j before i */
            const uint32_t keep =
                halves >= 2 ? 0xFFFFFFFFu : halves == 1 ? 0xFFFFu : 0u;
            bits += __popc(__vcmpeq2(word[j], pair) & keep);
        }
    }
    return bits / 16;
}

/* What choice c of expert e adds to sh.count[e]: one to the count, and
 * one to the high half when it comes before the block's own choices
 * [c0, ...). One shared atomic a choice instead of two. */
__device__ __forceinline__ uint32_t small_count_word(int c, int c0)
{
    return c < c0 ? 0x10001u : 1u;
}

__device__ __forceinline__ int32_t small_warp_sum(int32_t v)
{
#pragma unroll
    for (int off = MOES_WARP / 2; off > 0; off /= 2)
        v += __shfl_down_sync(0xFFFFFFFFu, v, off);
    return v;
}

/* The kernel, for calls with fp32 scales or none (F = MOES_SCALES_FP32)
 * and with UE8M0 scales, which every block checks (a kernel of its own,
 * so that the others carry none of that code); each also in a STAGED
 * form, for calls whose blocks' rows do not fit the registers. */
template <int F, bool STAGED>
__device__ __forceinline__ void small_scatter(const gpu_scatter_args &args)
{
    __shared__ small_scatter_shared sh;
    enum { T = GPU_SMALL_SCATTER_THREADS, R = SMALL_SCATTER_ROUNDS };
    gpu_scatter_args a = args;
    a.counts = sh.counts;
    a.start = sh.start;
    const int tid = threadIdx.x;
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    const int n_experts = (int)a.n_experts;
    const int n_choices = (int)a.n_choices;
    const unsigned top_k = (unsigned)a.top_k;
    const int32_t capacity = masked ? (int32_t)a.capacity : 0;
    /* The block's tokens, and their choices [c0, c1). */
    const int64_t t0 = (int64_t)blockIdx.x * a.n_tokens / gridDim.x;
    const int64_t t1 = ((int64_t)blockIdx.x + 1) * a.n_tokens / gridDim.x;
    const int c0 = (int)(t0 * a.top_k), c1 = (int)(t1 * a.top_k);
    unsigned long long key = GPU_ERROR_KEY_NONE;

    moes_dev_enter();
    /* 1. The ids are inputs that nothing in the stream writes: their
     * loads go out before the error record's. Dense int32 ids on a
     * 16-byte boundary load four to a thread in one vector, else one at
     * a time (small_choice says which choices a thread takes). At 8192
     * choices on an H200, steps 1 and 2 took 7.5 us with sixteen loads a
     * thread and 4.6 us with four (bench/NOTES.md). */
    const bool vec = a.ids_elem == 4 && a.ids_stride == a.top_k &&
                     ((uintptr_t)a.ids & 15u) == 0;
    /* 32 bits a choice: every bound the ids are tested against fits
     * (GPU_SMALL_SCATTER_MAP), and a 64-bit id outside int32 becomes
     * INT32_MIN, which fails the same test. With 64-bit ids the kernel
     * took 69 registers, now 60; an H200's graph replays gained
     * 0.1-0.5 us at decode (bench/NOTES.md). */
    int32_t id[R];
    if (vec) {
#pragma unroll
        for (int q = 0; q < R / 4; q++) {
            const int c = small_choice(true, tid, 4 * q);
            const int32_t *p = (const int32_t *)a.ids + c;
            int4 w = make_int4(-1, -1, -1, -1);
            if (c + 3 < n_choices) {
                w = *(const int4 *)p;
            } else if (c < n_choices) {
                w.x = p[0];
                if (c + 1 < n_choices)
                    w.y = p[1];
                if (c + 2 < n_choices)
                    w.z = p[2];
            }
            id[4 * q] = w.x;
            id[4 * q + 1] = w.y;
            id[4 * q + 2] = w.z;
            id[4 * q + 3] = w.w;
        }
    } else {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int c = small_choice(false, tid, r);
            id[r] = c < n_choices ? moes_block_id(a, (unsigned)c) : -1;
        }
    }
    /* The block's rows, and the first map entry of each thread, are
     * inputs too: their loads go out with the ids'. */
    const uint32_t n_tok = (uint32_t)(t1 - t0);
    const uint32_t n_vec16 = (uint32_t)(a.row_bytes / 16);
    const bool preload =
        a.x && a.copy_width == 16 &&
        gpu_small_scatter_preloads(
            n_tok, n_vec16, a.x_scales ? (uint32_t)a.n_scale_cols : 0);
    /* Rows that do not fit the registers go to shared memory in the
     * kernel's STAGED form, which the host launches with room for them
     * (stage_tokens): the copy engine loads them there while the block
     * routes, and the copy reads them from there instead of from the L2. */
    const bool stage = STAGED && a.x && a.copy_width == 16 && !preload &&
                       n_tok > 0 && (int64_t)n_tok <= a.stage_tokens;
    extern __shared__ __align__(16) uint4 small_staged_rows[];
    small_preload pre;
    if (preload) {
        small_preload_rows<F>(a, t0, n_tok, n_vec16, pre);
    } else if (stage) {
        moes_stage_rows(a, t0, n_tok, NULL, small_staged_rows,
                        &sh.staged_landed);
        small_prefetch_scales(a, t0, n_tok);
    } else if (a.x && a.copy_width == 16 &&
               (int64_t)n_tok * a.row_bytes <=
                   GPU_SMALL_SCATTER_PREFETCH_BYTES) {
        small_prefetch_rows(a, t0, n_tok);
    }
    int32_t map_first = -1;
    if (a.map && tid < (int)a.n_global)
        map_first = a.map[tid];
    /* Thread 0's look at the record goes out with the inputs' loads; the
     * block agrees on it at the barrier below. */
    const bool earlier = moes_thread0_look(a.state);
    if (a.map)
        moes_block_load_map<T, true>(a, sh.map, map_first, &key);
    if (tid < n_experts)
        sh.count[tid] = 0;
    if (tid == 0)
        sh.key = GPU_ERROR_KEY_NONE;
    /* An earlier call's error, or this call's from a block that finished
     * before this one started: the whole block leaves, or none of it. */
    if (__syncthreads_or(earlier)) {
        /* The block's shared memory must outlive the copies into it. */
        if (stage)
            moes_wait_staged(n_tok, &sh.staged_landed);
        return;
    }

    /* 2. Each choice's local expert, then its count. Four rounds at a
     * time with no branch between them (choices past the end hold id
     * -1, which counts nowhere), so that their map loads are in flight
     * together. With a test and a branch per choice and a second atomic
     * for the count before the block, the 16 rounds of EP8 decode took
     * 728 instructions a warp, waiting on each map load in turn; now
     * 445, and the index-only call went from 6.5 to 4.8 us a graph
     * replay on an H200 (bench/NOTES.md). Without a map the ids are the
     * experts (n_global is n_experts); the map kept in shared memory
     * holds only experts below n_experts, or -1. */
    const unsigned n_global = (unsigned)a.n_global;
    const int n_own = c1 - c0;
    /* small_choice(vec, tid, 4 q + j), as a start and a step. */
    const int c_first = vec ? 4 * tid : tid, c_step = vec ? 1 : T;
    int first_bad = INT32_MAX; /* the first choice with a bad id */
    int16_t expert[R];
#pragma unroll
    for (int q = 0; q < R / 4; q++) {
        if (small_choice(vec, 0, 4 * q) >= n_choices) /* the whole block */
            break;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = 4 * q + j;
            const int c = c_first + 4 * q * T + j * c_step;
            const int e = moes_block_expert(id[r], c, n_global, a.map,
                                            sh.map, &first_bad);
            expert[r] = (int16_t)e;
            if ((unsigned)(c - c0) < (unsigned)n_own)
                sh.own_expert[c - c0] = (int16_t)e;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = 4 * q + j;
            if (expert[r] >= 0)
                atomicAdd(&sh.count[expert[r]],
                          small_count_word(c_first + 4 * q * T + j * c_step,
                                           c0));
        }
    }
    if (first_bad != INT32_MAX &&
        GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_ID, first_bad) < key)
        key = GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_ID, first_bad);
    if (F == MOES_SCALES_UE8M0 && a.x_scales)
        key = small_check_scales(a, key);
    if (key != GPU_ERROR_KEY_NONE)
        atomicMin(&sh.key, key);
    __syncthreads();

    /* 3. Expert tid's rows (its aligned block, or its drops when
     * masked), scanned within the warp first. */
    int32_t count = 0, rows = 0, dropped = 0;
    if (tid < n_experts) {
        count = (int32_t)(sh.count[tid] & 0xFFFFu);
        if (masked)
            dropped = count > capacity ? count - capacity : 0;
        else
            rows = (int32_t)moes_dev_round_up_sat(count, a.alignment);
    }
    /* 32 bits: the host keeps rows below 2^31. */
    const int32_t rows_incl = moes_warp_inclusive_sum(rows, lane);
    dropped = small_warp_sum(dropped);
    if (lane == MOES_WARP - 1)
        sh.warp_rows[warp] = rows_incl;
    if (lane == 0)
        sh.warp_dropped[warp] = dropped;
    /* Own choice tid's rank: the same expert's choices before the block,
     * and before it within the block. */
    int own_e = -1, rank = 0;
    if (tid < n_own) {
        own_e = sh.own_expert[tid];
        if (own_e >= 0)
            rank = (int)(sh.count[own_e] >> 16) +
                   small_rank_among_own(sh.own_expert, tid, own_e);
    }
    __syncthreads();
    if (tid < n_experts) {
        int32_t first = rows_incl - rows;
        for (unsigned w = 0; w < warp; w++)
            first += sh.warp_rows[w];
        sh.counts[tid] = count;
        sh.start[tid] = masked ? (int64_t)tid * capacity : first;
    }
    if (tid == 0) {
        int32_t total = 0, drops = 0;
        for (int w = 0; w < SMALL_SCATTER_WARPS; w++) {
            total += sh.warp_rows[w];
            drops += sh.warp_dropped[w];
        }
        sh.rows_needed = masked ? a.out_rows : total;
        sh.dropped = drops;
        if (!masked && total > a.capacity)
            atomicMin(&sh.key,
                      GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_CAPACITY, 0));
    }
    __syncthreads();

    /* 4. */
    if (moes_block_verdict(a, sh.key, sh.rows_needed)) {
        if (stage)
            moes_wait_staged(n_tok, &sh.staged_landed);
        return;
    }
    /* Zeroed padding is a launch of its own after this one
     * (moes_zero_padding), which finds each row's expert in the routing
     * that the grid path leaves in the workspace: block 0 leaves it
     * there too. */
    if ((a.flags & MOES_SCATTER_ZERO_PADDING) && blockIdx.x == 0) {
        if (tid < n_experts) {
            args.counts[tid] = sh.counts[tid];
            args.start[tid] = sh.start[tid];
        }
        if (tid == 0)
            a.state->rows_needed = sh.rows_needed;
    }

    /* 5. Own choice tid's row, its out_index and row_source entries, and
     * its place in the copy list (in t*K + k order). */
    int64_t row = -1;
    if (own_e >= 0) {
        if (masked)
            row = rank < capacity ? (int64_t)own_e * capacity + rank : -1;
        else
            row = sh.start[own_e] + rank;
    }
    if (tid < n_own) {
        const unsigned c = (unsigned)(c0 + tid), t = c / top_k;
        moes_dev_place_choice_at(a, t, c - t * top_k, c, row);
    }
    if (tid < n_own)
        sh.own_row[tid] = (int32_t)row;
    /* The rows to copy: own_row for preloaded rows, else the copy list
     * (in t*K + k order). An index-only call (no x) needs neither. */
    if (a.x) {
        const unsigned placed = __ballot_sync(0xFFFFFFFFu, row >= 0);
        if (lane == 0)
            sh.warp_copies[warp] = __popc(placed);
        __syncthreads();
        if (!preload) {
            if (row >= 0) {
                int slot = __popc(placed & lower);
                for (unsigned w = 0; w < warp; w++)
                    slot += sh.warp_copies[w];
                sh.copy_token[slot] = (int32_t)((unsigned)(c0 + tid) / top_k);
                sh.copy_row[slot] = (int32_t)row;
            }
            if (tid == 0) {
                int copies = 0;
                for (int w = 0; w < SMALL_SCATTER_WARPS; w++)
                    copies += sh.warp_copies[w];
                sh.copies = copies;
            }
            __syncthreads();
        }
    }
    /* The labels and per-expert outputs (the label warps numbered block
     * by block, block_route.cuh). An index-only call writes them here and
     * leaves: it runs straight on from the placement to its exit, instead
     * of jumping over the copy to instructions not yet fetched. A call
     * with rows writes them after the rows' stores have gone out, so that
     * the labels' own work runs while those drain instead of ahead of
     * them: on an H200 (bench/NOTES.md, v38), graph replays of decode 128
     * 6.37 -> 6.31 us, EP8 decode 9.73 -> 9.71; with the inputs in L2
     * 5.94 -> 5.84 and 9.03 -> 8.82. */
    if (!a.x) {
        moes_block_labels_and_outputs<T, false>(a, sh.rows_needed, sh.dropped);
        return;
    }
    if (preload) {
        small_store_preloaded(a, sh, n_tok, n_vec16, pre);
    } else {
        small_row_source src = {a.x, a.x_stride_bytes, 0};
        if (stage) {
            moes_wait_staged(n_tok, &sh.staged_landed);
            src.base = (const unsigned char *)small_staged_rows;
            src.stride = a.row_bytes;
            src.first_token = (int32_t)t0;
        }
        enum { B = SMALL_SCATTER_COPY_BATCH };
        /* A block stages only rows of 16-byte vectors (stage above), so
         * its copy needs no switch on the width. */
        if (stage) {
            small_copy_rows<uint4, SMALL_SCATTER_STAGED_BATCH>(a, sh, src);
        } else {
            switch (a.copy_width) {
            case 16: small_copy_rows<uint4, B>(a, sh, src); break;
            case 8: small_copy_rows<uint2, B>(a, sh, src); break;
            case 4: small_copy_rows<uint32_t, B>(a, sh, src); break;
            case 2: small_copy_rows<uint16_t, B>(a, sh, src); break;
            default: small_copy_rows<unsigned char, B>(a, sh, src); break;
            }
        }
        if (a.x_scales)
            small_copy_scales<F>(a, sh);
    }
    moes_block_labels_and_outputs<T, false>(a, sh.rows_needed, sh.dropped);
}

extern "C" __global__ void __launch_bounds__(GPU_SMALL_SCATTER_THREADS, 1)
moes_scatter_small(const gpu_scatter_args args)
{
    small_scatter<MOES_SCALES_FP32, false>(args);
}

extern "C" __global__ void __launch_bounds__(GPU_SMALL_SCATTER_THREADS, 1)
moes_scatter_small_ue8m0(const gpu_scatter_args args)
{
    small_scatter<MOES_SCALES_UE8M0, false>(args);
}

/* The forms that stage rows are kernels of their own: with the staging
 * in the one kernel, decode 128, whose blocks never stage, took 6.41-6.43
 * us a graph replay on an H200 against 6.33-6.35 with the kernels apart
 * (6.31-6.32 before the staging), and its index-only calls 3.43-3.45
 * against 3.37-3.38 (bench/NOTES.md, v39). */
extern "C" __global__ void __launch_bounds__(GPU_SMALL_SCATTER_THREADS, 1)
moes_scatter_small_staged(const gpu_scatter_args args)
{
    small_scatter<MOES_SCALES_FP32, true>(args);
}

extern "C" __global__ void __launch_bounds__(GPU_SMALL_SCATTER_THREADS, 1)
moes_scatter_small_ue8m0_staged(const gpu_scatter_args args)
{
    small_scatter<MOES_SCALES_UE8M0, true>(args);
}
