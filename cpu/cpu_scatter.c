/* SPDX-License-Identifier: MIT */
/*
 * cpu_scatter.c - the scatter on the CPU: route, place, copy, pad.
 *
 * Nothing is written to the caller's buffers until the map, the ids and
 * the capacity have been checked (the routing pass only touches the
 * workspace).
 */
#include <string.h>

#include "cpu_backend.h"
#include "cpu_copy.h"
#include "cpu_omp.h"
#include "numerics.h"

/* roundup(v, a), saturating at INT64_MAX (then the capacity check fails). */
static int64_t round_up_sat(int64_t v, int64_t a)
{
    int64_t r;
    if (!moes_add_i64(v, a - 1, &r))
        return INT64_MAX;
    return r / a * a;
}

/* Dense: experts' first rows (contiguous/grouped) and M, the rows they
 * need (INT64_MAX when that does not fit). */
static int64_t place_experts(const int64_t *counts, int64_t n_experts,
                             int64_t alignment, int64_t *start)
{
    int64_t row = 0;
    for (int64_t e = 0; e < n_experts; e++) {
        start[e] = row;
        if (!moes_add_i64(row, round_up_sat(counts[e], alignment), &row))
            row = INT64_MAX;
    }
    return row;
}

/* Sparse: the same over the experts that have rows (the others add no
 * rows); in the masked layout expert e starts at e * C. */
static int64_t place_groups(cpu_route *route, int masked, int64_t cap,
                            int64_t alignment)
{
    int64_t row = 0;
    for (int64_t g = 0; g < route->n_groups; g++) {
        int64_t count = cpu_route_expert_count(route, route->group_expert[g]);
        if (masked) {
            route->group_start[g] = route->group_expert[g] * cap;
            continue;
        }
        route->group_start[g] = row;
        if (!moes_add_i64(row, round_up_sat(count, alignment), &row))
            row = INT64_MAX;
    }
    return row;
}

/* Expert e's count and first row, either way. */
static void expert_rows(const cpu_route *route, const moes_scatter_plan *plan,
                        int64_t e, int64_t *count, int64_t *start)
{
    const moes_scatter_args *a = &plan->a;
    int64_t g, before;
    if (!route->sparse) {
        *count = route->counts[e];
        *start = route->start[e];
        return;
    }
    g = cpu_route_find_group(route, e, &before);
    *count = g >= 0 ? cpu_route_expert_count(route, e) : 0;
    if (a->layout == MOES_LAYOUT_MASKED)
        *start = e * a->capacity;
    else if (g >= 0)
        *start = route->group_start[g];
    else if (before >= 0)
        /* An expert without rows starts where the one before ends. */
        *start = route->group_start[before] +
                 round_up_sat(cpu_route_expert_count(
                                  route, route->group_expert[before]),
                              a->alignment);
    else
        *start = 0;
}

/* The flat index t*S+s of token t's first scale UE8M0 cannot hold, or
 * bad when that is smaller or there is none. */
static int64_t first_bad_scale(const moes_scatter_plan *plan, int64_t t,
                               int64_t bad)
{
    const moes_scatter_args *a = &plan->a;
    const float *row = a->x_scales + t * a->x_scales_stride;
    for (int64_t s = 0; s < plan->n_scales; s++)
        if (!moes_ue8m0_scale_ok(moes_f32_to_bits(row[s])))
            return t * plan->n_scales + s < bad ? t * plan->n_scales + s
                                                : bad;
    return bad;
}

/* Smallest flat index t*S+s of a scale UE8M0 cannot hold, or -1. Every
 * scale of every token is checked, placed or not. */
static int64_t find_bad_scale(const moes_scatter_plan *plan, int threads,
                              int64_t grain)
{
    const int64_t n = plan->route.r.n_tokens;
    int64_t bad = INT64_MAX;
    CPU_FOR_TEAM(cpu_team(threads, grain, cpu_work(n, plan->n_scales)),
                 schedule(static) reduction(min:bad), t, n,
                 bad = first_bad_scale(plan, t, bad));
    return bad == INT64_MAX ? -1 : bad;
}

static void copy_scales(const moes_scatter_plan *plan, int64_t t,
                        int64_t row)
{
    const moes_scatter_args *a = &plan->a;
    const float *src = a->x_scales + t * a->x_scales_stride;
    const int64_t rs = a->out_scales_row_stride, cs = a->out_scales_col_stride;
    if (a->out_scales_format == MOES_SCALES_FP32) {
        float *dst = (float *)a->out_scales + row * rs;
        for (int64_t s = 0; s < plan->n_scales; s++)
            dst[s * cs] = src[s];
    } else {
        uint32_t *dst = (uint32_t *)a->out_scales + row * rs;
        for (int64_t w = 0; w < plan->n_scale_cols; w++)
            dst[w * cs] = moes_ue8m0_word(src, plan->n_scales, w);
    }
}

