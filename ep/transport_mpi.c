/* SPDX-License-Identifier: MIT */
/*
 * transport_mpi.c - the ep collectives over the caller's MPI communicator:
 * host buffers, MPI_Alltoall, MPI_Allreduce and MPI_Alltoallv.
 */
#include "config.h"

#include <limits.h>
#include <stdlib.h>

#include <mpi.h>

#include "ep_internal.h"

typedef struct mpi_state {
    MPI_Comm comm;
    int *counts[4]; /* send counts, send displs, recv counts, recv displs */
} mpi_state;

static int mpi_failed(moes_ep *ep, int err, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, text, &len) != MPI_SUCCESS)
        text[0] = '\0';
    return moes_ep_fail(ep, MOES_ERR_DEVICE, "%s failed: %s", what, text);
}

static int mpi_alltoall_i64(moes_ep *ep, const int64_t *send, int64_t *recv,
                            int n)
{
    mpi_state *m = ep->transport_state;
    int err = MPI_Alltoall(send, n, MPI_INT64_T, recv, n, MPI_INT64_T,
                           m->comm);
    return err == MPI_SUCCESS ? MOES_OK : mpi_failed(ep, err, "MPI_Alltoall");
}

static int mpi_allreduce_max_i64(moes_ep *ep, int64_t *values, int n)
{
    mpi_state *m = ep->transport_state;
    int err = MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_INT64_T, MPI_MAX,
                            m->comm);
    return err == MPI_SUCCESS ? MOES_OK
                              : mpi_failed(ep, err, "MPI_Allreduce");
}

/* Counts in whole tokens, one datatype per token: the options were checked
 * at create so that both fit an int. */
static int mpi_alltoallv(moes_ep *ep, const void *send,
                         const int64_t *send_counts,
                         const int64_t *send_displs,
                         void *recv, const int64_t *recv_counts,
                         const int64_t *recv_displs, int64_t elem_bytes)
{
    mpi_state *m = ep->transport_state;
    for (int r = 0; r < ep->n_ranks; r++) {
        m->counts[0][r] = (int)send_counts[r];
        m->counts[1][r] = (int)send_displs[r];
        m->counts[2][r] = (int)recv_counts[r];
        m->counts[3][r] = (int)recv_displs[r];
    }
    MPI_Datatype token;
    int err = MPI_Type_contiguous((int)elem_bytes, MPI_BYTE, &token);
    if (err != MPI_SUCCESS)
        return mpi_failed(ep, err, "MPI_Type_contiguous");
    err = MPI_Type_commit(&token);
    if (err == MPI_SUCCESS)
        err = MPI_Alltoallv(send, m->counts[0], m->counts[1], token, recv,
                            m->counts[2], m->counts[3], token, m->comm);
    MPI_Type_free(&token);
    return err == MPI_SUCCESS ? MOES_OK
                              : mpi_failed(ep, err, "MPI_Alltoallv");
}

static int mpi_release(moes_ep *ep)
{
    mpi_state *m = ep->transport_state;
    if (!m)
        return MOES_OK;
    for (int i = 0; i < 4; i++)
        free(m->counts[i]);
    free(m);
    ep->transport_state = NULL;
    return MOES_OK;
}

static const ep_transport mpi_transport = {
    .alltoall_i64 = mpi_alltoall_i64,
    .allreduce_max_i64 = mpi_allreduce_max_i64,
    .alltoallv = mpi_alltoallv,
    .release = mpi_release};

int moes_ep_create_mpi(moes_ep **out, moes_context *ctx,
                       const moes_ep_options *opts, MPI_Comm comm)
{
    /* A NULL out is this rank's failure like any other bad argument:
     * where a collective can run, it goes through the agreement of
     * moes_ep_finish_create, in which the peers wait for this rank. */
    if (out)
        *out = NULL;
    int initialized = 0;
    if (comm == MPI_COMM_NULL ||
        MPI_Initialized(&initialized) != MPI_SUCCESS || !initialized) {
        /* No collective is possible: every rank given such a
         * communicator fails alike. */
        return moes_ep_fail_alone(out, MOES_ERR_INVALID_ARGUMENT,
                                  "comm is MPI_COMM_NULL, or MPI is not "
                                  "initialized");
    }
    moes_ep *ep = moes_ep_alloc(ctx, opts);
    mpi_state *m = ep ? calloc(1, sizeof *m) : NULL;
    int size = 0, rank = 0;
    if (!ep || !m || MPI_Comm_size(comm, &size) != MPI_SUCCESS ||
        MPI_Comm_rank(comm, &rank) != MPI_SUCCESS) {
        /* Without its own memory or the communicator's size this rank
         * cannot take part; the others would wait, as they would on a
         * rank that never called. */
        free(m);
        free(ep);
        moes_ep_set_create_error("cannot allocate the ep context, or query "
                                 "the communicator");
        return MOES_ERR_OUT_OF_MEMORY;
    }
    m->comm = comm;
    ep->transport = &mpi_transport;
    ep->transport_state = m;
    ep->rank = rank;
    ep->n_ranks = size;
    int status = MOES_OK;
    for (int i = 0; i < 4; i++)
        if (!(m->counts[i] = calloc((size_t)size, sizeof(int))))
            status = moes_ep_fail(ep, MOES_ERR_OUT_OF_MEMORY,
                                  "cannot allocate the exchange counts");
    moes_context_info info = {.struct_size = sizeof info};
    if (status == MOES_OK && !out)
        status = moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "ep is NULL");
    else if (status == MOES_OK && !ctx)
        status = moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "ctx is NULL");
    else if (status == MOES_OK && !opts)
        status = moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "opts is NULL");
    else if (status == MOES_OK &&
             (status = moes_context_get_info(ctx, &info)) != MOES_OK)
        moes_ep_fail(ep, status, "%s", moes_last_error(ctx));
    else if (status == MOES_OK && info.backend != MOES_BACKEND_CPU)
        status = moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                              "the MPI transport moves host buffers: ctx "
                              "must be a CPU context");
    if (status != MOES_OK)
        ep->ctx = NULL; /* nothing may be allocated on a bad context */
    return moes_ep_finish_create(out, ep, status);
}
