/* SPDX-License-Identifier: MIT */
/*
 * fake_cuda.c - a stand-in for libcuda.so.1 with no GPU behind it, built
 * as libcuda.so.1 by host-launches.test, so that the CUDA backend's host
 * code runs on any machine: the device is an sm_90 part with 132
 * multiprocessors; "device memory" is host memory (pages mapped for it,
 * never the malloc heap); a launch runs nothing and is only written down
 * (kernel name and grid), for the test to read with
 * fake_cuda_take_launches. fake_cuda_set_capturing
 * makes every stream report a graph capture in progress,
 * fake_cuda_refuse_cooperative every cooperative launch fail for want of
 * room, fake_cuda_fail_launches every launch fail outright. Two switches
 * are environment variables instead, read by the calls that open a
 * context, since they act before a test can reach the fake's functions:
 * FAKE_CUDA_NO_DEVICE (set, not "0") makes cuDeviceGetCount report no
 * device, as a driver on a machine without a GPU does, and
 * FAKE_CUDA_NO_KERNEL_IMAGE makes cuModuleLoadData fail with
 * CUDA_ERROR_NO_BINARY_FOR_GPU, as on a GPU the fatbin has no code for.
 * Built with
 * FAKE_OLD_DRIVER it lacks the entry points the backend takes as
 * optional (cuLaunchKernelEx, cuFuncSetAttribute, cuStreamIsCapturing),
 * as a driver older than CUDA 12 does.
 *
 * A launch of a row copy (moes_copy_rows, moes_copy_rows_wide,
 * moes_place_copy_rows) whose arguments' walk step does not split its
 * copying warps into whole tokens and chunks left over (moes_item_walk)
 * is written down as NAME(walk): its warps would skip items or copy some
 * twice on a GPU.
 *
 * Dynamic shared memory is held to a driver's rules: a launch may ask
 * for at most 48 KiB of it, or for what cuFuncSetAttribute allowed the
 * kernel (at most the device's 227 KiB a block); one that asks for more
 * fails with CUDA_ERROR_INVALID_VALUE, written down as NAME(shared).
 *
 * The entry points are those gpu/gpu_driver.c resolves, under the same
 * names and with the types of gpu_driver.h.
 */
#define _DEFAULT_SOURCE 1 /* MAP_ANONYMOUS */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gpu_driver.h"
#include "gpu_kernel_args.h"

#define FAKE_EXPORT __attribute__((visibility("default")))
#define FAKE_LAUNCH_FAILED 719 /* CUDA_ERROR_LAUNCH_FAILED */

/* The allocations, so that cuPointerGetAttribute knows device memory:
 * mapped pages of their own, never the malloc heap, so that no host
 * buffer of the test ever has the address of one (as on a GPU, where
 * device and host addresses differ). */
#define FAKE_MAX_ALLOCS 4096
static struct {
    char *ptr;
    size_t bytes;
} allocs[FAKE_MAX_ALLOCS];

/* The launches since the last fake_cuda_take_launches, one line each. */
static char launches[1 << 16];
static size_t launches_len;
static int capturing, refuse_cooperative, fail_launches;

/* A kernel handle is its name, kept for the launch record, and the
 * dynamic shared memory its launches may ask for. */
#define FAKE_SHARED_DEFAULT (48 * 1024)
#define FAKE_SHARED_OPTIN (227 * 1024)
struct CUfunc_st {
    char name[128];
    int max_dynamic_shared;
};
static struct CUfunc_st functions[256];
static int n_functions;
static int context_token, module_token;

/* An environment switch: on when the variable is set, not empty and not
 * "0". Read at each call, so that one process may open contexts with and
 * without it. */
