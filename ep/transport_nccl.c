/* SPDX-License-Identifier: MIT */
/*
 * transport_nccl.c - the ep collectives over the caller's NCCL communicator
 * and stream: device buffers, grouped ncclSend/ncclRecv, ncclAllReduce.
 *
 * NCCL is opened at run time (libnccl.so.2), like the CUDA driver, so that
 * nothing links it. The few declarations below are NCCL's stable C ABI:
 * ncclComm_t and cudaStream_t are pointers, the enums ints.
 */
#include "config.h"

#include <dlfcn.h>
#include <stdlib.h>

#include "ep_internal.h"

typedef int nccl_result;          /* ncclResult_t, ncclSuccess = 0        */
typedef void *nccl_comm;          /* ncclComm_t                           */
typedef void *cuda_stream;        /* cudaStream_t                         */
enum { NCCL_INT8 = 0, NCCL_INT64 = 4 }; /* ncclDataType_t values           */
enum { NCCL_MAX = 2 };                  /* ncclRedOp_t ncclMax            */

typedef struct nccl_api {
    void *library;
    nccl_result (*comm_count)(nccl_comm, int *);
    nccl_result (*comm_user_rank)(nccl_comm, int *);
    nccl_result (*group_start)(void);
    nccl_result (*group_end)(void);
    nccl_result (*send)(const void *, size_t, int, int, nccl_comm,
                        cuda_stream);
    nccl_result (*recv)(void *, size_t, int, int, nccl_comm, cuda_stream);
    nccl_result (*all_reduce)(const void *, void *, size_t, int, int,
                              nccl_comm, cuda_stream);
    const char *(*error_string)(nccl_result);
} nccl_api;

typedef struct nccl_state {
    nccl_api api;
    nccl_comm comm;
    cuda_stream stream;
    ep_buffer staging; /* device int64s for the host-side collectives */
} nccl_state;

static int nccl_failed(moes_ep *ep, nccl_result err, const char *what)
{
    nccl_state *n = ep->transport_state;
    return moes_ep_fail(ep, MOES_ERR_DEVICE, "%s failed: %s", what,
                        n->api.error_string ? n->api.error_string(err)
                                            : "unknown NCCL error");
}

static int staging(moes_ep *ep, int64_t count)
{
    nccl_state *n = ep->transport_state;
    return moes_ep_ensure(ep, &n->staging, count * 8);
}

/* Host in, host out: through the staging buffer, on the context's stream,
 * which is the communicator's (the copies wait for it). */
static int nccl_alltoall_i64(moes_ep *ep, const int64_t *send, int64_t *recv,
                             int count)
{
    nccl_state *n = ep->transport_state;
    const int R = ep->n_ranks;
    int rc = staging(ep, 2 * (int64_t)R * count);
    if (rc != MOES_OK)
        return rc;
    int64_t *dsend = n->staging.ptr, *drecv = dsend + (int64_t)R * count;
    if ((rc = moes_copy_to_backend(ep->ctx, dsend, send,
                                   (int64_t)R * count * 8)))
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    nccl_result err = n->api.group_start();
    for (int r = 0; err == 0 && r < R; r++) {
        err = n->api.send(dsend + (int64_t)r * count, (size_t)count,
                          NCCL_INT64, r, n->comm, n->stream);
        if (err == 0)
            err = n->api.recv(drecv + (int64_t)r * count, (size_t)count,
                              NCCL_INT64, r, n->comm, n->stream);
    }
    nccl_result end = n->api.group_end();
    if (err != 0 || end != 0)
        return nccl_failed(ep, err ? err : end, "ncclSend/ncclRecv");
    if ((rc = moes_copy_to_host(ep->ctx, recv, drecv,
                                (int64_t)R * count * 8)))
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    return MOES_OK;
}

static int nccl_allreduce_max_i64(moes_ep *ep, int64_t *values, int count)
{
    nccl_state *n = ep->transport_state;
    int rc = staging(ep, count);
    if (rc != MOES_OK)
        return rc;
    if ((rc = moes_copy_to_backend(ep->ctx, n->staging.ptr, values,
                                   (int64_t)count * 8)))
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    nccl_result err = n->api.all_reduce(n->staging.ptr, n->staging.ptr,
                                        (size_t)count, NCCL_INT64, NCCL_MAX,
                                        n->comm, n->stream);
    if (err != 0)
        return nccl_failed(ep, err, "ncclAllReduce");
    if ((rc = moes_copy_to_host(ep->ctx, values, n->staging.ptr,
                                (int64_t)count * 8)))
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    return MOES_OK;
}

static int nccl_alltoallv(moes_ep *ep, const void *send,
                          const int64_t *send_counts,
                          const int64_t *send_displs, void *recv,
                          const int64_t *recv_counts,
                          const int64_t *recv_displs, int64_t elem_bytes)
{
    nccl_state *n = ep->transport_state;
    nccl_result err = n->api.group_start();
    for (int r = 0; err == 0 && r < ep->n_ranks; r++) {
        if (send_counts[r] > 0)
            err = n->api.send((const char *)send + send_displs[r] * elem_bytes,
                              (size_t)(send_counts[r] * elem_bytes), NCCL_INT8,
                              r, n->comm, n->stream);
        if (err == 0 && recv_counts[r] > 0)
            err = n->api.recv((char *)recv + recv_displs[r] * elem_bytes,
                              (size_t)(recv_counts[r] * elem_bytes), NCCL_INT8,
                              r, n->comm, n->stream);
    }
    nccl_result end = n->api.group_end();
    if (err != 0 || end != 0)
        return nccl_failed(ep, err ? err : end, "ncclSend/ncclRecv");
    return MOES_OK;
}