static void zero_row(const moes_scatter_plan *plan, int64_t row)
{
    const moes_scatter_args *a = &plan->a;
    memset((char *)a->out + row * a->out_stride * (int64_t)plan->x_elem, 0,
           (size_t)plan->row_bytes);
    if (a->x_scales) {
        /* fp32 0.0 and a zero UE8M0 word are both four zero bytes. */
        uint32_t *dst =
            (uint32_t *)a->out_scales + row * a->out_scales_row_stride;
        for (int64_t c = 0; c < plan->n_scale_cols; c++)
            dst[c * a->out_scales_col_stride] = 0;
    }
}

/* Whether rows that hold no token get anything written: a label, a
 * row_source pad, or zeros. */
static int writes_padding(const moes_scatter_args *a)
{
    return a->m_indices || a->row_source ||
           (a->flags & MOES_SCATTER_ZERO_PADDING);
}

/* row_bytes plus scale_words 4-byte scale words, saturating: a call with
 * no rows to copy may name any hidden size. */
static int64_t row_and_scale_bytes(const moes_scatter_plan *plan,
                                   int64_t scale_words)
{
    return cpu_work_sum(plan->row_bytes, cpu_work(scale_words, 4));
}

/* Work units (cpu_omp.h) of a placed choice: its indices stored one at a
 * time, and 16 bytes of its row and scales a unit. */
static int64_t choice_work(const moes_scatter_plan *plan)
{
    if (plan->index_only)
        return 1;
    return 1 + row_and_scale_bytes(plan, plan->a.x_scales ? plan->n_scales
                                                          : 0) / 16;
}

/* Work units of rows padding rows: bytes written in runs, 16 a unit. */
static int64_t pad_work(const moes_scatter_plan *plan, int64_t rows)
{
    const moes_scatter_args *a = &plan->a;
    int64_t bytes = (int64_t)plan->index_elem *
                    ((a->m_indices != NULL) + (a->row_source != NULL));
    if (a->flags & MOES_SCATTER_ZERO_PADDING)
        bytes = cpu_work_sum(bytes, row_and_scale_bytes(plan,
                                                        plan->n_scale_cols));
    return cpu_work(rows, bytes) / 16;
}

/* Rows [first, end) that hold no token: label (m_indices), pad value
 * (row_source) and, when asked for, zero data and scales. */
static void pad_rows(const moes_scatter_plan *plan, int64_t first,
                     int64_t end, int64_t label)
{
    const moes_scatter_args *a = &plan->a;
    /* Nothing to write, nothing to walk: an index-only masked scatter
     * may have a capacity no buffer bounds (2^40 rows per expert). */
    if (!writes_padding(a))
        return;
    if (a->m_indices)
        moes_index_fill(a->m_indices, plan->index_elem, first, end, label);
    if (a->row_source)
        moes_index_fill(a->row_source, plan->index_elem, first, end,
                        a->row_source_pad);
    if (a->flags & MOES_SCATTER_ZERO_PADDING)
        for (int64_t r = first; r < end; r++)
            zero_row(plan, r);
}

/* Labels and padding of expert e's block, rows [first, first + block),
 * of which the first `real` hold tokens (their row_source entries are
 * written with the rows). */
static void finish_block(const moes_scatter_plan *plan, int64_t e,
                         int64_t first, int64_t real, int64_t block)
{
    const moes_scatter_args *a = &plan->a;
    if (a->m_indices)
        moes_index_fill(a->m_indices, plan->index_elem, first, first + real,
                        e);
    pad_rows(plan, first + real, first + block,
             (a->flags & MOES_SCATTER_LABEL_PADDING) ? e : -1);
}

/* Writes (t, k)'s out_index entry and, when it has a row, its
 * row_source entry, the row and its scales. */
static void place_choice(const moes_scatter_plan *plan, int64_t t,
                         int64_t k, int64_t row)
{
    const moes_scatter_args *a = &plan->a;
    moes_index_store(a->out_index, plan->index_elem,
                     t * a->out_index_stride + k, row);
    if (row < 0)
        return;
    if (a->row_source)
        moes_index_store(a->row_source, plan->index_elem, row,
                         t * plan->route.r.top_k + k);
    if (plan->index_only)
        return;
    cpu_copy_row((char *)a->out + row * a->out_stride * (int64_t)plan->x_elem,
                 (const char *)a->x + t * a->x_stride * (int64_t)plan->x_elem,
                 (size_t)plan->row_bytes);
    if (a->x_scales)
        copy_scales(plan, t, row);
}