static int env_switch(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

/* The launches written down since the last call, into buf (NULL: they
 * are dropped); returns the bytes written. */
FAKE_EXPORT size_t fake_cuda_take_launches(char *buf, size_t len)
{
    size_t n = 0;
    if (buf && len > 0) {
        n = launches_len < len - 1 ? launches_len : len - 1;
        memcpy(buf, launches, n);
        buf[n] = '\0';
    }
    launches_len = 0;
    return n;
}

FAKE_EXPORT void fake_cuda_set_capturing(int on)
{
    capturing = on;
}

/* Cooperative launches fail as on a device shared with other work:
 * CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE, written down as "refused". */
FAKE_EXPORT void fake_cuda_refuse_cooperative(int on)
{
    refuse_cooperative = on;
}

/* Every launch fails as a kernel that faulted does
 * (CUDA_ERROR_LAUNCH_FAILED), written down as "failed". */
FAKE_EXPORT void fake_cuda_fail_launches(int on)
{
    fail_launches = on;
}

static void note_launch(CUfunction f, unsigned grid, unsigned block,
                        const char *how)
{
    int n = snprintf(launches + launches_len,
                     sizeof launches - launches_len, "%s%s %u %u\n",
                     f->name, how, grid, block);
    if (n > 0 && (size_t)n < sizeof launches - launches_len)
        launches_len += (size_t)n;
}

/* "(walk)" for a row copy whose walk step is not its copying warps
 * (the first copy_blocks blocks of `block` threads; any after them
 * label) as whole tokens and fewer chunks than a token has; else how. */
static const char *copy_walk_verdict(CUfunction f, unsigned grid,
                                     unsigned block, void **params,
                                     const char *how)
{
    if (strcmp(f->name, "moes_copy_rows") != 0 &&
        strcmp(f->name, "moes_copy_rows_wide") != 0 &&
        strcmp(f->name, "moes_place_copy_rows") != 0)
        return how;
    const gpu_scatter_args *a = (const gpu_scatter_args *)params[0];
    const int64_t warps = a->copy_blocks * (int64_t)(block / 32);
    const int ok = a->copy_chunks > 0 && a->copy_blocks <= (int64_t)grid &&
                   a->copy_walk_chunks >= 0 &&
                   a->copy_walk_chunks < a->copy_chunks &&
                   a->copy_walk_tokens * a->copy_chunks +
                           a->copy_walk_chunks ==
                       warps;
    return ok ? how : "(walk)";
}

/* Entry points that accept anything and do nothing here: there is no
 * context, module, stream or event behind the handles. */
#define FAKE_ACCEPTS(name, type)                                            \
    FAKE_EXPORT CUresult name(type arg)                                     \
    {                                                                       \
        (void)arg;                                                          \
        return GPU_CUDA_SUCCESS;                                            \
    }
FAKE_ACCEPTS(cuInit, unsigned)
FAKE_ACCEPTS(cuDevicePrimaryCtxRelease_v2, CUdevice)
FAKE_ACCEPTS(cuCtxSetCurrent, CUcontext)
FAKE_ACCEPTS(cuModuleUnload, CUmodule)
FAKE_ACCEPTS(cuStreamSynchronize, CUstream)
FAKE_ACCEPTS(cuStreamQuery, CUstream)
FAKE_ACCEPTS(cuEventDestroy_v2, CUevent)
FAKE_ACCEPTS(cuEventSynchronize, CUevent)

FAKE_EXPORT CUresult cuGetErrorString(CUresult error, const char **str)
{
    *str = error == FAKE_LAUNCH_FAILED ? "unspecified launch failure (fake)"
           : error == GPU_CUDA_ERROR_NO_BINARY_FOR_GPU
               ? "no kernel image is available for execution on the "
                 "device (fake)"
               : "fake CUDA error";
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetCount(int *count)
{
    *count = env_switch("FAKE_CUDA_NO_DEVICE") ? 0 : 1;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    if (ordinal != 0)
        return GPU_CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice device)
{
    (void)device;
    snprintf(name, (size_t)len, "fake sm_90 device");
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetAttribute(int *value, int attrib,
                                          CUdevice device)
{
    (void)device;
    switch (attrib) {
    case GPU_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 132; break;
    case GPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
    case GPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
    case GPU_CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS: *value = 0; break;
    case GPU_CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: *value = 1; break;
    case GPU_CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
        *value = FAKE_SHARED_OPTIN;
        break;
    default: *value = 0; break;
    }
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice device)
{
    (void)device;
    *bytes = (size_t)80 << 30;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice device)
{
    (void)device;
    *ctx = (CUcontext)(void *)&context_token;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    (void)image;
    if (env_switch("FAKE_CUDA_NO_KERNEL_IMAGE"))
        return GPU_CUDA_ERROR_NO_BINARY_FOR_GPU;
    *module = (CUmodule)(void *)&module_token;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuModuleGetFunction(CUfunction *fn, CUmodule module,
                                         const char *name)
{
    (void)module;
    for (int i = 0; i < n_functions; i++)
        if (strcmp(functions[i].name, name) == 0) {
            *fn = &functions[i];
            return GPU_CUDA_SUCCESS;
        }
    if (n_functions == (int)(sizeof functions / sizeof functions[0]))
        return GPU_CUDA_ERROR_OUT_OF_MEMORY;
    snprintf(functions[n_functions].name, sizeof functions[0].name, "%s",
             name);
    functions[n_functions].max_dynamic_shared = FAKE_SHARED_DEFAULT;
    *fn = &functions[n_functions++];
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuFuncGetAttribute(int *value, int attrib, CUfunction f)
{
    (void)f;
    *value = attrib == GPU_CU_FUNC_ATTRIBUTE_PTX_VERSION ? 90 : 0;
    return GPU_CUDA_SUCCESS;
}

#ifndef FAKE_OLD_DRIVER
FAKE_EXPORT CUresult cuFuncSetAttribute(CUfunction f, int attrib, int value)
{
    /* The kernels' own shared memory reads 0 here (cuFuncGetAttribute),
     * so all of the block's is theirs to allow. */
    if (attrib == GPU_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        if (value < 0 || value > FAKE_SHARED_OPTIN)
            return GPU_CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_shared = value;
    }
    return GPU_CUDA_SUCCESS;
}
#endif

/* Whether a launch of f asks for more dynamic shared memory than f may
 * have; such a launch is written down as NAME(shared). */
static int shared_refused(CUfunction f, unsigned grid, unsigned block,
                          unsigned shared_bytes)
{
    if (shared_bytes <= (unsigned)f->max_dynamic_shared)
        return 0;
    note_launch(f, grid, block, "(shared)");
    return 1;
}

FAKE_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned grid_x,
                                    unsigned grid_y, unsigned grid_z,
                                    unsigned block_x, unsigned block_y,
                                    unsigned block_z, unsigned shared_bytes,
                                    CUstream stream, void **params,
                                    void **extra)
{
    (void)grid_y, (void)grid_z, (void)block_y, (void)block_z;
    (void)stream, (void)extra;
    if (shared_refused(f, grid_x, block_x, shared_bytes))
        return GPU_CUDA_ERROR_INVALID_VALUE;
    note_launch(f, grid_x, block_x,
                copy_walk_verdict(f, grid_x, block_x, params,
                                  fail_launches ? "(failed)" : ""));
    return fail_launches ? FAKE_LAUNCH_FAILED : GPU_CUDA_SUCCESS;
}

#ifndef FAKE_OLD_DRIVER
FAKE_EXPORT CUresult cuLaunchKernelEx(const gpu_launch_config *config,
                                      CUfunction f, void **params,
                                      void **extra)
{
    (void)extra;
    if (shared_refused(f, config->grid_x, config->block_x,
                       config->shared_bytes))
        return GPU_CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < config->n_attrs; i++)
        if (config->attrs[i].id == GPU_CU_LAUNCH_ATTRIBUTE_COOPERATIVE &&
            config->attrs[i].value.cooperative && refuse_cooperative) {
            note_launch(f, config->grid_x, config->block_x, "(refused)");
            return GPU_CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
        }
    note_launch(f, config->grid_x, config->block_x,
                copy_walk_verdict(f, config->grid_x, config->block_x, params,
                                  fail_launches ? "(failed)" : ""));
    return fail_launches ? FAKE_LAUNCH_FAILED : GPU_CUDA_SUCCESS;
}
#endif

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes)
{
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++)
        if (!allocs[i].ptr) {
            void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return GPU_CUDA_ERROR_OUT_OF_MEMORY;
            allocs[i].ptr = p;
            allocs[i].bytes = bytes;
            *ptr = (CUdeviceptr)(size_t)allocs[i].ptr;
            return GPU_CUDA_SUCCESS;
        }
    return GPU_CUDA_ERROR_OUT_OF_MEMORY;
}

FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr ptr)
{
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++)
        if (allocs[i].ptr && (CUdeviceptr)(size_t)allocs[i].ptr == ptr) {
            munmap(allocs[i].ptr, allocs[i].bytes ? allocs[i].bytes : 1);
            allocs[i].ptr = NULL;
            return GPU_CUDA_SUCCESS;
        }
    return GPU_CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src,
                                          size_t bytes, CUstream stream)
{
    (void)stream;
    memcpy((void *)(size_t)dst, src, bytes);
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src,
                                          size_t bytes, CUstream stream)
{
    (void)stream;
    memcpy(dst, (const void *)(size_t)src, bytes);
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src,
                                          size_t bytes, CUstream stream)
{
    (void)stream;
    memmove((void *)(size_t)dst, (const void *)(size_t)src, bytes);
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value,
                                     size_t n, CUstream stream)
{
    (void)stream;
    memset((void *)(size_t)dst, value, n);
    return GPU_CUDA_SUCCESS;
}

