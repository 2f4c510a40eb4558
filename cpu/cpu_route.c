/* SPDX-License-Identifier: MIT */
/*
 * cpu_route.c - check the expert map and the ids, count, rank.
 */
#include <string.h>

#include "cpu_omp.h"
#include "cpu_route.h"

/* Smallest flat index of a bad map entry, or -1. */
static int64_t find_bad_map_entry(const moes_route_plan *rp, int threads)
{
    const int32_t *map = rp->r.expert_map;
    const int64_t n = rp->r.n_experts_global, e = rp->r.n_experts;
    int64_t bad = INT64_MAX;
    MOES_OMP(parallel for num_threads(threads) schedule(static) reduction(min:bad))
    for (int64_t i = 0; i < n; i++)
        if ((map[i] < -1 || map[i] >= e) && i < bad)
            bad = i;
    return bad == INT64_MAX ? -1 : bad;
}

int cpu_route_count(cpu_route *route, int threads, moes_data_error *err)
{
    const moes_route_plan *rp = route->plan;
    const int64_t n = rp->r.n_tokens, k_top = rp->r.top_k;
    const int64_t n_experts = rp->r.n_experts;
    const int64_t n_global = rp->r.n_experts_global;
    const int64_t parts = route->parts;
    const int32_t *map = rp->r.expert_map;
    int64_t bad = INT64_MAX;

    if (map) {
        int64_t i = find_bad_map_entry(rp, threads);
        if (i >= 0) {
            err->status = MOES_ERR_INVALID_MAP;
            err->index = i;
            err->value = map[i];
            err->row_len = 0;
            err->limit = n_experts;
            return err->status;
        }
    }

    MOES_OMP(parallel for num_threads(threads) schedule(static, 1) reduction(min:bad))
    for (int64_t p = 0; p < parts; p++) {
        int64_t *c = route->part_counts + p * n_experts;
        int64_t t_end = cpu_part_begin(n, parts, p + 1);
        memset(c, 0, (size_t)n_experts * sizeof *c);
        for (int64_t t = cpu_part_begin(n, parts, p); t < t_end; t++) {
            for (int64_t k = 0; k < k_top; k++) {
                int64_t id = moes_index_load(rp->r.ids, rp->ids_elem,
                                             t * rp->r.ids_stride + k);
                if (id < -1 || id >= n_global) {
                    /* The first bad one of this part is its smallest. */
                    if (t * k_top + k < bad)
                        bad = t * k_top + k;
                    t = t_end;
                    break;
                }
                if (id >= 0) {
                    int64_t e = map ? map[id] : id;
                    if (e >= 0)
                        c[e]++;
                }
            }
        }
    }
    if (bad != INT64_MAX) {
        int64_t t = bad / k_top, k = bad % k_top;
        err->status = MOES_ERR_INVALID_ID;
        err->index = bad;
        err->value = moes_index_load(rp->r.ids, rp->ids_elem,
                                     t * rp->r.ids_stride + k);
        err->row_len = k_top;
        err->limit = n_global;
        return err->status;
    }

    MOES_OMP(parallel for num_threads(threads) schedule(static))
    for (int64_t e = 0; e < n_experts; e++) {
        int64_t sum = 0;
        for (int64_t p = 0; p < parts; p++)
            sum += route->part_counts[p * n_experts + e];
        route->counts[e] = sum;
    }
    return MOES_OK;
}

void cpu_route_ranks(cpu_route *route, int threads)
{
    const int64_t n_experts = route->plan->r.n_experts;
    const int64_t parts = route->parts;
    MOES_OMP(parallel for num_threads(threads) schedule(static))
    for (int64_t e = 0; e < n_experts; e++) {
        int64_t run = 0;
        for (int64_t p = 0; p < parts; p++) {
            int64_t c = route->part_counts[p * n_experts + e];
            route->part_counts[p * n_experts + e] = run;
            run += c;
        }
    }
}