/* Dense: part p walks its tokens in t*K+k order and hands out ranks. */
static void place_dense_part(const moes_scatter_plan *plan, cpu_route *route,
                             int64_t p)
{
    const moes_scatter_args *a = &plan->a;
    const moes_route_plan *rp = &plan->route;
    const int64_t n = rp->r.n_tokens, k_top = rp->r.top_k;
    const int masked = a->layout == MOES_LAYOUT_MASKED;
    const int64_t cap = a->capacity;
    int64_t *rank = route->part_counts + p * rp->r.n_experts;
    const int64_t t_end = cpu_part_begin(n, route->parts, p + 1);
    for (int64_t t = cpu_part_begin(n, route->parts, p); t < t_end; t++) {
        for (int64_t k = 0; k < k_top; k++) {
            int64_t e = cpu_local_expert(rp, t, k);
            int64_t row = -1;
            if (e >= 0) {
                int64_t r = rank[e]++;
                /* r < counts[e] holds unless ids changed since they
                 * were counted; then the row would be another
                 * expert's (or past the capacity): not placed. */
                if (r < route->counts[e] && (!masked || r < cap))
                    row = route->start[e] + r;
            }
            place_choice(plan, t, k, row);
        }
    }
    cpu_copy_fence();
}

/* Dense: the parts over team threads. */
static void place_dense(const moes_scatter_plan *plan, cpu_route *route,
                        int team)
{
    CPU_FOR_TEAM(team < route->parts ? team : (int)route->parts,
                 schedule(static, 1), p, route->parts,
                 place_dense_part(plan, route, p));
}

/* Sparse: the choices of tokens [first, end), each to its row in row_of
 * (-1: none). */
static void place_tokens(const moes_scatter_plan *plan, const int64_t *row_of,
                         int64_t first, int64_t end)
{
    const int64_t k_top = plan->route.r.top_k;
    for (int64_t t = first; t < end; t++)
        for (int64_t k = 0; k < k_top; k++)
            place_choice(plan, t, k, row_of[t * k_top + k]);
    cpu_copy_fence();
}

/* Sparse: each choice's row from its place in the sorted list, then the
 * copies in token order, over team threads; ids are not read again. */
static void place_sparse(const moes_scatter_plan *plan, cpu_route *route,
                         int team)
{
    const moes_scatter_args *a = &plan->a;
    const int64_t n = plan->route.r.n_tokens;
    const int64_t nk = plan->route.n_choices;
    const int masked = a->layout == MOES_LAYOUT_MASKED;
    const int64_t cap = a->capacity;
    int64_t parts = team < n ? team : n;
    for (int64_t f = 0; f < nk; f++)
        route->row_of[f] = -1;
    for (int64_t g = 0; g < route->n_groups; g++) {
        int64_t first = route->group_first[g];
        int64_t end = g + 1 < route->n_groups ? route->group_first[g + 1]
                                              : route->n_valid;
        for (int64_t i = first; i < end; i++)
            if (!masked || i - first < cap)
                route->row_of[route->choices[i].flat] =
                    route->group_start[g] + (i - first);
    }
    if (parts < 1)
        parts = 1;
    CPU_FOR_TEAM((int)parts, schedule(static, 1), p, parts,
                 place_tokens(plan, route->row_of, cpu_part_begin(n, parts, p),
                              cpu_part_begin(n, parts, p + 1)));
}

/* Labels, padding and the [E] outputs of expert e. */
static void finish_expert(const moes_scatter_plan *plan,
                          const cpu_route *route, int64_t e)
{
    const moes_scatter_args *a = &plan->a;
    const int masked = a->layout == MOES_LAYOUT_MASKED;
    const int64_t cap = a->capacity;
    const size_t ie = plan->index_elem;
    int64_t count, start, real, block;
    expert_rows(route, plan, e, &count, &start);
    real = masked && count > cap ? cap : count;
    block = masked ? cap : round_up_sat(count, a->alignment);
    finish_block(plan, e, start, real, block);
    if (a->counts)
        moes_index_store(a->counts, ie, e, count);
    if (a->expert_start)
        moes_index_store(a->expert_start, ie, e, start);
    if (a->expert_end)
        moes_index_store(a->expert_end, ie, e,
                         start + ((a->flags & MOES_SCATTER_UNPADDED_END)
                                      ? real : block));
    if (a->masked_m)
        moes_index_store(a->masked_m, ie, e, real);
}

