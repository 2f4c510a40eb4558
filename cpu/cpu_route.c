/* SPDX-License-Identifier: MIT */
/*
 * cpu_route.c - check the expert map and the ids, count, rank.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_omp.h"
#include "cpu_route.h"

/* N*K below E / CPU_SPARSE_RATIO takes the sparse way: sorting N*K pairs
 * then costs less than clearing and scanning E counters. */
#define CPU_SPARSE_RATIO 4

static int route_is_sparse(const moes_route_plan *rp)
{
    return rp->n_choices < rp->r.n_experts / CPU_SPARSE_RATIO;
}

/* Parts of the dense way: one per thread, never more than tokens, and
 * never so many that parts * E outgrows max(N*K, E). */
static int64_t dense_parts(const moes_route_plan *rp, int threads)
{
    int64_t parts = threads;
    int64_t by_size = rp->n_choices / rp->r.n_experts;
    if (parts > rp->r.n_tokens)
        parts = rp->r.n_tokens;
    if (parts > by_size)
        parts = by_size;
    return parts < 1 ? 1 : parts;
}

int64_t cpu_route_workspace_bytes(const moes_route_plan *plan, int threads,
                                  int scatter)
{
    int64_t elems, len;
    if (route_is_sparse(plan)) {
        /* choices (2 each), groups (2 each), and for the scatter the
         * groups' first rows and each choice's row. */
        elems = scatter ? 6 : 4;
        if (!moes_mul_i64(plan->n_choices, elems, &len))
            return -1;
    } else {
        elems = dense_parts(plan, threads) + (scatter ? 2 : 1);
        if (!moes_mul_i64(plan->r.n_experts, elems, &len))
            return -1;
    }
    return moes_mul_i64(len, 8, &len) ? len : -1;
}

void cpu_route_init(cpu_route *route, const moes_route_plan *plan,
                    int threads, int scatter, void *workspace)
{
    int64_t *w = workspace;
    const int64_t n_experts = plan->r.n_experts, nk = plan->n_choices;
    memset(route, 0, sizeof *route);
    route->plan = plan;
    route->sparse = route_is_sparse(plan);
    route->parts = route->sparse ? 1 : dense_parts(plan, threads);
    /* A route with nothing to hold (no choices on the sparse path) has no
     * workspace: its arrays stay NULL, since even NULL + 0 is undefined. */
    if (!w)
        return;
    if (route->sparse) {
        route->choices = (cpu_choice *)w;
        route->group_expert = w + 2 * nk;
        route->group_first = w + 3 * nk;
        if (scatter) {
            route->group_start = w + 4 * nk;
            route->row_of = w + 5 * nk;
        }
    } else {
        route->part_counts = w;
        route->counts = w + route->parts * n_experts;
        if (scatter)
            route->start = route->counts + n_experts;
    }
}

/* Smallest flat index of a bad map entry, or -1. */
static int64_t find_bad_map_entry(const moes_route_plan *rp, int threads,
                                  int64_t grain)
{
    const int32_t *map = rp->r.expert_map;
    const int64_t n = rp->r.n_experts_global, e = rp->r.n_experts;
    int64_t bad = INT64_MAX;
    CPU_FOR_TEAM(cpu_team(threads, grain, n),
                 schedule(static) reduction(min:bad), i, n,
                 if (!MOES_INDEX_OK(map[i], e) && i < bad) bad = i);
    return bad == INT64_MAX ? -1 : bad;
}

static int bad_id(const moes_route_plan *rp, int64_t bad, moes_data_error *err)
{
    const int64_t k_top = rp->r.top_k;
    int64_t t = bad / k_top, k = bad % k_top;
    err->status = MOES_ERR_INVALID_ID;
    err->index = bad;
    err->value = moes_index_load(rp->r.ids, rp->ids_elem,
                                 t * rp->r.ids_stride + k);
    err->row_len = k_top;
    err->limit = rp->r.n_experts_global;
    return err->status;
}

static int compare_choices(const void *pa, const void *pb)
{
    const cpu_choice *a = pa, *b = pb;
    if (a->expert != b->expert)
        return a->expert < b->expert ? -1 : 1;
    return (a->flat > b->flat) - (a->flat < b->flat);
}

/* The sparse way: collect the valid choices in t*K+k order (checking
 * each id as it is read, and using only what this pass checked), sort
 * them by expert (ties keep t*K+k order: flat is unique), and group. */
static int count_sparse(cpu_route *route, moes_data_error *err)
{
    const moes_route_plan *rp = route->plan;
    const int64_t n = rp->r.n_tokens, k_top = rp->r.top_k;
    const int64_t n_global = rp->r.n_experts_global;
    const int32_t *map = rp->r.expert_map;
    int64_t valid = 0, groups = 0;

    for (int64_t t = 0; t < n; t++) {
        for (int64_t k = 0; k < k_top; k++) {
            int64_t id = moes_index_load(rp->r.ids, rp->ids_elem,
                                         t * rp->r.ids_stride + k);
            int64_t e;
            if (!MOES_INDEX_OK(id, n_global))
                return bad_id(rp, t * k_top + k, err);
            if (id < 0)
                continue;
            e = map ? map[id] : id;
            /* The map was checked, but by another pass: a value that is
             * no longer in range counts nowhere. */
            if (e < 0 || e >= rp->r.n_experts)
                continue;
            route->choices[valid].expert = e;
            route->choices[valid].flat = t * k_top + k;
            valid++;
        }
    }
    route->n_valid = valid;
    if (valid > 1)
        qsort(route->choices, (size_t)valid, sizeof *route->choices,
              compare_choices);
    for (int64_t i = 0; i < valid; i++) {
        if (i == 0 ||
            route->choices[i].expert != route->choices[i - 1].expert) {
            route->group_expert[groups] = route->choices[i].expert;
            route->group_first[groups] = i;
            groups++;
        }
    }
    route->n_groups = groups;
    return MOES_OK;
}

