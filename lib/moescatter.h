/* SPDX-License-Identifier: MIT */
/*
 * moescatter.h - token scatter and gather for Mixture-of-Experts layers.
 *
 * This header is the library's manual. Read it top to bottom once.
 *
 * THE JOB
 *   Every token t (0 <= t < N) is routed to K experts: ids[t][k]. The
 *   scatter copies token t's row once per chosen expert into a buffer in
 *   which each expert's rows are contiguous; the gather sums each token's K
 *   expert results back, weighted by the router weights.
 *
 *   With expert parallelism a rank holds E local experts out of E_global.
 *   An optional expert map (int32, E_global entries) turns a global id into
 *   a local one; -1 (as an id, or as a map entry) means "not here": that
 *   (t, k) is counted nowhere and placed nowhere.
 *
 * DETERMINISM
 *   Rows of one expert are always in ascending t*K + k order, on every
 *   backend and for every thread count. The gather sums in k order with
 *   fp32 arithmetic and no fused multiply-add, so the CPU and CUDA backends
 *   give the same bits.
 *
 * BUFFERS
 *   No output may share a byte with an input of the call or with another
 *   output, over the extent its arguments give it (first element to the
 *   last one the call may touch): MOES_ERR_OVERLAP, naming both. Buffers
 *   of rows with the same stride in bytes, or a buffer of one row beside
 *   one of many rows, are compared row by row, so the fields of records
 *   in one allocation (a row and its scales) are separate buffers as
 *   long as no two rows share a byte. Every
 *   pointer must be aligned to the size of its elements:
 *   MOES_ERR_MISALIGNED. The work and the workspace of a call grow with
 *   what it reads and writes, never with an unused capacity or with the
 *   thread count times the experts.
 *
 * CONTEXTS AND BACKENDS
 *   Everything happens through a context (moes_context_create). A context
 *   runs on one backend: the CPU (OpenMP threads, host pointers) or CUDA
 *   (device pointers, asynchronous on the context's stream). Backend AUTO
 *   picks CUDA when a device is usable and the CPU otherwise; the reason is
 *   reported by moes_context_get_info. The environment variable
 *   MOES_BACKEND=cpu|cuda|auto overrides what the program asked for, and
 *   MOES_LOG=1 prints the choice (once per context) on standard error.
 *   A context must not be used by two threads at the same time; separate
 *   contexts are independent. In a child process made by fork() the CPU
 *   backend runs on one thread (OpenMP's threads do not survive a fork).
 *   The library keeps no more than a few KiB on the caller's stack.
 *
 * ERRORS
 *   Every function returns a moes_status. On failure, moes_last_error()
 *   gives a message that names the argument and, for data errors, the
 *   element at fault ("ids[3][1] = 300 is outside [-1, 256)").
 *   Bad input never crashes and never writes out of bounds. When ids, the
 *   expert map, out_index, the capacity or a UE8M0 scale are wrong, no
 *   output buffer is modified. On CUDA those are found by the kernels:
 *   they write nothing and the error is returned by the next
 *   moes_synchronize() (and by moes_get_error()); until then the call
 *   itself returned MOES_OK, and the count, distinct-experts, scatter and
 *   gather calls queued after it write nothing either (fills and copies
 *   still run).
 *
 * STRUCTS AND VERSIONS
 *   Every struct the caller fills starts with struct_size, set by the
 *   _init function (or to sizeof the struct). Structs only grow, at the
 *   end: a program compiled against an earlier version passes its smaller
 *   struct_size, and the fields it does not know take their defaults (and
 *   are not written, for moes_context_info). A struct_size that no
 *   version has had, larger ones included, is MOES_ERR_INVALID_ARGUMENT.
 *
 * SIZES
 *   All sizes, strides and offsets are int64_t. Strides are in elements
 *   and must be at least the row length. Index outputs (out_index, counts,
 *   expert_start, expert_end, m_indices, masked_m) share one integer type,
 *   chosen per call: int32 (what GEMM libraries usually take) or int64.
 */
#ifndef MOESCATTER_H
#define MOESCATTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(MOES_BUILDING_SHARED)
#define MOES_API __declspec(dllexport)
#elif defined(__GNUC__)
#define MOES_API __attribute__((visibility("default")))
#else
#define MOES_API
#endif

/* ------------------------------------------------------------------ */
/* Version                                                            */
/* ------------------------------------------------------------------ */

#define MOES_VERSION_MAJOR 0
#define MOES_VERSION_MINOR 3
#define MOES_VERSION_PATCH 0
#define MOES_VERSION_NUMBER                                                \
    (MOES_VERSION_MAJOR * 10000 + MOES_VERSION_MINOR * 100 +               \
     MOES_VERSION_PATCH)

