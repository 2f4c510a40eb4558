/* SPDX-License-Identifier: MIT */
/*
 * cpu_route.h - the routing pass of the CPU backend: check the map and the
 * ids, count per part, and turn counts into each part's first rank per
 * expert. Shared by count and scatter.
 *
 * The tokens are cut into `parts` contiguous ranges, a fixed function of N
 * and the thread count, and each range is walked in t*K+k order; ranks
 * within an expert are then ascending in t*K+k whatever thread runs which
 * part. That is the determinism docs/design-rules.md asks for.
 */
#ifndef MOES_CPU_ROUTE_H
#define MOES_CPU_ROUTE_H

#include <stdint.h>

#include "internal.h"

typedef struct cpu_route {
    const moes_route_plan *plan;
    int64_t parts;
    int64_t *part_counts; /* [parts][E]: counts, then first ranks       */
    int64_t *counts;      /* [E]                                       */
} cpu_route;

/* First token of part p of n_parts over n_tokens. */
static inline int64_t cpu_part_begin(int64_t n_tokens, int64_t n_parts,
                                     int64_t p)
{
    /* n_tokens * p can overflow for huge N; split the product. */
    return (n_tokens / n_parts) * p + (n_tokens % n_parts) * p / n_parts;
}

/* The local expert of (t, k) as an index, or -1; assumes a checked route. */
static inline int64_t cpu_local_expert(const moes_route_plan *rp, int64_t t,
                                       int64_t k)
{
    int64_t id = moes_index_load(rp->r.ids, rp->ids_elem,
                                 t * rp->r.ids_stride + k);
    if (id < 0)
        return -1;
    return rp->r.expert_map ? rp->r.expert_map[id] : id;
}

/* Checks the map, then the ids, and counts. Writes only route's arrays.
 * Returns MOES_OK or the data error's status with *err filled. */
int cpu_route_count(cpu_route *route, int threads, moes_data_error *err);

/* Turns route->part_counts into each part's first rank within each
 * expert (an exclusive scan over parts). */
void cpu_route_ranks(cpu_route *route, int threads);

#endif /* MOES_CPU_ROUTE_H */
