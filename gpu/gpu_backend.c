/* SPDX-License-Identifier: MIT */
/*
 * gpu_backend.c - the CUDA backend's table: opening the driver, the device,
 * its primary context and the embedded kernels; closing; the device's
 * description; and the helpers every host file uses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_state.h"

const int moes_cuda_compiled = 1;

/* The fatbin nvcc built from moes_kernels.cu (bin2c'd at build time). */
extern const unsigned long long moes_gpu_fatbin[];

const char *const gpu_kernel_names[GPU_K_COUNT] = {
    [GPU_K_PREPARE_ROUTE] = "moes_prepare_route",
    [GPU_K_COUNT_TILES] = "moes_count_tiles",
    [GPU_K_SCAN_ROUTING] = "moes_scan_routing",
    [GPU_K_SCAN_RANGES] = "moes_scan_ranges",
    [GPU_K_PLACE_AND_LABEL] = "moes_place_and_label",
    [GPU_K_COPY_ROWS] = "moes_copy_rows",
    [GPU_K_COPY_ROWS_WIDE] = "moes_copy_rows_wide",
    [GPU_K_PLACE_COPY_ROWS] = "moes_place_copy_rows",
    [GPU_K_ZERO_PADDING] = "moes_zero_padding",
    [GPU_K_EXPERT_OUTPUTS] = "moes_expert_outputs",
    [GPU_K_CHECK_OUT_INDEX] = "moes_check_out_index",
    [GPU_K_GATHER_FP32_TO_FP32] = "moes_gather_fp32_to_fp32",
    [GPU_K_GATHER_FP32_TO_BF16] = "moes_gather_fp32_to_bf16",
    [GPU_K_GATHER_FP32_TO_FP16] = "moes_gather_fp32_to_fp16",
    [GPU_K_GATHER_BF16_TO_FP32] = "moes_gather_bf16_to_fp32",
    [GPU_K_GATHER_BF16_TO_BF16] = "moes_gather_bf16_to_bf16",
    [GPU_K_GATHER_BF16_TO_FP16] = "moes_gather_bf16_to_fp16",
    [GPU_K_GATHER_FP16_TO_FP32] = "moes_gather_fp16_to_fp32",
    [GPU_K_GATHER_FP16_TO_BF16] = "moes_gather_fp16_to_bf16",
    [GPU_K_GATHER_FP16_TO_FP16] = "moes_gather_fp16_to_fp16",
    [GPU_K_GATHER_SMALL_FP32_TO_FP32] = "moes_gather_small_fp32_to_fp32",
    [GPU_K_GATHER_SMALL_FP32_TO_BF16] = "moes_gather_small_fp32_to_bf16",
    [GPU_K_GATHER_SMALL_FP32_TO_FP16] = "moes_gather_small_fp32_to_fp16",
    [GPU_K_GATHER_SMALL_BF16_TO_FP32] = "moes_gather_small_bf16_to_fp32",
    [GPU_K_GATHER_SMALL_BF16_TO_BF16] = "moes_gather_small_bf16_to_bf16",
    [GPU_K_GATHER_SMALL_BF16_TO_FP16] = "moes_gather_small_bf16_to_fp16",
    [GPU_K_GATHER_SMALL_FP16_TO_FP32] = "moes_gather_small_fp16_to_fp32",
    [GPU_K_GATHER_SMALL_FP16_TO_BF16] = "moes_gather_small_fp16_to_bf16",
    [GPU_K_GATHER_SMALL_FP16_TO_FP16] = "moes_gather_small_fp16_to_fp16",
    [GPU_K_GATHER_CHECKED_FP32_TO_FP32] = "moes_gather_checked_fp32_to_fp32",
    [GPU_K_GATHER_CHECKED_FP32_TO_BF16] = "moes_gather_checked_fp32_to_bf16",
    [GPU_K_GATHER_CHECKED_FP32_TO_FP16] = "moes_gather_checked_fp32_to_fp16",
    [GPU_K_GATHER_CHECKED_BF16_TO_FP32] = "moes_gather_checked_bf16_to_fp32",
    [GPU_K_GATHER_CHECKED_BF16_TO_BF16] = "moes_gather_checked_bf16_to_bf16",
    [GPU_K_GATHER_CHECKED_BF16_TO_FP16] = "moes_gather_checked_bf16_to_fp16",
    [GPU_K_GATHER_CHECKED_FP16_TO_FP32] = "moes_gather_checked_fp16_to_fp32",
    [GPU_K_GATHER_CHECKED_FP16_TO_BF16] = "moes_gather_checked_fp16_to_bf16",
    [GPU_K_GATHER_CHECKED_FP16_TO_FP16] = "moes_gather_checked_fp16_to_fp16",
    [GPU_K_ROUTE_SMALL] = "moes_route_small",
    [GPU_K_DISTINCT_ROWS] = "moes_distinct_rows",
    [GPU_K_SCATTER_SMALL] = "moes_scatter_small",
    [GPU_K_SCATTER_SMALL_UE8M0] = "moes_scatter_small_ue8m0",
    [GPU_K_SCATTER_SMALL_STAGED] = "moes_scatter_small_staged",
    [GPU_K_SCATTER_SMALL_UE8M0_STAGED] = "moes_scatter_small_ue8m0_staged",
    [GPU_K_SCATTER_GRID] = "moes_scatter_grid",
    [GPU_K_SCATTER_GRID_LISTED] = "moes_scatter_grid_listed",
    [GPU_K_SORT_MOVE] = "moes_sort_move",
    [GPU_K_SORT_GRID] = "moes_sort_grid",
    [GPU_K_FILL_ROWS] = "moes_fill_pattern_rows",
};