static int nccl_group(moes_ep *ep, int begin)
{
    nccl_state *n = ep->transport_state;
    nccl_result err = begin ? n->api.group_start() : n->api.group_end();
    return err == 0 ? MOES_OK
                    : nccl_failed(ep, err, begin ? "ncclGroupStart"
                                                 : "ncclGroupEnd");
}

static int nccl_release(moes_ep *ep)
{
    nccl_state *n = ep->transport_state;
    if (!n)
        return MOES_OK;
    /* (No context where create failed before it had one.) */
    const int rc = ep->ctx ? moes_ep_release(ep, &n->staging) : MOES_OK;
    if (n->api.library)
        dlclose(n->api.library);
    free(n);
    ep->transport_state = NULL;
    return rc;
}

static const ep_transport nccl_transport = {
    .alltoall_i64 = nccl_alltoall_i64,
    .allreduce_max_i64 = nccl_allreduce_max_i64,
    .alltoallv = nccl_alltoallv,
    .group = nccl_group,
    .release = nccl_release};

static int load_nccl(nccl_api *api)
{
    const char *path = getenv("MOES_NCCL_LIBRARY");
    api->library = dlopen(path && *path ? path : "libnccl.so.2",
                          RTLD_NOW | RTLD_LOCAL);
    if (!api->library)
        return 0;
    /* Through a union: ISO C has no cast from an object pointer to a
     * function pointer. */
#define NCCL_SYM(field, name)                                        \
    do {                                                             \
        union { void *p; __typeof__(api->field) f; } u;              \
        u.p = dlsym(api->library, name);                             \
        if (!u.p)                                                    \
            return 0;                                                \
        api->field = u.f;                                            \
    } while (0)
    NCCL_SYM(comm_count, "ncclCommCount");
    NCCL_SYM(comm_user_rank, "ncclCommUserRank");
    NCCL_SYM(group_start, "ncclGroupStart");
    NCCL_SYM(group_end, "ncclGroupEnd");
    NCCL_SYM(send, "ncclSend");
    NCCL_SYM(recv, "ncclRecv");
    NCCL_SYM(all_reduce, "ncclAllReduce");
    NCCL_SYM(error_string, "ncclGetErrorString");
#undef NCCL_SYM
    return 1;
}

int moes_ep_create_nccl(moes_ep **out, moes_context *ctx,
                        const moes_ep_options *opts, void *comm, void *stream)
{
    /* A NULL out is this rank's failure like any other bad argument:
     * where a collective can run, it goes through the agreement of
     * moes_ep_finish_create, in which the peers wait for this rank. */
    if (out)
        *out = NULL;
    nccl_state *n = calloc(1, sizeof *n);
    if (!n) {
        moes_ep_set_create_error("cannot allocate the NCCL state");
        return MOES_ERR_OUT_OF_MEMORY;
    }
    /* Without NCCL, or without the communicator, no collective can run:
     * every rank fails alike, so none waits. */
    if (!comm || !load_nccl(&n->api)) {
        if (n->api.library)
            dlclose(n->api.library);
        free(n);
        return moes_ep_fail_alone(
            out, comm ? MOES_ERR_BACKEND_UNAVAILABLE : MOES_ERR_NULL_POINTER,
            comm ? "libnccl.so.2 cannot be opened, or lacks ncclSend"
                 : "nccl_comm is NULL");
    }
    int size = 0, rank = 0;
    if (n->api.comm_count(comm, &size) != 0 ||
        n->api.comm_user_rank(comm, &rank) != 0) {
        dlclose(n->api.library);
        free(n);
        return moes_ep_fail_alone(out, MOES_ERR_DEVICE,
                                  "ncclCommCount or ncclCommUserRank failed");
    }
    moes_ep *ep = moes_ep_alloc(ctx, opts);
    if (!ep) {
        dlclose(n->api.library);
        free(n);
        moes_ep_set_create_error("cannot allocate the ep context");
        return MOES_ERR_OUT_OF_MEMORY;
    }
    n->comm = comm;
    n->stream = stream;
    ep->transport = &nccl_transport;
    ep->transport_state = n;
    ep->rank = rank;
    ep->n_ranks = size;
    ep->on_device = 1;
    int status = MOES_OK;
    moes_context_info info = {.struct_size = sizeof info};
    /* The context is looked at before opts: whether this rank can take
     * part in the agreement below depends on it alone, and a rank that
     * can must, whatever else it got wrong (its peers wait there). */
    if (!ctx)
        status = moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "ctx is NULL");
    else if ((status = moes_context_get_info(ctx, &info)) != MOES_OK)
        moes_ep_fail(ep, status, "%s", moes_last_error(ctx));
    else if (info.backend != MOES_BACKEND_CUDA)
        status = moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                              "the NCCL transport moves device buffers: ctx "
                              "must be a CUDA context");
    else if ((status = moes_set_stream(ctx, stream)) != MOES_OK)
        moes_ep_fail(ep, status, "%s", moes_last_error(ctx));
    /* After the stream, so that a rank that fails here still takes part
     * in the agreement on the stream its peers use. */
    else if (!opts)
        status = moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "opts is NULL");
    else if (!out)
        status = moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "ep is NULL");
    if (status != MOES_OK && !(ctx && info.backend == MOES_BACKEND_CUDA)) {
        /* The agreement below needs device memory on a CUDA context: a
         * rank without one cannot take part. */
        moes_ep_set_create_error(ep->message);
        ep->ctx = NULL;
        moes_ep_destroy(ep);
        return status;
    }
    return moes_ep_finish_create(out, ep, status);
}