/* Fills the version of the library actually linked (which may differ from
 * the MOES_VERSION_* macros the caller was compiled with). Any pointer may
 * be NULL. Returns MOES_OK. */
MOES_API int moes_version(int *major, int *minor, int *patch);

/* ------------------------------------------------------------------ */
/* Status codes: never renumbered, only appended.                     */
/* ------------------------------------------------------------------ */

typedef enum moes_status {
    MOES_OK = 0,
    MOES_ERR_NULL_POINTER = 1,      /* a needed pointer is NULL           */
    MOES_ERR_INVALID_SIZE = 2,      /* a size is negative or zero         */
    MOES_ERR_INVALID_STRIDE = 3,    /* a stride is smaller than its row   */
    MOES_ERR_OVERFLOW = 4,          /* a byte count overflows 64 bits, or
                                       an index does not fit int32        */
    MOES_ERR_INVALID_DTYPE = 5,     /* unknown or unsupported dtype       */
    MOES_ERR_INVALID_FLAGS = 6,     /* unknown flag bits                  */
    MOES_ERR_INVALID_ALIGNMENT = 7, /* alignment < 1                      */
    MOES_ERR_INVALID_ID = 8,        /* ids entry < -1 or >= E_global      */
    MOES_ERR_INVALID_MAP = 9,       /* expert map entry < -1 or >= E      */
    MOES_ERR_INVALID_OUT_INDEX = 10,/* gather out_index outside [-1, M)   */
    MOES_ERR_CAPACITY = 11,         /* output rows fewer than needed      */
    MOES_ERR_INVALID_ARGUMENT = 12, /* any other bad argument (an unknown
                                       layout or backend, a struct_size
                                       the library does not know, ...)    */
    MOES_ERR_OUT_OF_MEMORY = 13,    /* an allocation failed               */
    MOES_ERR_BACKEND_UNAVAILABLE = 14, /* the backend asked for cannot run */
    MOES_ERR_DEVICE = 15,           /* the CUDA driver reported an error  */
    MOES_ERR_WORKSPACE = 16,        /* a call needs more workspace than was
                                       reserved, than the caller's
                                       workspace holds, or than the context
                                       has while its stream is captured   */
    MOES_ERR_INVALID_SCALE = 17,    /* a scale that UE8M0 cannot hold: not
                                       a positive, finite, normal power of
                                       two                                */
    MOES_ERR_OVERLAP = 18,          /* an output shares memory with an
                                       input or with another output       */
    MOES_ERR_MISALIGNED = 19        /* a pointer not aligned to the size
                                       of its elements                    */
} moes_status;

/* The fixed English name of a status ("invalid expert id" for
 * MOES_ERR_INVALID_ID). Never NULL: an unknown value gives "unknown
 * status". */
MOES_API const char *moes_strerror(int status);

/* ------------------------------------------------------------------ */
/* Element types                                                      */
/* ------------------------------------------------------------------ */

typedef enum moes_dtype {
    MOES_DTYPE_FP8_E4M3 = 1,
    MOES_DTYPE_FP8_E5M2 = 2,
    MOES_DTYPE_BF16 = 3,
    MOES_DTYPE_FP16 = 4,
    MOES_DTYPE_FP32 = 5,
    MOES_DTYPE_INT32 = 6,
    MOES_DTYPE_INT64 = 7
} moes_dtype;

/* Size in bytes of one element of dtype (1, 2, 4 or 8). Returns
 * MOES_ERR_NULL_POINTER when size is NULL and MOES_ERR_INVALID_DTYPE for an
 * unknown dtype (size is then left alone). */
MOES_API int moes_dtype_size(int dtype, size_t *size);

/* ------------------------------------------------------------------ */
/* Contexts                                                           */
/* ------------------------------------------------------------------ */

typedef struct moes_context moes_context; /* opaque */

typedef enum moes_backend {
    MOES_BACKEND_AUTO = 0,
    MOES_BACKEND_CPU = 1,
    MOES_BACKEND_CUDA = 2
} moes_backend;

typedef struct moes_context_options {
    size_t struct_size;   /* sizeof(moes_context_options)                */
    int backend;          /* moes_backend; MOES_BACKEND env var overrides */
    int cpu_threads;      /* OpenMP threads; 0 = OpenMP's default
                             (OMP_NUM_THREADS). Either is capped at the
                             larger of 64 and 4 per processor, and at
                             OMP_THREAD_LIMIT                             */
    int cuda_device;      /* device ordinal for CUDA, default 0           */
} moes_context_options;

/* Sets opts to the defaults: AUTO, default threads, device 0.
 * Returns MOES_ERR_NULL_POINTER when opts is NULL. */
MOES_API int moes_context_options_init(moes_context_options *opts);