int gpu_fail(moes_context *ctx, CUresult r, const char *what)
{
    gpu_state *s = gpu_state_of(ctx);
    return moes_set_error(ctx,
        r == GPU_CUDA_ERROR_OUT_OF_MEMORY ? MOES_ERR_OUT_OF_MEMORY
                                          : MOES_ERR_DEVICE,
        "%s failed: %s (CUDA error %d)", what,
        gpu_driver_error_string(&s->drv, r), r);
}

int gpu_enter(moes_context *ctx)
{
    gpu_state *s = gpu_state_of(ctx);
    CUresult r = s->drv.cuCtxSetCurrent(s->primary);
    return r ? gpu_fail(ctx, r, "making the primary context current")
             : MOES_OK;
}

/* cuLaunchKernelEx on the context's stream with one attribute. */
static CUresult launch_with(moes_context *ctx, enum gpu_kernel k,
                            int64_t grid, unsigned block,
                            int64_t shared_bytes, void *args,
                            gpu_launch_attribute *attr)
{
    gpu_state *s = gpu_state_of(ctx);
    void *params[1] = { args };
    gpu_launch_config config;
    memset(&config, 0, sizeof config);
    config.grid_x = (unsigned)(grid < 1 ? 1 : grid);
    config.grid_y = config.grid_z = 1;
    config.block_x = block;
    config.block_y = config.block_z = 1;
    config.shared_bytes = (unsigned)shared_bytes;
    config.stream = gpu_stream_of(ctx);
    config.attrs = attr;
    config.n_attrs = 1;
    return s->drv.cuLaunchKernelEx(&config, s->kernels[k], params, NULL);
}

static int launch(moes_context *ctx, enum gpu_kernel k, int64_t grid,
                  unsigned block, int64_t shared_bytes, void *args,
                  int overlap)
{
    gpu_state *s = gpu_state_of(ctx);
    void *params[1] = { args };
    CUresult r;
    if (grid < 1)
        grid = 1;
    if (overlap && s->overlap_launches) {
        gpu_launch_attribute attr;
        memset(&attr, 0, sizeof attr);
        attr.id = GPU_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmatic_stream_serialization_allowed = 1;
        r = launch_with(ctx, k, grid, block, shared_bytes, args, &attr);
    } else {
        r = s->drv.cuLaunchKernel(s->kernels[k], (unsigned)grid, 1, 1, block,
                                  1, 1, (unsigned)shared_bytes,
                                  gpu_stream_of(ctx), params, NULL);
    }
    if (r) {
        char what[96];
        snprintf(what, sizeof what, "launching %s", gpu_kernel_names[k]);
        return gpu_fail(ctx, r, what);
    }
    return MOES_OK;
}

int gpu_launch_cooperative(moes_context *ctx, enum gpu_kernel k,
                           int64_t grid, unsigned block, int64_t shared_bytes,
                           void *args, int *launched)
{
    gpu_state *s = gpu_state_of(ctx);
    gpu_launch_attribute attr;
    CUresult r;
    *launched = 0;
    if (!s->cooperative_launches)
        return MOES_OK;
    memset(&attr, 0, sizeof attr);
    attr.id = GPU_CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attr.value.cooperative = 1;
    r = launch_with(ctx, k, grid, block, shared_bytes, args, &attr);
    if (r == GPU_CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE) {
        /* The device cannot hold the grid at once now (shared with other
         * work, or partitioned): this context no longer tries. */
        s->cooperative_launches = 0;
        moes_log("%s: a grid of %lld blocks cannot be resident at once; "
                 "this context takes the grid path from now on",
                 gpu_kernel_names[k], (long long)grid);
        return MOES_OK;
    }
    if (r) {
        char what[96];
        snprintf(what, sizeof what, "launching %s", gpu_kernel_names[k]);
        return gpu_fail(ctx, r, what);
    }
    *launched = 1;
    return MOES_OK;
}