#ifndef FAKE_OLD_DRIVER
FAKE_EXPORT CUresult cuStreamIsCapturing(CUstream stream, int *status)
{
    (void)stream;
    *status = capturing; /* 1: CU_STREAM_CAPTURE_STATUS_ACTIVE */
    return GPU_CUDA_SUCCESS;
}
#endif

static int event_tokens[64];

FAKE_EXPORT CUresult cuEventCreate(CUevent *event, unsigned flags)
{
    static int next;
    (void)flags;
    *event = (CUevent)(void *)&event_tokens[next++ % 64];
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuEventRecord(CUevent event, CUstream stream)
{
    (void)event, (void)stream;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuEventElapsedTime(float *ms, CUevent from, CUevent to)
{
    (void)from, (void)to;
    *ms = 0.0f;
    return GPU_CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuPointerGetAttribute(void *data, int attribute,
                                           CUdeviceptr ptr)
{
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++) {
        const CUdeviceptr base = (CUdeviceptr)(size_t)allocs[i].ptr;
        if (!allocs[i].ptr || ptr < base || ptr >= base + allocs[i].bytes)
            continue;
        if (attribute == GPU_CU_POINTER_ATTRIBUTE_MEMORY_TYPE)
            *(unsigned *)data = GPU_CU_MEMORYTYPE_DEVICE;
        else if (attribute == GPU_CU_POINTER_ATTRIBUTE_DEVICE_POINTER)
            *(CUdeviceptr *)data = ptr;
        else if (attribute == GPU_CU_POINTER_ATTRIBUTE_RANGE_START_ADDR)
            *(CUdeviceptr *)data = base;
        else
            return GPU_CUDA_ERROR_INVALID_VALUE;
        return GPU_CUDA_SUCCESS;
    }
    return GPU_CUDA_ERROR_INVALID_VALUE;
}