/* Opens a context. opts may be NULL for the defaults. On success *ctx is
 * the new context; on failure *ctx is NULL and the message is available
 * through moes_last_error(NULL) in the calling thread.
 * Returns MOES_ERR_NULL_POINTER (ctx NULL), MOES_ERR_INVALID_ARGUMENT
 * (unknown backend, struct_size, bad MOES_BACKEND value, negative
 * threads), MOES_ERR_BACKEND_UNAVAILABLE (CUDA asked for and not usable:
 * built without CUDA, no driver, no device, no kernel image for the GPU),
 * MOES_ERR_DEVICE, MOES_ERR_OUT_OF_MEMORY. */
MOES_API int moes_context_create(moes_context **ctx,
                                 const moes_context_options *opts);

/* Closes a context and frees its workspace (not the caller's buffers,
 * nor buffers from moes_malloc, which must be freed before). NULL is
 * accepted and does nothing. Returns MOES_OK, or MOES_ERR_DEVICE when the
 * driver reports an error while releasing. */
MOES_API int moes_context_destroy(moes_context *ctx);

typedef struct moes_context_info {
    size_t struct_size;       /* sizeof(moes_context_info), set by caller */
    int backend;              /* MOES_BACKEND_CPU or MOES_BACKEND_CUDA    */
    int cpu_threads;          /* threads the CPU backend uses             */
    char reason[256];         /* why this backend was chosen              */
    char device_name[256];    /* CUDA device name, or "cpu"               */
    int device_multiprocessors; /* CUDA SMs, 0 on the CPU                 */
    int device_compute_capability; /* e.g. 90, 0 on the CPU              */
    int64_t device_memory_bytes;   /* CUDA global memory, 0 on the CPU    */
    /* Since 0.2; a struct_size of 0.1 leaves them alone.                 */
    int64_t workspace_bytes;  /* scratch memory the context uses now: its
                                 own, or the caller's                     */
    int workspace_from_caller; /* 1 when that is the caller's buffer
                                  (moes_set_workspace), else 0            */
} moes_context_info;

/* Describes the context: backend, why it was chosen, device or threads.
 * Returns MOES_ERR_NULL_POINTER or MOES_ERR_INVALID_ARGUMENT (struct_size
 * unknown). */
MOES_API int moes_context_get_info(moes_context *ctx, moes_context_info *info);

/* Which backends this build contains: a bit per moes_backend value
 * (1 << MOES_BACKEND_CPU always, 1 << MOES_BACKEND_CUDA when compiled with
 * CUDA). Returns MOES_ERR_NULL_POINTER when mask is NULL. */
MOES_API int moes_backends_compiled(unsigned *mask);

/* The detailed message of the last failed call on ctx (or, with ctx NULL,
 * of the last failed moes_context_create in this thread). "" when there
 * was none. The string is valid until the next call on the context. */
MOES_API const char *moes_last_error(const moes_context *ctx);

/* ------------------------------------------------------------------ */
/* Streams, synchronization and deferred errors                       */
/* ------------------------------------------------------------------ */

/* Sets the CUDA stream (a CUstream / cudaStream_t, NULL = the legacy
 * default stream) on which later calls are queued. On the CPU the value is
 * stored and ignored. moes_context_destroy waits for this stream, so it
 * must outlive the context (or be replaced first, e.g. by NULL). Returns
 * MOES_ERR_NULL_POINTER when ctx is NULL. */
MOES_API int moes_set_stream(moes_context *ctx, void *stream);

/* Waits for all work queued on the context's stream, then returns the first
 * data error found on the device since the last synchronize (and clears
 * it): MOES_ERR_INVALID_ID, MOES_ERR_INVALID_MAP,
 * MOES_ERR_INVALID_OUT_INDEX, MOES_ERR_INVALID_SCALE or MOES_ERR_CAPACITY;
 * or MOES_ERR_DEVICE, or MOES_ERR_NULL_POINTER (ctx). On the CPU there is
 * nothing to wait for: returns MOES_OK. */
MOES_API int moes_synchronize(moes_context *ctx);

/* Returns, without waiting, the data error already found by finished work
 * (MOES_OK when none so far; always MOES_OK on the CPU, which defers no
 * error), with its message in moes_last_error. Does not clear it. Returns
 * MOES_ERR_NULL_POINTER (ctx NULL: no message is recorded), the data
 * error's status (MOES_ERR_INVALID_ID, MOES_ERR_INVALID_MAP,
 * MOES_ERR_INVALID_OUT_INDEX, MOES_ERR_INVALID_SCALE, MOES_ERR_CAPACITY),
 * or MOES_ERR_DEVICE (the driver failed to query the stream or to read
 * the error). */
MOES_API int moes_get_error(moes_context *ctx);

/* ------------------------------------------------------------------ */
/* Timing                                                             */
/* ------------------------------------------------------------------ */

#define MOES_TIMESTAMP_SLOTS 16

