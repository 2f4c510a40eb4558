/* SPDX-License-Identifier: MIT */
/*
 * gpu_driver.c - opening libcuda.so.1 and resolving its entry points.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "gpu_driver.h"

/* Where a symbol goes and the name the driver exports it under. The _v2
 * names are the current ABI of functions whose first version took 32-bit
 * sizes or had other semantics. */
typedef struct entry_point {
    size_t offset;
    const char *name;
} entry_point;

#define ENTRY(field, symbol) { offsetof(gpu_driver, field), symbol }

static const entry_point entry_points[] = {
    ENTRY(cuInit, "cuInit"),
    ENTRY(cuGetErrorString, "cuGetErrorString"),
    ENTRY(cuDeviceGetCount, "cuDeviceGetCount"),
    ENTRY(cuDeviceGet, "cuDeviceGet"),
    ENTRY(cuDeviceGetName, "cuDeviceGetName"),
    ENTRY(cuDeviceGetAttribute, "cuDeviceGetAttribute"),
    ENTRY(cuDeviceTotalMem, "cuDeviceTotalMem_v2"),
    ENTRY(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
    ENTRY(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
    ENTRY(cuCtxSetCurrent, "cuCtxSetCurrent"),
    ENTRY(cuModuleLoadData, "cuModuleLoadData"),
    ENTRY(cuModuleUnload, "cuModuleUnload"),
    ENTRY(cuModuleGetFunction, "cuModuleGetFunction"),
    ENTRY(cuFuncGetAttribute, "cuFuncGetAttribute"),
    ENTRY(cuLaunchKernel, "cuLaunchKernel"),
    ENTRY(cuMemAlloc, "cuMemAlloc_v2"),
    ENTRY(cuMemFree, "cuMemFree_v2"),
    ENTRY(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"),
    ENTRY(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"),
    ENTRY(cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"),
    ENTRY(cuMemsetD8Async, "cuMemsetD8Async"),
    ENTRY(cuStreamSynchronize, "cuStreamSynchronize"),
    ENTRY(cuStreamQuery, "cuStreamQuery"),
    ENTRY(cuEventCreate, "cuEventCreate"),
    ENTRY(cuEventDestroy, "cuEventDestroy_v2"),
    ENTRY(cuEventRecord, "cuEventRecord"),
    ENTRY(cuEventSynchronize, "cuEventSynchronize"),
    ENTRY(cuEventElapsedTime, "cuEventElapsedTime"),
    ENTRY(cuPointerGetAttribute, "cuPointerGetAttribute"),
};

int gpu_driver_open(gpu_driver *drv, char *why, size_t why_len)
{
    memset(drv, 0, sizeof *drv);
    drv->handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv->handle) {
        const char *err = dlerror();
        snprintf(why, why_len, "libcuda.so.1 not found: %s",
                 err ? err : "dlopen failed");
        return 0;
    }
    for (size_t i = 0; i < sizeof entry_points / sizeof entry_points[0];
         i++) {
        void *sym = dlsym(drv->handle, entry_points[i].name);
        if (!sym) {
            snprintf(why, why_len,
                     "libcuda.so.1 has no %s: the driver is too old",
                     entry_points[i].name);
            dlclose(drv->handle);
            memset(drv, 0, sizeof *drv);
            return 0;
        }
        /* POSIX guarantees that a data pointer from dlsym converts to a
         * function pointer; copy the bytes to say so in C. */
        memcpy((char *)drv + entry_points[i].offset, &sym, sizeof sym);
    }
    {
        /* Optional: launches that may overlap the kernel before them. */
        void *sym = dlsym(drv->handle, "cuLaunchKernelEx");
        if (sym)
            memcpy(&drv->cuLaunchKernelEx, &sym, sizeof sym);
        /* Optional: shared memory past 48 KB a block. */
        sym = dlsym(drv->handle, "cuFuncSetAttribute");
        if (sym)
            memcpy(&drv->cuFuncSetAttribute, &sym, sizeof sym);
        /* Optional: whether a stream is being captured into a graph. */
        sym = dlsym(drv->handle, "cuStreamIsCapturing");
        if (sym)
            memcpy(&drv->cuStreamIsCapturing, &sym, sizeof sym);
    }
    return 1;
}

void gpu_driver_close(gpu_driver *drv)
{
    if (drv->handle)
        dlclose(drv->handle);
    memset(drv, 0, sizeof *drv);
}

const char *gpu_driver_error_string(const gpu_driver *drv, CUresult r)
{
    const char *s = NULL;
    if (drv->cuGetErrorString && drv->cuGetErrorString(r, &s) == 0 && s)
        return s;
    return "unknown CUDA error";
}