int gpu_launch(moes_context *ctx, enum gpu_kernel k, int64_t grid,
               unsigned block, void *args)
{
    return launch(ctx, k, grid, block, 0, args, 0);
}

int gpu_launch_next(moes_context *ctx, enum gpu_kernel k, int64_t grid,
                    unsigned block, void *args)
{
    return launch(ctx, k, grid, block, 0, args, 1);
}

int gpu_launch_next_shared(moes_context *ctx, enum gpu_kernel k, int64_t grid,
                           unsigned block, int64_t shared_bytes, void *args)
{
    return launch(ctx, k, grid, block, shared_bytes, args, 1);
}

int gpu_capture_status(moes_context *ctx)
{
    gpu_state *s = gpu_state_of(ctx);
    int status = 0;
    if (!s->drv.cuStreamIsCapturing ||
        s->drv.cuStreamIsCapturing(gpu_stream_of(ctx), &status))
        return -1;
    return status != 0;
}

int64_t gpu_grid_for(int64_t n, int64_t per_block)
{
    /* Enough blocks to fill any current GPU many times over; the kernels
     * loop over the rest. */
    const int64_t max_blocks = 1 << 20;
    int64_t blocks = n / per_block + (n % per_block != 0);
    return blocks < 1 ? 1 : blocks > max_blocks ? max_blocks : blocks;
}

/* Gives back what s holds on the device; every release is tried, and
 * the first failure is returned (0 when none). */
static CUresult release_device(gpu_state *s)
{
    CUresult first = 0;
#define KEEP_FIRST(call)                                                    \
    do {                                                                    \
        CUresult r_ = (call);                                               \
        if (!first)                                                         \
            first = r_;                                                     \
    } while (0)
    if (s->primary) {
        KEEP_FIRST(s->drv.cuCtxSetCurrent(s->primary));
        for (int i = 0; i < MOES_TIMESTAMP_SLOTS; i++)
            if (s->events[i])
                KEEP_FIRST(s->drv.cuEventDestroy(s->events[i]));
        if (s->workspace && !s->workspace_from_caller)
            KEEP_FIRST(s->drv.cuMemFree(s->workspace));
        if (s->dev_state)
            KEEP_FIRST(s->drv.cuMemFree(s->dev_state));
        if (s->module)
            KEEP_FIRST(s->drv.cuModuleUnload(s->module));
        KEEP_FIRST(s->drv.cuDevicePrimaryCtxRelease(s->device));
    }
#undef KEEP_FIRST
    return first;
}

/* The driver and s itself, once the device holds nothing of s's. */
static void free_state(gpu_state *s)
{
    gpu_driver_close(&s->drv);
    free(s);
}

static void release(gpu_state *s)
{
    (void)release_device(s);
    free_state(s);
}

/* The dynamic shared memory kernel k may take to stage rows
 * (moes_stage_rows, row_copy.cuh): what a block may have past the
 * kernel's own tables, allowed to it, or 0 where the driver cannot say or
 * allow it. */
static int64_t stage_bytes_of(gpu_state *s, enum gpu_kernel k)
{
    CUfunction f = s->kernels[k];
    int optin = 0, fixed = 0;
    /* The rows are staged by the copy engine of sm_90. */
    if (!s->drv.cuFuncSetAttribute || s->compute_capability < 90 ||
        s->drv.cuDeviceGetAttribute(
            &optin, GPU_CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            s->device) != 0 ||
        s->drv.cuFuncGetAttribute(
            &fixed, GPU_CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f) != 0 ||
        optin <= fixed ||
        s->drv.cuFuncSetAttribute(
            f, GPU_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            optin - fixed) != 0)
        return 0;
    return optin - fixed;
}

/* One size for two forms of a kernel that stage rows, which the host
 * sizes alike: the smaller of what each may have. */
static int64_t stage_bytes_of_both(gpu_state *s, enum gpu_kernel k1,
                                   enum gpu_kernel k2)
{
    const int64_t b1 = stage_bytes_of(s, k1), b2 = stage_bytes_of(s, k2);
    return b1 < b2 ? b1 : b2;
}