/* Records a timestamp in slot (0 .. MOES_TIMESTAMP_SLOTS - 1): on CUDA an
 * event queued on the context's stream (it does not wait), on the CPU the
 * monotonic clock now. Returns MOES_ERR_NULL_POINTER,
 * MOES_ERR_INVALID_ARGUMENT (slot), MOES_ERR_DEVICE. */
MOES_API int moes_timestamp(moes_context *ctx, int slot);

/* Milliseconds from the timestamp in slot `from` to the one in slot `to`,
 * waiting for the latter to be reached. Returns MOES_ERR_NULL_POINTER,
 * MOES_ERR_INVALID_ARGUMENT (a slot out of range or never recorded),
 * MOES_ERR_DEVICE. */
MOES_API int moes_elapsed_ms(moes_context *ctx, int from, int to, double *ms);

/* ------------------------------------------------------------------ */
/* Memory on the context's backend                                    */
/* ------------------------------------------------------------------ */

/* Allocates bytes (> 0) of backend memory: host memory aligned to 64 bytes
 * on the CPU, device memory on CUDA. Returns MOES_ERR_NULL_POINTER,
 * MOES_ERR_INVALID_SIZE, MOES_ERR_OUT_OF_MEMORY. */
MOES_API int moes_malloc(moes_context *ctx, void **ptr, int64_t bytes);

/* Frees memory from moes_malloc. NULL ptr is accepted and does nothing
 * (MOES_OK). Returns MOES_ERR_NULL_POINTER (ctx), MOES_ERR_INVALID_ARGUMENT
 * (on CUDA, ptr is not the start of device memory: host memory, memory
 * freed already, or an address inside an allocation; nothing is freed and
 * the message names ptr), MOES_ERR_DEVICE. */
MOES_API int moes_free(moes_context *ctx, void *ptr);

/* Copies bytes from host memory to backend memory, from backend memory to
 * host memory, and within backend memory. These wait until the copy is
 * done (on CUDA they are ordered on the context's stream). bytes == 0
 * copies nothing, and then the pointers are not looked at. Returns
 * MOES_ERR_NULL_POINTER (ctx; a pointer NULL while bytes > 0),
 * MOES_ERR_INVALID_SIZE (bytes < 0), MOES_ERR_INVALID_ARGUMENT (on CUDA,
 * a pointer that must be device memory is host memory the GPU cannot
 * access: dst of moes_copy_to_backend, src of moes_copy_to_host, dst or
 * src of moes_copy_within, named in the message), MOES_ERR_DEVICE. */
MOES_API int moes_copy_to_backend(moes_context *ctx, void *dst,
                                  const void *host_src, int64_t bytes);
MOES_API int moes_copy_to_host(moes_context *ctx, void *host_dst,
                               const void *src, int64_t bytes);
MOES_API int moes_copy_within(moes_context *ctx, void *dst, const void *src,
                              int64_t bytes);

/* Sets bytes of backend memory to value (0..255), asynchronously on CUDA.
 * Returns MOES_ERR_NULL_POINTER (ctx; ptr while bytes > 0),
 * MOES_ERR_INVALID_SIZE (bytes < 0), MOES_ERR_INVALID_ARGUMENT (value
 * outside 0..255; on CUDA, ptr is host memory the GPU cannot access, named
 * in the message), MOES_ERR_DEVICE. */
MOES_API int moes_fill(moes_context *ctx, void *ptr, int value, int64_t bytes);

/* The longest pattern moes_fill_rows writes, in bytes. */
#define MOES_FILL_ROWS_MAX_PATTERN 2048

/* Writes the pattern_bytes bytes at pattern (host memory) to the start of
 * each of rows rows of backend memory, the first at dst and each next one
 * row_stride bytes further; the bytes between the end of one row's copy
 * and the next row are not touched. One call sets a field of every record
 * of an array of structs (an index column to -1 and a scale column to 1.0,
 * say) where moes_fill could only set whole bytes of everything. Any
 * alignment. Like moes_fill it is asynchronous on CUDA (one kernel on the
 * context's stream, whatever earlier calls found); the pattern's bytes are
 * taken when the call is made, so the caller may change them at once, and
 * a CUDA graph that captured the call writes the bytes of the capture.
 * Since 0.3. Returns MOES_ERR_NULL_POINTER (ctx; dst or pattern when rows
 * > 0), MOES_ERR_INVALID_SIZE (rows < 0, pattern_bytes outside 1 ..
 * MOES_FILL_ROWS_MAX_PATTERN), MOES_ERR_INVALID_STRIDE (rows > 1 and
 * row_stride < pattern_bytes: the rows' copies would overlap),
 * MOES_ERR_OVERFLOW (the last row's end, (rows - 1) * row_stride +
 * pattern_bytes bytes past dst, beyond INT64_MAX or the address space),
 * MOES_ERR_INVALID_ARGUMENT (CUDA: dst is host memory the GPU cannot
 * access), MOES_ERR_DEVICE. */
