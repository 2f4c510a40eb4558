/* SPDX-License-Identifier: MIT */
/*
 * cpu_backend.h - what the CPU backend's files share: its state, the
 * workspace, and the operations behind its table.
 */
#ifndef MOES_CPU_BACKEND_H
#define MOES_CPU_BACKEND_H

#include <time.h>

#include "cpu_route.h"
#include "internal.h"

typedef struct cpu_state {
    void *workspace;          /* 8-byte aligned (malloc, or the caller's) */
    int64_t workspace_bytes;
    int workspace_from_caller; /* moes_set_workspace's: never freed here */
    struct timespec timestamps[MOES_TIMESTAMP_SLOTS];
} cpu_state;

/* The context's workspace, at least bytes long (grown unless a
 * reservation forbids): *out points to it. */
int cpu_workspace(moes_context *ctx, int64_t bytes, void **out);

/* Sets up route for plan over the workspace (grown as needed). scatter:
 * with room for the first rows and the row of each choice. */
int cpu_route_prepare(moes_context *ctx, const moes_route_plan *plan,
                      cpu_route *route, int scatter);

/* The gather's workspace: one accumulator chunk per thread. */
int64_t cpu_gather_workspace_bytes(int threads, int64_t n_tokens,
                                   int64_t hidden);

int cpu_scatter(moes_context *ctx, const moes_scatter_plan *plan,
                moes_data_error *err);
int cpu_gather(moes_context *ctx, const moes_gather_plan *plan,
               moes_data_error *err);

#endif /* MOES_CPU_BACKEND_H */
