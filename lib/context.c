/* SPDX-License-Identifier: MIT */
/*
 * context.c - opening and closing contexts, choosing the backend, and the
 * calls that only ask the context something.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h"
#include "struct_size.h"

MOES_API int moes_version(int *major, int *minor, int *patch)
{
    if (major)
        *major = MOES_VERSION_MAJOR;
    if (minor)
        *minor = MOES_VERSION_MINOR;
    if (patch)
        *patch = MOES_VERSION_PATCH;
    return MOES_OK;
}

MOES_API int moes_dtype_size(int dtype, size_t *size)
{
    size_t s;
    if (!size)
        return MOES_ERR_NULL_POINTER;
    switch (dtype) {
    case MOES_DTYPE_FP8_E4M3:
    case MOES_DTYPE_FP8_E5M2: s = 1; break;
    case MOES_DTYPE_BF16:
    case MOES_DTYPE_FP16: s = 2; break;
    case MOES_DTYPE_FP32:
    case MOES_DTYPE_INT32: s = 4; break;
    case MOES_DTYPE_INT64: s = 8; break;
    default: return MOES_ERR_INVALID_DTYPE;
    }
    *size = s;
    return MOES_OK;
}

MOES_API int moes_backends_compiled(unsigned *mask)
{
    if (!mask)
        return MOES_ERR_NULL_POINTER;
    *mask = 1u << MOES_BACKEND_CPU;
    if (moes_cuda_compiled)
        *mask |= 1u << MOES_BACKEND_CUDA;
    return MOES_OK;
}

MOES_API int moes_context_options_init(moes_context_options *opts)
{
    if (!opts)
        return MOES_ERR_NULL_POINTER;
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
    opts->backend = MOES_BACKEND_AUTO;
    return MOES_OK;
}

/* MOES_BACKEND overrides the program's choice; a value we do not know is an
 * error rather than a silent default. Returns -1 for a bad value. */
static int backend_from_env(int requested, const char **source)
{
    const char *env = getenv("MOES_BACKEND");
    *source = "requested by the program";
    if (!env || !*env)
        return requested;
    *source = "forced by MOES_BACKEND";
    if (strcasecmp(env, "cpu") == 0)
        return MOES_BACKEND_CPU;
    if (strcasecmp(env, "cuda") == 0)
        return MOES_BACKEND_CUDA;
    if (strcasecmp(env, "auto") == 0)
        return MOES_BACKEND_AUTO;
    return -1;
}

/* MOES_CPU_WORK_PER_THREAD: the CPU backend's work a thread (cpu_omp.h),
 * a whole number of at least 1, or unset (0: the backend's default).
 * Returns -1 for anything else. */
static int64_t work_per_thread_from_env(void)
{
    const char *env = getenv("MOES_CPU_WORK_PER_THREAD");
    long long v;
    if (!env || !*env)
        return 0;
    if (env[strspn(env, "0123456789")] != '\0')
        return -1;
    errno = 0;
    v = strtoll(env, NULL, 10);
    return errno || v < 1 ? -1 : (int64_t)v;
}

#ifdef _OPENMP
/* The most threads a context uses: the larger of 64 and four per
 * processor, and never more than OpenMP's thread limit. A count far past
 * what the machine runs (cpu_threads or OMP_NUM_THREADS of 100000 or
 * INT_MAX) would only make the runtime fail to start the threads, or
 * abort the process asking for their stacks. */
static int cpu_thread_cap(void)
{
    int procs = omp_get_num_procs();
    int limit = omp_get_thread_limit();
    int cap = procs > 16 && procs < INT_MAX / 4 ? 4 * procs : 64;
    if (procs >= INT_MAX / 4)
        cap = INT_MAX;
    if (limit > 0 && cap > limit)
        cap = limit;
    return cap;
}
#endif

static int open_backend(moes_context *ctx, const moes_backend_ops *ops,
                        int backend, char *reason, size_t reason_len)
{
    ctx->ops = ops;
    ctx->backend = backend;
    ctx->state = NULL;
    return ops->open(ctx, reason, reason_len);
}