MOES_API int moes_fill_rows(moes_context *ctx, void *dst, int64_t rows,
                            int64_t row_stride, const void *pattern,
                            int64_t pattern_bytes);

/* Reserves the scratch memory that calls up to these sizes need, so that
 * later calls never allocate (a CUDA graph can capture them). After a
 * reservation a call that needs more returns MOES_ERR_WORKSPACE instead of
 * allocating. Without one, calls grow the workspace as needed, except
 * on CUDA while the stream is being captured into a graph, where a call
 * that would grow it returns MOES_ERR_WORKSPACE and launches nothing.
 * With the caller's workspace in place (moes_set_workspace) nothing is
 * allocated: MOES_ERR_WORKSPACE says that it is too small for these
 * sizes.
 * Returns MOES_ERR_NULL_POINTER, MOES_ERR_INVALID_SIZE (negative sizes,
 * n_experts < 1), MOES_ERR_OVERFLOW, MOES_ERR_OUT_OF_MEMORY,
 * MOES_ERR_WORKSPACE. */
MOES_API int moes_reserve_workspace(moes_context *ctx, int64_t n_tokens,
                                    int64_t top_k, int64_t n_experts);

/* The bytes of workspace that every call up to these sizes needs on
 * ctx's backend (count and scatter use it; the gather needs none): the
 * size to give moes_set_workspace. It depends on the backend and, on the
 * CPU, on the thread count. Returns MOES_ERR_NULL_POINTER,
 * MOES_ERR_INVALID_SIZE (negative sizes, top_k or n_experts < 1),
 * MOES_ERR_OVERFLOW. */
MOES_API int moes_workspace_size(moes_context *ctx, int64_t n_tokens,
                                 int64_t top_k, int64_t n_experts,
                                 int64_t *bytes);

/* Hands the context a workspace the caller owns (backend memory: device
 * memory on CUDA, host memory on the CPU; MOES_WORKSPACE_ALIGNMENT-byte
 * aligned). From then on calls take their scratch memory from it and
 * never allocate; a call that needs more than bytes returns
 * MOES_ERR_WORKSPACE. The context's own workspace is freed (on CUDA after
 * waiting for the stream). The buffer holds nothing from one call to the
 * next: it may be reused for other work ordered after the call (on CUDA,
 * later on the same stream), and replaced by another at any time. It is
 * never freed by the library. ptr NULL with bytes 0 gives it back: calls
 * then use the context's own workspace again, which grows as needed.
 * Returns MOES_ERR_NULL_POINTER, MOES_ERR_INVALID_SIZE,
 * MOES_ERR_INVALID_ARGUMENT (misaligned; on CUDA, memory the device
 * cannot access), MOES_ERR_DEVICE. */
MOES_API int moes_set_workspace(moes_context *ctx, void *ptr, int64_t bytes);

/* The alignment moes_set_workspace requires (cudaMalloc, moes_malloc and
 * the usual allocators give more). */
#define MOES_WORKSPACE_ALIGNMENT 16

/* ------------------------------------------------------------------ */
/* Routing: who goes where                                            */
/* ------------------------------------------------------------------ */

typedef struct moes_routing {
    size_t struct_size;        /* sizeof(moes_routing)                   */
    int64_t n_tokens;          /* N >= 0                                 */
    int64_t top_k;             /* K >= 1                                 */
    const void *ids;           /* [N][ids_stride] expert ids             */
    int ids_dtype;             /* MOES_DTYPE_INT32 or MOES_DTYPE_INT64   */
    int64_t ids_stride;        /* >= K; 0 means K                        */
    const int32_t *expert_map; /* [n_experts_global] or NULL             */
    int64_t n_experts_global;  /* E_global >= 1: ids are < this. Without
                                  a map it must equal n_experts.         */
    int64_t n_experts;         /* E >= 1 local experts                   */
} moes_routing;

/* Sets routing to zero sizes and NULL pointers, top_k to 1 and ids_dtype
 * to MOES_DTYPE_INT32, with struct_size filled.
 * Returns MOES_ERR_NULL_POINTER when routing is NULL. */
MOES_API int moes_routing_init(moes_routing *routing);

/* counts[e] = number of (t, k) whose local expert is e, for e < E.
 * counts is an output of E entries of counts_dtype (int32 or int64).
 * Returns MOES_ERR_NULL_POINTER, MOES_ERR_INVALID_SIZE,
 * MOES_ERR_INVALID_STRIDE, MOES_ERR_INVALID_DTYPE, MOES_ERR_OVERFLOW,
 * MOES_ERR_INVALID_ARGUMENT, MOES_ERR_OVERLAP, MOES_ERR_MISALIGNED,
 * MOES_ERR_WORKSPACE, MOES_ERR_OUT_OF_MEMORY, and (deferred on CUDA)
 * MOES_ERR_INVALID_ID, MOES_ERR_INVALID_MAP; counts is then unchanged. */
