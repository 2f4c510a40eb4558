/* SPDX-License-Identifier: MIT */
/*
 * device_harness.h - what the one-GPU ep programs (the NCCL suite,
 * time_nccl) need beside the library: the driver's streams, events and
 * graphs, and an NCCL communicator over one or more GPUs of this process,
 * all opened at run time as the library opens the driver. NCCL brings a
 * CUDA runtime of its own, and a second one linked into the program
 * would take its symbols.
 */
#ifndef MOES_EP_DEVICE_HARNESS_H
#define MOES_EP_DEVICE_HARNESS_H

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct graph_api {
    int (*retain)(void **ctx, int device);
    int (*set_current)(void *ctx);
    int (*stream_create)(void **stream, unsigned flags);
    int (*stream_destroy)(void *stream);
    int (*stream_sync)(void *stream);
    int (*begin_capture)(void *stream, int mode);
    int (*end_capture)(void *stream, void **graph);
    int (*instantiate)(void **exec, void *graph, unsigned long long flags);
    int (*launch)(void *exec, void *stream);
    int (*exec_destroy)(void *exec);
    int (*graph_destroy)(void *graph);
    int (*event_create)(void **event, unsigned flags);
    int (*event_record)(void *event, void *stream);
    int (*event_sync)(void *event);
    int (*event_elapsed)(float *ms, void *start, void *end);
} graph_api;

enum { CU_STREAM_NON_BLOCKING_ = 1, CU_CAPTURE_THREAD_LOCAL_ = 1 };

/* Opens the driver's functions (once, whichever thread asks first: the
 * table is then only read) and makes device's primary context current on
 * the calling thread; exits with 77 (skipped) without a driver. */
static inline void open_graph_api(graph_api *cu, int device)
{
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&once);
    /* Read once, before the loop fills the table's first slot. */
    const int loaded = cu->retain != NULL;
    void *lib = loaded ? NULL : dlopen("libcuda.so.1", RTLD_NOW);
    struct {
        void **slot;
        const char *name;
    } syms[] = {{(void **)&cu->retain, "cuDevicePrimaryCtxRetain"},
                {(void **)&cu->set_current, "cuCtxSetCurrent"},
                {(void **)&cu->stream_create, "cuStreamCreate"},
                {(void **)&cu->stream_destroy, "cuStreamDestroy_v2"},
                {(void **)&cu->stream_sync, "cuStreamSynchronize"},
                {(void **)&cu->begin_capture, "cuStreamBeginCapture_v2"},
                {(void **)&cu->end_capture, "cuStreamEndCapture"},
                {(void **)&cu->instantiate, "cuGraphInstantiateWithFlags"},
                {(void **)&cu->launch, "cuGraphLaunch"},
                {(void **)&cu->exec_destroy, "cuGraphExecDestroy"},
                {(void **)&cu->graph_destroy, "cuGraphDestroy"},
                {(void **)&cu->event_create, "cuEventCreate"},
                {(void **)&cu->event_record, "cuEventRecord"},
                {(void **)&cu->event_sync, "cuEventSynchronize"},
                {(void **)&cu->event_elapsed, "cuEventElapsedTime_v2"}};
    for (size_t i = 0; !loaded && i < sizeof syms / sizeof *syms; i++) {
        *syms[i].slot = lib ? dlsym(lib, syms[i].name) : NULL;
        if (!*syms[i].slot && i == sizeof syms / sizeof *syms - 1)
            *syms[i].slot = dlsym(lib, "cuEventElapsedTime");
        if (!*syms[i].slot) {
            printf("libcuda.so.1: no %s: skipped\n", syms[i].name);
            exit(77);
        }
    }
    pthread_mutex_unlock(&once);
    void *ctx = NULL;
    if (cu->retain(&ctx, device) || cu->set_current(ctx)) {
        printf("device %d's context cannot be made current: skipped\n",
               device);
        exit(77);
    }
}

/* A communicator of n ranks on devices 0 .. n-1 of this process (comms[r]
 * for rank r), through libnccl.so.2 (or the library at
 * $MOES_NCCL_LIBRARY); exits with 77 (skipped) without one. */
static inline void open_nccl(int n, void **comms)
{
    const char *path = getenv("MOES_NCCL_LIBRARY");
    void *lib = dlopen(path && *path ? path : "libnccl.so.2", RTLD_NOW);
    union {
        void *p;
        int (*f)(void **, int, const int *);
    } init;
    init.p = lib ? dlsym(lib, "ncclCommInitAll") : NULL;
    int devices[8];
    for (int r = 0; r < n && r < 8; r++)
        devices[r] = r;
    if (n < 1 || n > 8 || !init.p || init.f(comms, n, devices) != 0) {
        printf("NCCL cannot be opened or initialized on %d GPU%s: skipped\n",
               n, n == 1 ? "" : "s");
        exit(77);
    }
}

static inline void *open_nccl_one_rank(void)
{
    void *comm = NULL;
    open_nccl(1, &comm);
    return comm;
}

#endif /* MOES_EP_DEVICE_HARNESS_H */