MOES_API int moes_context_create(moes_context **out,
                                 const moes_context_options *opts)
{
    moes_context_options given;
    const char *source;
    char why[200] = "";
    int requested, st;
    int64_t work_per_thread;
    moes_context *ctx;

    if (!out)
        return moes_set_error(NULL, MOES_ERR_NULL_POINTER, "ctx is NULL");
    *out = NULL;
    if (!opts) {
        moes_context_options_init(&given);
    } else if ((st = moes_options_from_caller(opts, &given)) != MOES_OK) {
        return st;
    }
    opts = &given;
    if (opts->backend < MOES_BACKEND_AUTO || opts->backend > MOES_BACKEND_CUDA)
        return moes_set_error(NULL, MOES_ERR_INVALID_ARGUMENT,
            "opts->backend = %d is not a moes_backend", opts->backend);
    if (opts->cpu_threads < 0)
        return moes_set_error(NULL, MOES_ERR_INVALID_ARGUMENT,
            "opts->cpu_threads = %d is negative", opts->cpu_threads);
    if (opts->cuda_device < 0)
        return moes_set_error(NULL, MOES_ERR_INVALID_ARGUMENT,
            "opts->cuda_device = %d is negative", opts->cuda_device);
    requested = backend_from_env(opts->backend, &source);
    if (requested < 0)
        return moes_set_error(NULL, MOES_ERR_INVALID_ARGUMENT,
            "MOES_BACKEND = \"%s\" is not cpu, cuda or auto",
            getenv("MOES_BACKEND"));
    work_per_thread = work_per_thread_from_env();
    if (work_per_thread < 0)
        return moes_set_error(NULL, MOES_ERR_INVALID_ARGUMENT,
            "MOES_CPU_WORK_PER_THREAD = \"%s\" is not a whole number of "
            "at least 1", getenv("MOES_CPU_WORK_PER_THREAD"));

    ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return moes_set_error(NULL, MOES_ERR_OUT_OF_MEMORY,
                              "cannot allocate the context");
#ifdef _OPENMP
    ctx->cpu_threads = opts->cpu_threads > 0 ? opts->cpu_threads
                                             : omp_get_max_threads();
    if (ctx->cpu_threads > cpu_thread_cap())
        ctx->cpu_threads = cpu_thread_cap();
    if (ctx->cpu_threads < 1)
        ctx->cpu_threads = 1;
#else
    ctx->cpu_threads = 1;
#endif
    ctx->cpu_work_per_thread = work_per_thread;
    ctx->cuda_device = opts->cuda_device;

    if (requested == MOES_BACKEND_CPU) {
        snprintf(ctx->reason, sizeof ctx->reason, "CPU %s", source);
        st = open_backend(ctx, &moes_cpu_backend, MOES_BACKEND_CPU, why,
                          sizeof why);
    } else {
        st = open_backend(ctx, &moes_cuda_backend, MOES_BACKEND_CUDA, why,
                          sizeof why);
        if (st == MOES_OK) {
            snprintf(ctx->reason, sizeof ctx->reason, "CUDA %s%s",
                     requested == MOES_BACKEND_AUTO ? "chosen by AUTO, "
                                                    : "",
                     requested == MOES_BACKEND_AUTO ? "a device is usable"
                                                    : source);
        } else if (requested == MOES_BACKEND_CUDA) {
            free(ctx);
            return moes_set_error(NULL, MOES_ERR_BACKEND_UNAVAILABLE,
                "the CUDA backend (%s) cannot be used: %s", source, why);
        } else {
            snprintf(ctx->reason, sizeof ctx->reason,
                     "CPU chosen by AUTO: %s", why);
            st = open_backend(ctx, &moes_cpu_backend, MOES_BACKEND_CPU, why,
                              sizeof why);
        }
    }
    if (st != MOES_OK) {
        free(ctx);
        return moes_set_error(NULL, st, "cannot open the backend: %s", why);
    }
    moes_log("backend %s (%s)", ctx->ops->name, ctx->reason);
    *out = ctx;
    return MOES_OK;
}

MOES_API int moes_context_destroy(moes_context *ctx)
{
    int st;
    if (!ctx)
        return MOES_OK;
    st = ctx->ops->close(ctx);
    free(ctx);
    return st;
}

MOES_API int moes_context_get_info(moes_context *ctx, moes_context_info *info)
{
    moes_context_info full;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!info)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "info is NULL");
    MOES_TRY(moes_info_size_check(ctx, info));
    /* Filled whole, then copied as far as the caller's version knows. */
    memset(&full, 0, sizeof full);
    full.struct_size = sizeof full;
    full.backend = ctx->backend;
    full.cpu_threads = ctx->cpu_threads;
    snprintf(full.reason, sizeof full.reason, "%s", ctx->reason);
    snprintf(full.device_name, sizeof full.device_name, "cpu");
    full.workspace_from_caller = ctx->workspace_from_caller;
    if (ctx->ops->workspace_held)
        MOES_TRY(ctx->ops->workspace_held(ctx, &full.workspace_bytes));
    if (ctx->ops->get_info)
        MOES_TRY(ctx->ops->get_info(ctx, &full));
    moes_info_to_caller(info, &full);
    return MOES_OK;
}

MOES_API int moes_set_stream(moes_context *ctx, void *stream)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (ctx->ops->set_stream) {
        int st = ctx->ops->set_stream(ctx, stream);
        if (st != MOES_OK)
            return st;
    }
    ctx->stream = stream;
    return MOES_OK;
}

MOES_API int moes_synchronize(moes_context *ctx)
{
    moes_data_error err = {0};
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!ctx->ops->synchronize)
        return MOES_OK;
    st = ctx->ops->synchronize(ctx, &err);
    if (st != MOES_OK)
        return st;
    return err.status == MOES_OK ? MOES_OK
                                 : moes_report_data_error(ctx, &err);
}

MOES_API int moes_get_error(moes_context *ctx)
{
    moes_data_error err = {0};
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!ctx->ops->get_error)
        return MOES_OK;
    st = ctx->ops->get_error(ctx, &err);
    if (st != MOES_OK)
        return st;
    return err.status == MOES_OK ? MOES_OK
                                 : moes_report_data_error(ctx, &err);
}

MOES_API int moes_timestamp(moes_context *ctx, int slot)
{
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (slot < 0 || slot >= MOES_TIMESTAMP_SLOTS)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "slot = %d is outside 0..%d", slot, MOES_TIMESTAMP_SLOTS - 1);
    st = ctx->ops->timestamp(ctx, slot);
    if (st == MOES_OK)
        ctx->timestamps_recorded |= 1u << slot;
    return st;
}

MOES_API int moes_elapsed_ms(moes_context *ctx, int from, int to, double *ms)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!ms)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "ms is NULL");
    if (from < 0 || from >= MOES_TIMESTAMP_SLOTS)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "from = %d is outside 0..%d", from, MOES_TIMESTAMP_SLOTS - 1);
    if (to < 0 || to >= MOES_TIMESTAMP_SLOTS)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "to = %d is outside 0..%d", to, MOES_TIMESTAMP_SLOTS - 1);
    if (!(ctx->timestamps_recorded & (1u << from)))
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "slot %d was never recorded", from);
    if (!(ctx->timestamps_recorded & (1u << to)))
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "slot %d was never recorded", to);
    return ctx->ops->elapsed_ms(ctx, from, to, ms);
}