MOES_API int moes_count(moes_context *ctx, const moes_routing *routing,
                        void *counts, int counts_dtype);

/* Each token's distinct local experts: out[t][j] for j < K is the j-th
 * smallest of the local experts that token t's choices map to, each once,
 * and -1 after the last of them (a token whose choices are all -1, or
 * mapped to -1, gets a row of -1). out is [N][out_stride] of out_dtype
 * (int32 or int64), out_stride >= K, 0 meaning K; entries past K of a
 * row are not touched. Used as ids with top_k K, ids_stride out_stride
 * and E experts, it sends a token once to each expert it chose, however
 * many of its choices name that expert: with an expert_map from experts
 * to devices or ranks, once to each of those (the ep layer's dispatch
 * does this). Cost follows N*K, whatever E is. Returns the codes of
 * moes_count, and MOES_ERR_INVALID_STRIDE for an out_stride below K;
 * out is then unchanged. */
MOES_API int moes_distinct_experts(moes_context *ctx,
                                   const moes_routing *routing, void *out,
                                   int out_dtype, int64_t out_stride);

/* ------------------------------------------------------------------ */
/* Scatter                                                            */
/* ------------------------------------------------------------------ */

typedef enum moes_layout {
    /* Expert e's rows start at start[e] = sum over e' < e of
     * roundup(counts[e'], A); rows start[e] + counts[e] .. up to the next
     * multiple of A are padding. M = start[E-1] + roundup(counts[E-1], A).
     * Reports m_indices[row] (e on real rows, -1 on padding and on the
     * tail up to the capacity). */
    MOES_LAYOUT_CONTIGUOUS = 1,
    /* The same rows, reported as expert_start[e] and expert_end[e] (the end
     * of e's aligned block); m_indices is optional. */
    MOES_LAYOUT_GROUPED = 2,
    /* Expert e owns rows e*C .. e*C + C - 1 (C = capacity, per expert).
     * masked_m[e] = min(counts[e], C). The first C (t, k) in t*K + k order
     * are kept; the rest get out_index -1 and are counted in n_dropped. */
    MOES_LAYOUT_MASKED = 3
} moes_layout;

typedef enum moes_scale_format {
    MOES_SCALES_NONE = 0,  /* no scales                                   */
    MOES_SCALES_FP32 = 1,  /* out_scales[row * rs + s * cs], fp32         */
    /* Packed UE8M0: the exponent byte (bits >> 23) & 0xFF of scales
     * 4w .. 4w+3 in one uint32 word (low byte first, zero bytes past S),
     * stored at out_scales[row * rs + w * cs], w < ceil(S / 4). Every
     * scale of every token must be a positive, finite, normal power of
     * two (sign 0, mantissa 0, exponent 1..254), else
     * MOES_ERR_INVALID_SCALE (a data error: nothing written).            */
    MOES_SCALES_UE8M0 = 2
} moes_scale_format;

/* Padding rows (inside aligned blocks, the tail up to the capacity, and
 * masked rows past masked_m) get zero data and zero scales. Without it
 * they are not touched. */
#define MOES_SCATTER_ZERO_PADDING 0x1u
/* m_indices of padding rows inside an expert's aligned block (or its
 * masked block) say that expert instead of -1. The tail stays -1. */
#define MOES_SCATTER_LABEL_PADDING 0x2u
/* expert_end[e] is the end of e's real rows, expert_start[e] + counts[e]
 * (masked: + masked_m[e]), instead of the end of its aligned (or masked)
 * block: the "psum" form of grouped GEMMs that take each group's last
 * row. Since 0.3. */
#define MOES_SCATTER_UNPADDED_END 0x4u
/* Checks the arguments as the call would and returns: every argument
 * error it would return (on CUDA the buffers' own check too: memory the
 * device can reach), MOES_ERR_WORKSPACE where its workspace could not be
 * had, but no data error, since nothing is read; no buffer is read or
 * written, nothing is queued or allocated. With the routing of a call still
 * to come, it tells whether that call can fail before its data exist:
 * expert-parallel ranks agree on it before they exchange. Since 0.3. */
#define MOES_SCATTER_CHECK_ONLY 0x8u

