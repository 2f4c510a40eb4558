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

/* Experts' first rows (contiguous/grouped) and M, the rows they need. */
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
        uint32_t *dst = (uint32_t *)a->out_scales + row * a->out_scales_row_stride;
        for (int64_t c = 0; c < plan->n_scale_cols; c++)
            dst[c * a->out_scales_col_stride] = 0;
    }
}

/* Labels and padding of expert e's block, rows [first, first + block),
 * of which the first `real` hold tokens. */
static void finish_block(const moes_scatter_plan *plan, int64_t e,
                         int64_t first, int64_t real, int64_t block)
{
    const moes_scatter_args *a = &plan->a;
    const int64_t pad_label =
        (a->flags & MOES_SCATTER_LABEL_PADDING) ? e : -1;
    if (a->m_indices) {
        for (int64_t r = first; r < first + real; r++)
            moes_index_store(a->m_indices, plan->index_elem, r, e);
        for (int64_t r = first + real; r < first + block; r++)
            moes_index_store(a->m_indices, plan->index_elem, r, pad_label);
    }
    if (a->flags & MOES_SCATTER_ZERO_PADDING)
        for (int64_t r = first + real; r < first + block; r++)
            zero_row(plan, r);
}

int cpu_scatter(moes_context *ctx, const moes_scatter_plan *plan,
                moes_data_error *err)
{
    const moes_scatter_args *a = &plan->a;
    const moes_route_plan *rp = &plan->route;
    const int64_t n = rp->r.n_tokens, k_top = rp->r.top_k;
    const int64_t n_experts = rp->r.n_experts;
    const int masked = a->layout == MOES_LAYOUT_MASKED;
    const int64_t cap = a->capacity;
    const int threads = ctx->cpu_threads;
    const size_t ie = plan->index_elem;
    cpu_route route;
    int64_t *start, rows_used;
    int st;

    st = cpu_route_prepare(ctx, rp, &route, 1, &start);
    if (st != MOES_OK)
        return st;
    st = cpu_route_count(&route, threads, err);
    if (st != MOES_OK)
        return st;
    if (masked) {
        for (int64_t e = 0; e < n_experts; e++)
            start[e] = e * cap;
        rows_used = plan->out_rows;
    } else {
        rows_used = place_experts(route.counts, n_experts, a->alignment,
                                  start);
        if (rows_used > cap) {
            err->status = MOES_ERR_CAPACITY;
            err->index = 0;
            err->value = rows_used;
            err->row_len = 0;
            err->limit = cap;
            return err->status;
        }
    }
    cpu_route_ranks(&route, threads);

    /* Place and copy, one part of the tokens per iteration. */
    MOES_OMP(parallel for num_threads(threads) schedule(static, 1))
    for (int64_t p = 0; p < route.parts; p++) {
        int64_t *rank = route.part_counts + p * n_experts;
        int64_t t_end = cpu_part_begin(n, route.parts, p + 1);
        for (int64_t t = cpu_part_begin(n, route.parts, p); t < t_end; t++) {
            const char *src =
                (const char *)a->x + t * a->x_stride * (int64_t)plan->x_elem;
            for (int64_t k = 0; k < k_top; k++) {
                int64_t e = cpu_local_expert(rp, t, k);
                int64_t row = -1;
                if (e >= 0) {
                    int64_t r = rank[e]++;
                    if (!masked || r < cap)
                        row = start[e] + r;
                }
                moes_index_store(a->out_index, ie, t * a->out_index_stride + k,
                                 row);
                if (row < 0)
                    continue;
                cpu_copy_row((char *)a->out +
                                 row * a->out_stride * (int64_t)plan->x_elem,
                             src, (size_t)plan->row_bytes);
                if (a->x_scales)
                    copy_scales(plan, t, row);
            }
        }
        cpu_copy_fence();
    }

    /* Per-expert outputs, labels and padding. */
    MOES_OMP(parallel for num_threads(threads) schedule(dynamic, 16))
    for (int64_t e = 0; e < n_experts; e++) {
        int64_t count = route.counts[e];
        int64_t real = masked && count > cap ? cap : count;
        int64_t block = masked ? cap : round_up_sat(count, a->alignment);
        finish_block(plan, e, start[e], real, block);
        if (a->counts)
            moes_index_store(a->counts, ie, e, count);
        if (a->expert_start)
            moes_index_store(a->expert_start, ie, e, start[e]);
        if (a->expert_end)
            moes_index_store(a->expert_end, ie, e, start[e] + block);
        if (a->masked_m)
            moes_index_store(a->masked_m, ie, e, real);
    }

    /* The tail past the last expert's block (contiguous and grouped). */
    if (!masked) {
        MOES_OMP(parallel for num_threads(threads) schedule(static))
        for (int64_t r = rows_used; r < cap; r++) {
            if (a->m_indices)
                moes_index_store(a->m_indices, ie, r, -1);
            if (a->flags & MOES_SCATTER_ZERO_PADDING)
                zero_row(plan, r);
        }
    }
    if (a->n_dropped) {
        int64_t dropped = 0;
        for (int64_t e = 0; e < n_experts; e++)
            if (route.counts[e] > cap)
                dropped += route.counts[e] - cap;
        *a->n_dropped = dropped;
    }
    return MOES_OK;
}