/* Loads the embedded module; says precisely why when it cannot. */
static int load_module(gpu_state *s, char *reason, size_t reason_len)
{
    CUresult r = s->drv.cuModuleLoadData(&s->module, moes_gpu_fatbin);
    if (r == GPU_CUDA_ERROR_NO_BINARY_FOR_GPU ||
        r == GPU_CUDA_ERROR_INVALID_PTX ||
        r == GPU_CUDA_ERROR_UNSUPPORTED_PTX_VERSION) {
        snprintf(reason, reason_len,
                 "no kernel image for this GPU (sm_%d): %s",
                 s->compute_capability, gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    if (r) {
        snprintf(reason, reason_len, "cannot load the kernels: %s",
                 gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    for (int k = 0; k < GPU_K_COUNT; k++) {
        r = s->drv.cuModuleGetFunction(&s->kernels[k], s->module,
                                       gpu_kernel_names[k]);
        if (r) {
            snprintf(reason, reason_len, "kernel %s missing: %s",
                     gpu_kernel_names[k], gpu_driver_error_string(&s->drv, r));
            return MOES_ERR_BACKEND_UNAVAILABLE;
        }
    }
    {
        /* Programmatic dependent launch needs a driver with
         * cuLaunchKernelEx and kernels whose waits were compiled in: code
         * built for sm_90 or later (kernel_common.cuh), which code
         * compiled at load time from older PTX is not. */
        int ptx = 0;
        r = s->drv.cuFuncGetAttribute(&ptx, GPU_CU_FUNC_ATTRIBUTE_PTX_VERSION,
                                      s->kernels[GPU_K_COPY_ROWS]);
        s->overlap_launches = !r && ptx >= 90 &&
                              s->drv.cuLaunchKernelEx != NULL;
    }
    {
        /* A grid-wide barrier needs its grid resident at once, which
         * only a cooperative launch promises. */
        int cooperative = 0;
        r = s->drv.cuDeviceGetAttribute(
            &cooperative, GPU_CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
            s->device);
        s->cooperative_launches = !r && cooperative &&
                                  s->drv.cuLaunchKernelEx != NULL;
    }
    s->grid_stage_bytes =
        s->cooperative_launches
            ? stage_bytes_of_both(s, GPU_K_SCATTER_GRID,
                                  GPU_K_SCATTER_GRID_LISTED)
            : 0;
    /* The one-launch scatter's forms that stage rows; the others are
     * left as they are. */
    s->small_stage_bytes = stage_bytes_of_both(
        s, GPU_K_SCATTER_SMALL_STAGED, GPU_K_SCATTER_SMALL_UE8M0_STAGED);
    return MOES_OK;
}

/* The device-side error state: record clear, no key. */
static int init_device_state(gpu_state *s, char *reason, size_t reason_len)
{
    CUresult r = s->drv.cuMemAlloc(&s->dev_state, sizeof(gpu_device_state));
    if (!r)
        r = s->drv.cuMemsetD8Async(s->dev_state, 0, sizeof(gpu_device_state),
                                   NULL);
    if (!r)
        r = s->drv.cuMemsetD8Async(
            s->dev_state + offsetof(gpu_device_state, key), 0xFF,
            sizeof(unsigned long long), NULL);
    if (!r)
        r = s->drv.cuStreamSynchronize(NULL);
    if (r) {
        snprintf(reason, reason_len, "cannot set up the device state: %s",
                 gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_DEVICE;
    }
    return MOES_OK;
}

static int describe_device(gpu_state *s, char *reason, size_t reason_len)
{
    int major = 0, minor = 0;
    size_t mem = 0;
    CUresult r = s->drv.cuDeviceGetName(s->device_name,
                                        (int)sizeof s->device_name, s->device);
    if (!r)
        r = s->drv.cuDeviceGetAttribute(
            &s->multiprocessors, GPU_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            s->device);
    if (!r)
        r = s->drv.cuDeviceGetAttribute(
            &major, GPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            s->device);
    if (!r)
        r = s->drv.cuDeviceGetAttribute(
            &minor, GPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            s->device);
    if (!r)
        r = s->drv.cuDeviceTotalMem(&mem, s->device);
    if (r) {
        snprintf(reason, reason_len, "cannot query the device: %s",
                 gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    s->compute_capability = major * 10 + minor;
    s->memory_bytes = (int64_t)mem;
    /* Optional knowledge: where the query fails, host pointers are
     * checked one by one (gpu_check_pointer). */
    if (s->drv.cuDeviceGetAttribute(
            &s->pageable_access,
            GPU_CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, s->device) != 0)
        s->pageable_access = 0;
    return MOES_OK;
}

static int open_device(moes_context *ctx, gpu_state *s, char *reason,
                       size_t reason_len)
{
    int count = 0, st;
    CUresult r;
    if (!gpu_driver_open(&s->drv, reason, reason_len))
        return MOES_ERR_BACKEND_UNAVAILABLE;
    r = s->drv.cuInit(0);
    if (r == GPU_CUDA_ERROR_NO_DEVICE) {
        snprintf(reason, reason_len, "no CUDA device");
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    if (r) {
        snprintf(reason, reason_len, "the CUDA driver cannot start: %s",
                 gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    r = s->drv.cuDeviceGetCount(&count);
    if (r || count < 1) {
        snprintf(reason, reason_len, "no CUDA device");
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    if (ctx->cuda_device >= count) {
        snprintf(reason, reason_len, "device %d does not exist (%d device%s)",
                 ctx->cuda_device, count, count == 1 ? "" : "s");
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    r = s->drv.cuDeviceGet(&s->device, ctx->cuda_device);
    if (r) {
        snprintf(reason, reason_len, "cannot open device %d: %s",
                 ctx->cuda_device, gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    if ((st = describe_device(s, reason, reason_len)) != MOES_OK)
        return st;
    /* The primary context is the one the CUDA runtime uses: the caller's
     * cudaMalloc pointers and streams are valid in it. */
    r = s->drv.cuDevicePrimaryCtxRetain(&s->primary, s->device);
    if (r) {
        s->primary = NULL;
        snprintf(reason, reason_len,
                 "cannot retain the primary context of device %d: %s",
                 ctx->cuda_device, gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    r = s->drv.cuCtxSetCurrent(s->primary);
    if (r) {
        snprintf(reason, reason_len, "cannot use device %d: %s",
                 ctx->cuda_device, gpu_driver_error_string(&s->drv, r));
        return MOES_ERR_BACKEND_UNAVAILABLE;
    }
    if ((st = load_module(s, reason, reason_len)) != MOES_OK)
        return st;
    return init_device_state(s, reason, reason_len);
}

static int cuda_open(moes_context *ctx, char *reason, size_t reason_len)
{
    gpu_state *s = calloc(1, sizeof *s);
    int st;
    if (!s) {
        snprintf(reason, reason_len, "cannot allocate the CUDA state");
        return MOES_ERR_OUT_OF_MEMORY;
    }
    st = open_device(ctx, s, reason, reason_len);
    if (st != MOES_OK) {
        release(s);
        return st;
    }
    ctx->state = s;
    return MOES_OK;
}

static int cuda_close(moes_context *ctx)
{
    gpu_state *s = gpu_state_of(ctx);
    int st = MOES_OK;
    if (!s)
        return MOES_OK;
    if (s->drv.cuCtxSetCurrent(s->primary) == 0) {
        CUresult r = s->drv.cuStreamSynchronize(gpu_stream_of(ctx));
        if (r)
            st = gpu_fail(ctx, r, "waiting for the stream before closing");
    }
    /* Reported while s (and its driver) are still there. */
    const CUresult r = release_device(s);
    if (r && st == MOES_OK)
        st = gpu_fail(ctx, r, "releasing the context's device memory");
    free_state(s);
    ctx->state = NULL;
    return st;
}

static int cuda_get_info(moes_context *ctx, moes_context_info *info)
{
    const gpu_state *s = gpu_state_of(ctx);
    snprintf(info->device_name, sizeof info->device_name, "%s",
             s->device_name);
    info->device_multiprocessors = s->multiprocessors;
    info->device_compute_capability = s->compute_capability;
    info->device_memory_bytes = s->memory_bytes;
    return MOES_OK;
}

const moes_backend_ops moes_cuda_backend = {
    .name = "cuda",
    .open = cuda_open,
    .close = cuda_close,
    .get_info = cuda_get_info,
    .malloc = gpu_malloc,
    .free = gpu_free,
    .copy_to_backend = gpu_copy_to_backend,
    .copy_to_host = gpu_copy_to_host,
    .copy_within = gpu_copy_within,
    .fill = gpu_fill,
    .fill_rows = gpu_fill_rows,
    .set_stream = NULL, /* the stream is ctx->stream, kept by lib/ */
    .synchronize = gpu_synchronize,
    .get_error = gpu_get_error,
    .timestamp = gpu_timestamp,
    .elapsed_ms = gpu_elapsed_ms,
    .reserve_workspace = gpu_reserve,
    .workspace_size = gpu_workspace_size,
    .set_workspace = gpu_set_workspace,
    .workspace_held = gpu_workspace_held,
    .count = gpu_count,
    .scatter = gpu_scatter,
    .gather = gpu_gather,
    .distinct = gpu_distinct,
    .check_scatter = gpu_check_scatter,
    .check_gather = gpu_check_gather,
};
