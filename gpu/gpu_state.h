/* SPDX-License-Identifier: MIT */
/*
 * gpu_state.h - what the CUDA backend's host files share: its state, the
 * kernels of the embedded module, and small helpers around driver calls.
 */
#ifndef MOES_GPU_STATE_H
#define MOES_GPU_STATE_H

#include "gpu_driver.h"
#include "gpu_kernel_args.h"
#include "internal.h"

/* The kernels, in the order of gpu_kernel_names (gpu_backend.c). */
enum gpu_kernel {
    GPU_K_PREPARE_ROUTE,
    GPU_K_COUNT_TILES,
    GPU_K_SCAN_ROUTING,
    GPU_K_SCAN_RANGES,
    GPU_K_PLACE_AND_LABEL,
    GPU_K_COPY_ROWS,
    GPU_K_COPY_ROWS_WIDE,
    GPU_K_PLACE_COPY_ROWS,
    GPU_K_ZERO_PADDING,
    GPU_K_EXPERT_OUTPUTS,
    GPU_K_CHECK_OUT_INDEX,
    /* The gather, one kernel per (y, out) dtype pair, in the order of
     * gpu_gather_kernel (gpu_ops.c): y fp32, bf16, fp16, each with out
     * fp32, bf16, fp16. */
    GPU_K_GATHER_FP32_TO_FP32,
    GPU_K_GATHER_FP32_TO_BF16,
    GPU_K_GATHER_FP32_TO_FP16,
    GPU_K_GATHER_BF16_TO_FP32,
    GPU_K_GATHER_BF16_TO_BF16,
    GPU_K_GATHER_BF16_TO_FP16,
    GPU_K_GATHER_FP16_TO_FP32,
    GPU_K_GATHER_FP16_TO_BF16,
    GPU_K_GATHER_FP16_TO_FP16,
    /* The same nine with the small calls' shape, in the same order. */
    GPU_K_GATHER_SMALL_FP32_TO_FP32,
    GPU_K_GATHER_SMALL_FP32_TO_BF16,
    GPU_K_GATHER_SMALL_FP32_TO_FP16,
    GPU_K_GATHER_SMALL_BF16_TO_FP32,
    GPU_K_GATHER_SMALL_BF16_TO_BF16,
    GPU_K_GATHER_SMALL_BF16_TO_FP16,
    GPU_K_GATHER_SMALL_FP16_TO_FP32,
    GPU_K_GATHER_SMALL_FP16_TO_BF16,
    GPU_K_GATHER_SMALL_FP16_TO_FP16,
    /* The same nine again, of the small calls' shape with the check of
     * out_index in every block (gather.cu), in the same order. */
    GPU_K_GATHER_CHECKED_FP32_TO_FP32,
    GPU_K_GATHER_CHECKED_FP32_TO_BF16,
    GPU_K_GATHER_CHECKED_FP32_TO_FP16,
    GPU_K_GATHER_CHECKED_BF16_TO_FP32,
    GPU_K_GATHER_CHECKED_BF16_TO_BF16,
    GPU_K_GATHER_CHECKED_BF16_TO_FP16,
    GPU_K_GATHER_CHECKED_FP16_TO_FP32,
    GPU_K_GATHER_CHECKED_FP16_TO_BF16,
    GPU_K_GATHER_CHECKED_FP16_TO_FP16,
    GPU_K_ROUTE_SMALL,
    GPU_K_DISTINCT_ROWS,
    GPU_K_SCATTER_SMALL,
    GPU_K_SCATTER_SMALL_UE8M0,
    GPU_K_SCATTER_SMALL_STAGED,
    GPU_K_SCATTER_SMALL_UE8M0_STAGED,
    GPU_K_SCATTER_GRID,
    GPU_K_SCATTER_GRID_LISTED,
    GPU_K_SORT_MOVE,
    GPU_K_SORT_GRID,
    GPU_K_FILL_ROWS,
    GPU_K_COUNT
};

extern const char *const gpu_kernel_names[GPU_K_COUNT];

/* Pointers found reachable by the device, remembered so that a repeated
 * call checks its buffers without asking the driver: direct-mapped, one
 * pointer value per entry (a power of two). */
#define GPU_POINTER_CACHE 64

typedef struct gpu_state {
    gpu_driver drv;
    CUdevice device;
    CUcontext primary;
    CUmodule module;
    CUfunction kernels[GPU_K_COUNT];
    CUdeviceptr dev_state;        /* one gpu_device_state                  */
    CUdeviceptr workspace;        /* tile table, counts, start             */
    int64_t workspace_bytes;
    int workspace_from_caller;    /* moes_set_workspace's: never freed here */
    int pageable_access;          /* the device reads any host memory      */
    uintptr_t reachable[GPU_POINTER_CACHE]; /* 0: empty entry             */
    CUevent events[MOES_TIMESTAMP_SLOTS];
    moes_data_error known;        /* the record as last read from the GPU  */
    char device_name[256];
    int multiprocessors;
    int overlap_launches;         /* gpu_launch_next may overlap           */
    int cooperative_launches;     /* gpu_launch_cooperative may be tried   */
    int64_t grid_stage_bytes;     /* moes_scatter_grid's dynamic shared
                                   * memory at most (0: none)              */
    int64_t small_stage_bytes;    /* the one-launch scatter's (both forms) */
    int compute_capability;
    int64_t memory_bytes;
} gpu_state;

static inline gpu_state *gpu_state_of(moes_context *ctx)
{
    return (gpu_state *)ctx->state;
}

static inline CUstream gpu_stream_of(const moes_context *ctx)
{
    return (CUstream)ctx->stream;
}

/* Turns a failed driver call into MOES_ERR_DEVICE with a message. */
int gpu_fail(moes_context *ctx, CUresult r, const char *what);