typedef struct moes_scatter_args {
    size_t struct_size;       /* sizeof(moes_scatter_args)                 */
    int layout;               /* moes_layout                               */
    int64_t alignment;        /* A >= 1 (used by contiguous and grouped;
                                 checked for every layout; default 128)    */
    int64_t capacity;         /* rows of out (contiguous, grouped), or rows
                                 per expert C (masked); >= 0. 0 is valid
                                 when nothing is placed, and with masked
                                 drops every choice                        */
    unsigned flags;           /* MOES_SCATTER_*                            */

    /* Rows in: x[N][x_stride] of x_dtype, hidden elements used. */
    const void *x;
    int x_dtype;              /* fp8 e4m3/e5m2, bf16, fp16, fp32           */
    int64_t hidden;           /* H >= 1                                    */
    int64_t x_stride;         /* >= H; 0 means H                           */

    /* Optional per-block scales in: x_scales[N][x_scales_stride] fp32,
     * S = ceil(H / scale_block) of them used. NULL for none. */
    const float *x_scales;
    int64_t scale_block;      /* B >= 1 (default 128)                      */
    int64_t x_scales_stride;  /* >= S; 0 means S                           */

    /* Rows out: out[capacity rows (E*C when masked)][out_stride]. */
    void *out;
    int64_t out_stride;       /* >= H; 0 means H                           */

    /* Scales out, required iff x_scales is given. Strides in elements
     * (floats or uint32 words); rows must not overlap. 0 and 0 mean
     * row-major and dense; one of them 0 alone is an error. */
    void *out_scales;
    int out_scales_format;    /* moes_scale_format                         */
    int64_t out_scales_row_stride;
    int64_t out_scales_col_stride;

    /* Index outputs, all of index_dtype. */
    int index_dtype;          /* MOES_DTYPE_INT32 or MOES_DTYPE_INT64      */
    void *out_index;          /* [N][out_index_stride], required           */
    int64_t out_index_stride; /* >= K; 0 means K                           */
    void *counts;             /* [E] or NULL                               */
    void *expert_start;       /* [E] or NULL                               */
    void *expert_end;         /* [E]: required for GROUPED, else optional  */
    void *m_indices;          /* [rows of out]: required for CONTIGUOUS    */
    void *masked_m;           /* [E]: required for MASKED, else must be NULL */
    int64_t *n_dropped;       /* one int64 (backend memory); MASKED only,
                                 optional                                  */

    /* Since 0.3 (a struct_size of 0.2 means NULL and -1). */
    /* [rows of out] or NULL: row_source[row] = t*K + k of the choice on
     * that row, row_source_pad on every row that holds none (padding in
     * a block, the tail up to the capacity, masked rows past masked_m):
     * the row-to-choice map of fused-MoE GEMMs that read x in place
     * (row_source[row] / K is the token).                                */
    void *row_source;
    int64_t row_source_pad;   /* any value of index_dtype; default -1     */
} moes_scatter_args;

/* Sets args to the defaults (contiguous, A = 128, B = 128, bf16 rows, no
 * scales, int32 indices, zero strides meaning dense, capacity 0,
 * row_source_pad -1) with NULL buffers, and struct_size to struct_size:
 * the size of the caller's struct, which the macro moes_scatter_args_init
 * below passes (sizeof the struct as the caller's header declares it),
 * or that of an earlier version. No byte past struct_size is written, so
 * a program built against an older header is safe with a newer library.
 * Returns MOES_ERR_NULL_POINTER when args is NULL, and
 * MOES_ERR_INVALID_ARGUMENT (args left alone) when struct_size is the
 * size of the struct in no version. Since 0.3. */
MOES_API int moes_scatter_args_init_sized(moes_scatter_args *args,
                                          size_t struct_size);

/* The same for the 0.1 and 0.2 struct, which ends at n_dropped: the
 * function that programs built against those versions call. Programs
 * built against this header call moes_scatter_args_init_sized through
 * this macro. Returns MOES_ERR_NULL_POINTER when args is NULL. */
MOES_API int moes_scatter_args_init(moes_scatter_args *args);
#define moes_scatter_args_init(args) \
    moes_scatter_args_init_sized((args), sizeof *(args))

/* The scatter. See moes_layout for where rows go. For every valid (t, k),
 * its output row is a byte copy of x[t] and its scales are copied (fp32)
 * or packed (UE8M0); out_index[t][k] is that row, or -1.
 *
 * INDEX ONLY: with x, x_scales, out and out_scales all NULL no row is
 * copied and hidden, x_dtype and the row strides are not read; every
 * index output (out_index, m_indices, row_source, the [E] arrays) comes
 * out as it would with rows, for GEMMs that read x in place through
 * row_source. ZERO_PADDING then has no rows to zero: with a capacity
 * above 0 it is MOES_ERR_INVALID_FLAGS. Validation and errors are the
 * same as with rows.
 * Returns MOES_ERR_NULL_POINTER, MOES_ERR_INVALID_SIZE,
 * MOES_ERR_INVALID_STRIDE, MOES_ERR_INVALID_DTYPE, MOES_ERR_INVALID_FLAGS,
 * MOES_ERR_INVALID_ALIGNMENT, MOES_ERR_OVERFLOW, MOES_ERR_INVALID_ARGUMENT,
 * MOES_ERR_WORKSPACE, MOES_ERR_OUT_OF_MEMORY, MOES_ERR_OVERLAP,
 * MOES_ERR_MISALIGNED, and (deferred on CUDA) MOES_ERR_INVALID_ID,
 * MOES_ERR_INVALID_MAP, MOES_ERR_CAPACITY, MOES_ERR_INVALID_SCALE: then
 * no output buffer is modified. */