int cpu_scatter(moes_context *ctx, const moes_scatter_plan *plan,
                moes_data_error *err)
{
    const moes_scatter_args *a = &plan->a;
    const moes_route_plan *rp = &plan->route;
    const int64_t n_experts = rp->r.n_experts;
    const int masked = a->layout == MOES_LAYOUT_MASKED;
    const int64_t cap = a->capacity;
    const int threads = cpu_threads(ctx);
    /* The threads that place the choices (and copy their rows). */
    const int64_t grain = cpu_grain(ctx);
    const int team = cpu_team(threads, grain, cpu_work(rp->n_choices,
                                                choice_work(plan)));
    const int per_expert_arrays = a->counts || a->expert_start ||
                                  a->expert_end || a->masked_m;
    const int pads = writes_padding(a);
    cpu_route route;
    int64_t rows_used;
    int st;

    st = cpu_route_prepare(ctx, rp, &route, 1);
    if (st != MOES_OK)
        return st;
    st = cpu_route_count(&route, threads, err);
    if (st != MOES_OK)
        return st;
    if (route.sparse) {
        rows_used = place_groups(&route, masked, cap, a->alignment);
    } else if (masked) {
        for (int64_t e = 0; e < n_experts; e++)
            route.start[e] = e * cap;
        rows_used = 0;
    } else {
        rows_used = place_experts(route.counts, n_experts, a->alignment,
                                  route.start);
    }
    if (masked) {
        rows_used = plan->out_rows;
    } else if (rows_used > cap) {
        err->status = MOES_ERR_CAPACITY;
        err->index = 0;
        err->value = rows_used;
        err->row_len = 0;
        err->limit = cap;
        return err->status;
    }
    if (a->x_scales && a->out_scales_format == MOES_SCALES_UE8M0) {
        int64_t bad = find_bad_scale(plan, threads, grain);
        if (bad >= 0) {
            int64_t t = bad / plan->n_scales, s = bad % plan->n_scales;
            err->status = MOES_ERR_INVALID_SCALE;
            err->index = bad;
            err->value = (int64_t)moes_f32_to_bits(
                a->x_scales[t * a->x_scales_stride + s]);
            err->row_len = plan->n_scales;
            err->limit = 0;
            return err->status;
        }
    }

    /* Nothing is wrong: from here on the caller's buffers are written. */
    if (route.sparse) {
        place_sparse(plan, &route, team);
    } else {
        cpu_route_ranks(&route, threads);
        place_dense(plan, &route, team);
    }

    /* Per-expert outputs, labels and padding. Every expert when an [E]
     * output is asked for or the layout is masked (each expert owns C
     * rows); else only the experts that have rows, so that the sparse
     * way does no work of size E. */
    if (per_expert_arrays || masked || !route.sparse) {
        if (per_expert_arrays || pads) {
            /* Four [E] outputs an expert, and its block's padding. */
            const int64_t work = cpu_work_sum(
                cpu_work(n_experts, 4), pads ? pad_work(plan, rows_used) : 0);
            CPU_FOR_TEAM(cpu_team(threads, grain, work), schedule(dynamic, 16),
                         e, n_experts, finish_expert(plan, &route, e));
        }
    } else if (pads) {
        for (int64_t g = 0; g < route.n_groups; g++)
            finish_expert(plan, &route, route.group_expert[g]);
    }

    /* The tail past the last expert's block (contiguous and grouped),
     * only when something is written there: an unused capacity costs
     * nothing. */
    if (!masked && pads) {
        const int64_t tail = cap - rows_used;
        const int64_t parts = cpu_team(threads, grain, pad_work(plan, tail));
        CPU_FOR_TEAM((int)parts, schedule(static, 1), p, parts,
                     pad_rows(plan, rows_used + cpu_part_begin(tail, parts, p),
                              rows_used + cpu_part_begin(tail, parts, p + 1),
                              -1));
    }
    if (a->n_dropped) {
        int64_t dropped = 0;
        if (route.sparse) {
            for (int64_t g = 0; g < route.n_groups; g++) {
                int64_t c = cpu_route_expert_count(&route,
                                                   route.group_expert[g]);
                if (c > cap)
                    dropped += c - cap;
            }
        } else {
            for (int64_t e = 0; e < n_experts; e++)
                if (route.counts[e] > cap)
                    dropped += route.counts[e] - cap;
        }
        *a->n_dropped = dropped;
    }
    return MOES_OK;
}