/* Counts part p's choices into its row of part_counts. Returns bad, or
 * the flat index of the part's first bad id when that is smaller (the
 * part then stops there). */
static int64_t count_part(cpu_route *route, int64_t p, int64_t bad)
{
    const moes_route_plan *rp = route->plan;
    const int64_t n = rp->r.n_tokens, k_top = rp->r.top_k;
    const int64_t n_experts = rp->r.n_experts;
    const int64_t n_global = rp->r.n_experts_global;
    const int32_t *map = rp->r.expert_map;
    int64_t *c = route->part_counts + p * n_experts;
    const int64_t t_end = cpu_part_begin(n, route->parts, p + 1);
    memset(c, 0, (size_t)n_experts * sizeof *c);
    for (int64_t t = cpu_part_begin(n, route->parts, p); t < t_end; t++) {
        for (int64_t k = 0; k < k_top; k++) {
            int64_t id = moes_index_load(rp->r.ids, rp->ids_elem,
                                         t * rp->r.ids_stride + k);
            if (!MOES_INDEX_OK(id, n_global))
                /* The first bad one of this part is its smallest. */
                return t * k_top + k < bad ? t * k_top + k : bad;
            if (id >= 0) {
                int64_t e = map ? map[id] : id;
                if (e >= 0 && e < n_experts)
                    c[e]++;
            }
        }
    }
    return bad;
}

/* Expert e's count: the sum of the parts' counts. */
static void sum_part_counts(cpu_route *route, int64_t e)
{
    const int64_t n_experts = route->plan->r.n_experts;
    int64_t sum = 0;
    for (int64_t p = 0; p < route->parts; p++)
        sum += route->part_counts[p * n_experts + e];
    route->counts[e] = sum;
}

/* Expert e's first rank in each part: an exclusive scan over the parts'
 * counts, in place. */
static void rank_parts(cpu_route *route, int64_t e)
{
    const int64_t n_experts = route->plan->r.n_experts;
    int64_t run = 0;
    for (int64_t p = 0; p < route->parts; p++) {
        int64_t c = route->part_counts[p * n_experts + e];
        route->part_counts[p * n_experts + e] = run;
        run += c;
    }
}

int cpu_route_count(cpu_route *route, int threads, moes_data_error *err)
{
    const moes_route_plan *rp = route->plan;
    const int64_t n_experts = rp->r.n_experts;
    const int64_t parts = route->parts;
    const int32_t *map = rp->r.expert_map;
    int64_t bad = INT64_MAX;

    if (map) {
        int64_t i = find_bad_map_entry(rp, threads, route->grain);
        if (i >= 0) {
            err->status = MOES_ERR_INVALID_MAP;
            err->index = i;
            err->value = map[i];
            err->row_len = 0;
            err->limit = n_experts;
            return err->status;
        }
    }
    if (route->sparse)
        return count_sparse(route, err);

    /* A thread a part at most: parts never exceed threads. */
    CPU_FOR_TEAM(cpu_team((int)parts, route->grain, rp->n_choices),
                 schedule(static, 1) reduction(min:bad), p, parts,
                 bad = count_part(route, p, bad));
    if (bad != INT64_MAX)
        return bad_id(rp, bad, err);

    CPU_FOR_TEAM(cpu_team(threads, route->grain, cpu_work(n_experts, parts)),
                 schedule(static), e, n_experts, sum_part_counts(route, e));
    return MOES_OK;
}

void cpu_route_ranks(cpu_route *route, int threads)
{
    const int64_t n_experts = route->plan->r.n_experts;
    CPU_FOR_TEAM(cpu_team(threads, route->grain,
                          cpu_work(n_experts, route->parts)),
                 schedule(static), e, n_experts, rank_parts(route, e));
}

int64_t cpu_route_find_group(const cpu_route *route, int64_t e,
                             int64_t *before)
{
    /* The first group whose expert is >= e. */
    int64_t lo = 0, hi = route->n_groups;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (route->group_expert[mid] < e)
            lo = mid + 1;
        else
            hi = mid;
    }
    *before = lo - 1;
    return lo < route->n_groups && route->group_expert[lo] == e ? lo : -1;
}

int64_t cpu_route_expert_count(const cpu_route *route, int64_t e)
{
    int64_t g, before;
    if (!route->sparse)
        return route->counts[e];
    g = cpu_route_find_group(route, e, &before);
    if (g < 0)
        return 0;
    return (g + 1 < route->n_groups ? route->group_first[g + 1]
                                    : route->n_valid) -
           route->group_first[g];
}