MOES_API int moes_scatter(moes_context *ctx, const moes_routing *routing,
                          const moes_scatter_args *args);

/* The fewest rows that can never be too small for a contiguous or grouped
 * scatter: roundup(N*K + min(E, N*K) * (A - 1), A); for the masked layout,
 * the capacity per expert that never drops: N*K. (0 when N is 0.)
 * ctx may be NULL (the message is then not kept).
 * Returns MOES_ERR_NULL_POINTER (capacity), MOES_ERR_INVALID_SIZE,
 * MOES_ERR_INVALID_ALIGNMENT, MOES_ERR_INVALID_ARGUMENT (layout),
 * MOES_ERR_OVERFLOW. */
MOES_API int moes_scatter_capacity(moes_context *ctx, int layout,
                                   int64_t n_tokens, int64_t top_k,
                                   int64_t n_experts, int64_t alignment,
                                   int64_t *capacity);

/* ------------------------------------------------------------------ */
/* Gather                                                             */
/* ------------------------------------------------------------------ */

/* Start from the old out[t][h] instead of 0 (e.g. a shared expert's or a
 * residual output already there). */
#define MOES_GATHER_ACCUMULATE 0x1u
/* As MOES_SCATTER_CHECK_ONLY: the arguments checked, nothing read,
 * written or queued; out_index's entries are data, not checked. Since
 * 0.3. */
#define MOES_GATHER_CHECK_ONLY 0x2u

typedef struct moes_gather_args {
    size_t struct_size;       /* sizeof(moes_gather_args)                  */
    unsigned flags;           /* MOES_GATHER_*                             */
    int64_t n_tokens;         /* N >= 0                                    */
    int64_t top_k;            /* K >= 1                                    */
    int64_t hidden;           /* H >= 1                                    */

    const void *y;            /* expert outputs [y_rows][y_stride]         */
    int y_dtype;              /* bf16, fp16, fp32                          */
    int64_t y_rows;           /* M >= 0: out_index entries must be < M      */
    int64_t y_stride;         /* >= H; 0 means H                           */

    const void *out_index;    /* [N][out_index_stride] from the scatter    */
    int index_dtype;          /* MOES_DTYPE_INT32 or MOES_DTYPE_INT64      */
    int64_t out_index_stride; /* >= K; 0 means K                           */

    const float *weights;     /* [N][weights_stride] fp32, NULL = all 1.0  */
    int64_t weights_stride;   /* >= K; 0 means K; unread without weights   */

    void *out;                /* [N][out_stride]                           */
    int out_dtype;            /* bf16, fp16, fp32                          */
    int64_t out_stride;       /* >= H; 0 means H                           */
} moes_gather_args;

/* Sets args to the defaults (top_k 1, bf16 y and out, int32 out_index,
 * dense strides, no flags) with NULL buffers and struct_size filled.
 * Returns MOES_ERR_NULL_POINTER when args is NULL. */
MOES_API int moes_gather_args_init(moes_gather_args *args);

/* out[t][h] = cvt(acc), acc = 0 (or old out[t][h] with ACCUMULATE), then
 * for k = 0 .. K-1 with out_index[t][k] >= 0:
 *     acc = fp32(acc + fp32(w[t][k] * y[out_index[t][k]][h]))
 * cvt rounds to nearest even. Every NaN written is canonical, fp32
 * included (quiet, no payload): one that came in (the old out, y or w)
 * keeps its sign (of acc, else w, else y in the step that met it), one
 * the arithmetic made (inf - inf, 0 * inf) is +NaN.
 * Returns MOES_ERR_NULL_POINTER, MOES_ERR_INVALID_SIZE,
 * MOES_ERR_INVALID_STRIDE, MOES_ERR_INVALID_DTYPE, MOES_ERR_INVALID_FLAGS,
 * MOES_ERR_OVERFLOW, MOES_ERR_INVALID_ARGUMENT, MOES_ERR_OVERLAP,
 * MOES_ERR_MISALIGNED, MOES_ERR_WORKSPACE, MOES_ERR_OUT_OF_MEMORY, and
 * (deferred on CUDA) MOES_ERR_INVALID_OUT_INDEX: then out is unchanged. */
MOES_API int moes_gather(moes_context *ctx, const moes_gather_args *args);

#ifdef __cplusplus
}
#endif

#endif /* MOESCATTER_H */