/* Makes the device's primary context current on the calling thread. */
int gpu_enter(moes_context *ctx);

/* Queues kernel k on the context's stream with one struct argument. */
int gpu_launch(moes_context *ctx, enum gpu_kernel k, int64_t grid,
               unsigned block, void *args);
/* The same for a kernel that may start while the kernel before it on the
 * stream still runs (where the GPU and driver allow) and waits for it
 * inside (moes_dev_wait_prior, kernel_common.cuh): one that follows
 * another of the same call, or the first of a call whose blocks cannot
 * crowd onto the first multiprocessors the kernel before it frees
 * (gpu_ops.c says which). */
int gpu_launch_next(moes_context *ctx, enum gpu_kernel k, int64_t grid,
                    unsigned block, void *args);
/* gpu_launch_next with shared_bytes of dynamic shared memory a block. */
int gpu_launch_next_shared(moes_context *ctx, enum gpu_kernel k, int64_t grid,
                           unsigned block, int64_t shared_bytes, void *args);

/* A launch whose blocks are all resident at once, for a kernel with a
 * grid-wide barrier, with shared_bytes of dynamic shared memory a block.
 * *launched is 0 (and the status MOES_OK) when the context cannot launch
 * so: no cooperative launch on this device or driver, or the device could
 * not hold the grid at once, after which the context stops trying. The
 * caller then takes another path. */
int gpu_launch_cooperative(moes_context *ctx, enum gpu_kernel k,
                           int64_t grid, unsigned block, int64_t shared_bytes,
                           void *args, int *launched);

/* 1 when the context's stream is being captured into a graph, 0 when
 * each launch runs as it is queued, -1 when the driver cannot say (no
 * cuStreamIsCapturing, or it failed). */
int gpu_capture_status(moes_context *ctx);

/* Blocks of `per_block` items for n items, capped for grid-stride loops. */
int64_t gpu_grid_for(int64_t n, int64_t per_block);

/* Makes the workspace at least bytes long: grows it unless a reservation
 * forbids (then MOES_ERR_WORKSPACE). */
int gpu_ensure_workspace(moes_context *ctx, int64_t bytes);

/* The caller's workspace (moes_set_workspace, moes_workspace_size) and
 * the bytes the calls use now (gpu_memory.c). */
int gpu_workspace_size(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                       int64_t n_experts, int64_t *bytes);
int gpu_set_workspace(moes_context *ctx, void *ptr, int64_t bytes);
int gpu_workspace_held(moes_context *ctx, int64_t *bytes);

/* MOES_ERR_INVALID_ARGUMENT naming the argument when ptr (not NULL) is
 * memory the device cannot access, such as plain malloc'd host memory on
 * a GPU without pageable memory access; the buffers of one call at once
 * (those that hold at least one element). Answers are cached per pointer
 * (gpu_state.reachable). */
int gpu_check_pointer(moes_context *ctx, const char *name, const void *ptr);
int gpu_check_count_pointers(moes_context *ctx, const moes_count_plan *plan);
int gpu_check_scatter_pointers(moes_context *ctx,
                               const moes_scatter_plan *plan);
int gpu_check_gather_pointers(moes_context *ctx,
                              const moes_gather_plan *plan);

/* The tiles of N*K choices for E experts (see route_count.cu), the
 * workspace a call needs, and a bound on it that grows with each size,
 * for the reservation. Return 0 on overflow. */
void gpu_tiles_for(int64_t n_choices, int64_t n_experts, int64_t *tiles,
                   int64_t *tile_size);
int gpu_route_workspace_bytes(int64_t n_choices, int64_t n_experts,
                              int64_t *bytes);
int gpu_reserved_workspace_bytes(int64_t n_choices, int64_t n_experts,
                                 int64_t *bytes);

/* The operations (gpu_ops.c) and the memory and stream calls
 * (gpu_memory.c). */
int gpu_check_distinct_pointers(moes_context *ctx,
                                const moes_distinct_plan *plan);
int gpu_distinct(moes_context *ctx, const moes_distinct_plan *plan,
                 moes_data_error *err);
int gpu_count(moes_context *ctx, const moes_count_plan *plan,
              moes_data_error *err);
int gpu_scatter(moes_context *ctx, const moes_scatter_plan *plan,
                moes_data_error *err);
int gpu_gather(moes_context *ctx, const moes_gather_plan *plan,
               moes_data_error *err);
int gpu_check_scatter(moes_context *ctx, const moes_scatter_plan *plan);
int gpu_check_gather(moes_context *ctx, const moes_gather_plan *plan);
int gpu_reserve(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                int64_t n_experts);
int gpu_malloc(moes_context *ctx, void **ptr, int64_t bytes);
int gpu_free(moes_context *ctx, void *ptr);
int gpu_copy_to_backend(moes_context *ctx, void *dst, const void *src,
                        int64_t bytes);
int gpu_copy_to_host(moes_context *ctx, void *dst, const void *src,
                     int64_t bytes);
int gpu_copy_within(moes_context *ctx, void *dst, const void *src,
                    int64_t bytes);
int gpu_fill(moes_context *ctx, void *ptr, int value, int64_t bytes);
int gpu_fill_rows(moes_context *ctx, void *dst, int64_t rows,
                  int64_t row_stride, const void *pattern,
                  int64_t pattern_bytes);
int gpu_synchronize(moes_context *ctx, moes_data_error *err);
int gpu_get_error(moes_context *ctx, moes_data_error *err);
int gpu_timestamp(moes_context *ctx, int slot);
int gpu_elapsed_ms(moes_context *ctx, int from, int to, double *ms);

#endif /* MOES_GPU_STATE_H */
