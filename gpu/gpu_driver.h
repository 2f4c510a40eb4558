/* SPDX-License-Identifier: MIT */
/*
 * gpu_driver.h - the CUDA driver API, opened at run time.
 *
 * The library links no CUDA library: libcuda.so.1 is opened with dlopen
 * when a CUDA context is created, and the few entry points the backend
 * uses are resolved by name (the _v2 versions where the driver has them).
 * The types are declared here, so the toolkit's headers are not needed to
 * compile the host code either.
 */
#ifndef MOES_GPU_DRIVER_H
#define MOES_GPU_DRIVER_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

/* The values of cuda.h that the backend needs. */
enum {
    GPU_CUDA_SUCCESS = 0,
    GPU_CUDA_ERROR_OUT_OF_MEMORY = 2,
    GPU_CUDA_ERROR_NO_DEVICE = 100,
    GPU_CUDA_ERROR_INVALID_DEVICE = 101,
    GPU_CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    GPU_CUDA_ERROR_INVALID_PTX = 218,
    GPU_CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
    GPU_CUDA_ERROR_NOT_READY = 600,
    GPU_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    GPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    GPU_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    GPU_CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS = 88,
    GPU_CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH = 95,
    GPU_CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
    /* cuFuncGetAttribute / cuFuncSetAttribute: CUfunction_attribute. */
    GPU_CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1,
    GPU_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
    GPU_CUDA_ERROR_INVALID_VALUE = 1,
    GPU_CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720,
    /* cuPointerGetAttribute: what it is asked, and CUmemorytype. */
    GPU_CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2,
    GPU_CU_POINTER_ATTRIBUTE_DEVICE_POINTER = 3,
    GPU_CU_POINTER_ATTRIBUTE_RANGE_START_ADDR = 11,
    GPU_CU_MEMORYTYPE_HOST = 1,
    GPU_CU_MEMORYTYPE_DEVICE = 2,
    GPU_CU_MEMORYTYPE_ARRAY = 3,
    GPU_CU_MEMORYTYPE_UNIFIED = 4
};

/* cuLaunchKernelEx's configuration (cuda.h: CUlaunchConfig and
 * CUlaunchAttribute), with the attributes the backend sets. */
enum { GPU_CU_LAUNCH_ATTRIBUTE_COOPERATIVE = 2,
       GPU_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6,
       GPU_CU_FUNC_ATTRIBUTE_PTX_VERSION = 5 };

typedef struct gpu_launch_attribute {
    int id;
    char pad[4];
    union {
        char pad[64];
        int programmatic_stream_serialization_allowed;
        int cooperative;
        void *align; /* the union of cuda.h holds pointers */
    } value;
} gpu_launch_attribute;

typedef struct gpu_launch_config {
    unsigned grid_x, grid_y, grid_z;
    unsigned block_x, block_y, block_z;
    unsigned shared_bytes;
    CUstream stream;
    gpu_launch_attribute *attrs;
    unsigned n_attrs;
} gpu_launch_config;

typedef struct gpu_driver {
    void *handle;
    CUresult (*cuInit)(unsigned flags);
    CUresult (*cuGetErrorString)(CUresult error, const char **str);
    CUresult (*cuDeviceGetCount)(int *count);
    CUresult (*cuDeviceGet)(CUdevice *device, int ordinal);
    CUresult (*cuDeviceGetName)(char *name, int len, CUdevice device);
    CUresult (*cuDeviceGetAttribute)(int *value, int attrib, CUdevice device);
    CUresult (*cuDeviceTotalMem)(size_t *bytes, CUdevice device);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice device);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice device);
    CUresult (*cuCtxSetCurrent)(CUcontext ctx);
    CUresult (*cuModuleLoadData)(CUmodule *module, const void *image);
    CUresult (*cuModuleUnload)(CUmodule module);
    CUresult (*cuModuleGetFunction)(CUfunction *fn, CUmodule module,
                                    const char *name);
    CUresult (*cuFuncGetAttribute)(int *value, int attrib, CUfunction f);
    CUresult (*cuLaunchKernel)(CUfunction f, unsigned grid_x, unsigned grid_y,
                               unsigned grid_z, unsigned block_x,
                               unsigned block_y, unsigned block_z,
                               unsigned shared_bytes, CUstream stream,
                               void **params, void **extra);
    CUresult (*cuMemAlloc)(CUdeviceptr *ptr, size_t bytes);
    CUresult (*cuMemFree)(CUdeviceptr ptr);
    CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src,
                                  size_t bytes, CUstream stream);
    CUresult (*cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t bytes,
                                  CUstream stream);
    CUresult (*cuMemcpyDtoDAsync)(CUdeviceptr dst, CUdeviceptr src,
                                  size_t bytes, CUstream stream);
    CUresult (*cuMemsetD8Async)(CUdeviceptr dst, unsigned char value,
                                size_t n, CUstream stream);
    CUresult (*cuStreamSynchronize)(CUstream stream);
    CUresult (*cuStreamQuery)(CUstream stream);
    CUresult (*cuEventCreate)(CUevent *event, unsigned flags);
    CUresult (*cuEventDestroy)(CUevent event);
    CUresult (*cuEventRecord)(CUevent event, CUstream stream);
    CUresult (*cuEventSynchronize)(CUevent event);
    CUresult (*cuEventElapsedTime)(float *ms, CUevent from, CUevent to);
    CUresult (*cuPointerGetAttribute)(void *data, int attribute,
                                      CUdeviceptr ptr);
    /* Optional (CUDA 12 and later drivers): NULL when absent. */
    CUresult (*cuLaunchKernelEx)(const gpu_launch_config *config,
                                 CUfunction f, void **params, void **extra);
    /* Optional: NULL when absent, and then no kernel takes more than the
     * default 48 KB of shared memory. */
    CUresult (*cuFuncSetAttribute)(CUfunction f, int attrib, int value);
    /* Optional: NULL when absent, and then whether a stream is being
     * captured is unknown (gpu_capture_status). status: 0 none (cuda.h's
     * CUstreamCaptureStatus). */
    CUresult (*cuStreamIsCapturing)(CUstream stream, int *status);
} gpu_driver;

/* Opens libcuda.so.1 and resolves every entry point. On failure returns 0
 * with the reason in why (nothing stays open). */
int gpu_driver_open(gpu_driver *drv, char *why, size_t why_len);
void gpu_driver_close(gpu_driver *drv);

/* The driver's description of an error ("out of memory"), never NULL. */
const char *gpu_driver_error_string(const gpu_driver *drv, CUresult r);

#endif /* MOES_GPU_DRIVER_H */
