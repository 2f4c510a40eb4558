/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the context and the helpers that lib/ and the backends share.
 */
#ifndef MOES_INTERNAL_H
#define MOES_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "moescatter.h"

#define MOES_MESSAGE_LEN 512

struct moes_context {
    const moes_backend_ops *ops;
    void *state;              /* the backend's own                         */
    int backend;              /* MOES_BACKEND_CPU or MOES_BACKEND_CUDA     */
    int cpu_threads;          /* resolved: >= 1                            */
    int64_t cpu_work_per_thread; /* MOES_CPU_WORK_PER_THREAD, 0: default   */
    int cuda_device;
    void *stream;
    int workspace_reserved;   /* after moes_reserve_workspace: no growth   */
    int workspace_from_caller; /* moes_set_workspace gave one: no growth   */
    unsigned timestamps_recorded; /* a bit per slot recorded              */
    char reason[256];
    char message[MOES_MESSAGE_LEN];
};

/* Records a formatted message on ctx (or the thread's creation message
 * when ctx is NULL) and returns status, so that callers can write
 * `return moes_set_error(ctx, MOES_ERR_..., "...", ...);`. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
int moes_set_error(moes_context *ctx, int status, const char *fmt, ...);

/* Turns a backend's data error into its status and message. */
int moes_report_data_error(moes_context *ctx, const moes_data_error *err);

/* Returns from the calling function when expr is not MOES_OK. */
#define MOES_TRY(expr)                                                      \
    do {                                                                    \
        int st_ = (expr);                                                   \
        if (st_ != MOES_OK)                                                 \
            return st_;                                                     \
    } while (0)

/* Whether a call that needs `need` bytes of workspace, where the backend
 * holds `held`, can have them: MOES_OK when `held` covers them or the
 * workspace may grow, and MOES_ERR_WORKSPACE, with the message both
 * backends give, when it would have to grow but is the caller's buffer
 * (moes_set_workspace) or a reservation (moes_reserve_workspace), which
 * never grow. */
int moes_workspace_can_have(moes_context *ctx, int64_t need, int64_t held);

/* Checked int64 arithmetic: return 0 on overflow (and leave *out alone). */
int moes_mul_i64(int64_t a, int64_t b, int64_t *out);
int moes_add_i64(int64_t a, int64_t b, int64_t *out);

/* Bytes of an integer index dtype (4 or 8), 0 for anything else. */
size_t moes_index_dtype_size(int dtype);

/* Reads and writes element i of an int32 or int64 index array. */
static inline int64_t moes_index_load(const void *base, size_t elem, int64_t i)
{
    return elem == 4 ? (int64_t)((const int32_t *)base)[i]
                     : ((const int64_t *)base)[i];
}

static inline void moes_index_store(void *base, size_t elem, int64_t i,
                                    int64_t v)
{
    if (elem == 4)
        ((int32_t *)base)[i] = (int32_t)v;
    else
        ((int64_t *)base)[i] = v;
}

/* base[i] = v for i in [first, end): a typed loop the compiler turns into
 * wide stores (padding rows are most of a small call's rows). */
static inline void moes_index_fill(void *base, size_t elem, int64_t first,
                                   int64_t end, int64_t v)
{
    if (elem == 4) {
        int32_t *p = base;
        for (int64_t i = first; i < end; i++)
            p[i] = (int32_t)v;
    } else {
        int64_t *p = base;
        for (int64_t i = first; i < end; i++)
            p[i] = v;
    }
}

/* Logs on stderr when MOES_LOG is set to a non-empty value other than 0. */
void moes_log(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif /* MOES_INTERNAL_H */
