/* SPDX-License-Identifier: MIT */
/*
 * cpu_route.h - the routing pass of the CPU backend: check the map and the
 * ids, count, and give each valid (t, k) its rank within its expert.
 * Shared by count and scatter.
 *
 * Two ways, chosen by the sizes alone, with the same results:
 *
 * dense   E is not large next to N*K. The tokens are cut into `parts`
 *         contiguous ranges, each counted into its own [E] array and
 *         walked in t*K+k order, so ranks within an expert are ascending
 *         in t*K+k whatever thread runs which part (the determinism the
 *         library promises). parts * E is kept under max(N*K, E): the
 *         counters never outgrow the data or the per-expert outputs.
 * sparse  N*K is small next to E. The few (expert, t*K+k) pairs are
 *         sorted instead, so work and memory follow N*K; nothing of size
 *         E is touched but the caller's own [E] outputs.
 */
#ifndef MOES_CPU_ROUTE_H
#define MOES_CPU_ROUTE_H

#include <stdint.h>

#include "internal.h"

/* One (local expert, flat index t*K+k) of a valid choice. */
typedef struct cpu_choice {
    int64_t expert;
    int64_t flat;
} cpu_choice;

typedef struct cpu_route {
    const moes_route_plan *plan;
    int sparse;
    int64_t parts;
    int64_t grain;        /* work a thread (cpu_team), set by the caller */
    /* dense */
    int64_t *part_counts; /* [parts][E]: counts, then first ranks       */
    int64_t *counts;      /* [E]                                       */
    int64_t *start;       /* [E] first rows (scatter only), or NULL     */
    /* sparse */
    cpu_choice *choices;  /* [n_valid], sorted by (expert, flat)        */
    int64_t n_valid;
    int64_t *group_expert; /* [n_groups] ascending: experts with rows   */
    int64_t *group_first;  /* [n_groups] index of its first choice      */
    int64_t *group_start;  /* [n_groups] first row (scatter only)       */
    int64_t n_groups;
    int64_t *row_of;       /* [N*K] the row of each choice, or -1       */
} cpu_route;

/* Workspace bytes the routing of plan needs with `threads` threads
 * (scatter: with room for first rows and each choice's row), or -1 when
 * the count does not fit int64. */
int64_t cpu_route_workspace_bytes(const moes_route_plan *plan, int threads,
                                  int scatter);

/* Sets up route over `workspace` (of cpu_route_workspace_bytes bytes). */
void cpu_route_init(cpu_route *route, const moes_route_plan *plan,
                    int threads, int scatter, void *workspace);

/* First token of part p of n_parts over n_tokens. */
static inline int64_t cpu_part_begin(int64_t n_tokens, int64_t n_parts,
                                     int64_t p)
{
    /* n_tokens * p can overflow for huge N; split the product. */
    return (n_tokens / n_parts) * p + (n_tokens % n_parts) * p / n_parts;
}

/* The local expert of (t, k) as an index, or -1 for "not here". The ids
 * and the map are read again here, after the pass that checked them: a
 * value that is out of range now (the caller changed the buffer during
 * the call) is treated as -1, never used as an index. */
static inline int64_t cpu_local_expert(const moes_route_plan *rp, int64_t t,
                                       int64_t k)
{
    int64_t id = moes_index_load(rp->r.ids, rp->ids_elem,
                                 t * rp->r.ids_stride + k);
    int64_t e;
    if (id < 0 || id >= rp->r.n_experts_global)
        return -1;
    e = rp->r.expert_map ? rp->r.expert_map[id] : id;
    return e >= 0 && e < rp->r.n_experts ? e : -1;
}

/* Checks the map, then the ids, and counts. Writes only route's arrays.
 * Returns MOES_OK or the data error's status with *err filled. */
int cpu_route_count(cpu_route *route, int threads, moes_data_error *err);

/* Dense: turns route->part_counts into each part's first rank within each
 * expert (an exclusive scan over parts). */
void cpu_route_ranks(cpu_route *route, int threads);

/* Count of expert e (any e < E, either way). */
int64_t cpu_route_expert_count(const cpu_route *route, int64_t e);

/* Sparse: the group of expert e, or -1 when e has no rows; *before is the
 * last group of an expert below e (or -1). */
int64_t cpu_route_find_group(const cpu_route *route, int64_t e,
                             int64_t *before);

#endif /* MOES_CPU_ROUTE_H */
