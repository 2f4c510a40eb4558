/* SPDX-License-Identifier: MIT */
/*
 * oracle.c - count, scatter and gather, straight from docs/design-rules.md.
 *
 * Plain loops, one thread, no cleverness: the scatter places expert after
 * expert, each time walking every (t, k) in t*K + k order. All checks of
 * the data come before the first write.
 */
#include <stdlib.h>
#include <string.h>

#include "elements.h"
#include "numerics.h"
#include "oracle.h"
#include "oracle_args.h"

static int64_t round_up(int64_t v, int64_t a)
{
    __extension__ __int128 r = ((__int128)v + a - 1) / a * a;
    return r > INT64_MAX ? INT64_MAX : (int64_t)r;
}

/*
 * The routing's data checks, then the local expert of every (t, k) in
 * flat order (-1 for "not here") and the counts. *local and *counts are
 * allocated here and freed by the caller.
 */
static int route(const oracle_routing *or_, int64_t **local_out,
                 int64_t **counts_out)
{
    const moes_routing *r = &or_->r;
    const int64_t n = r->n_tokens, k_top = r->top_k;
    int64_t *local, *counts;

    *local_out = NULL;
    *counts_out = NULL;
    if (r->expert_map) {
        for (int64_t i = 0; i < r->n_experts_global; i++) {
            int32_t m = r->expert_map[i];
            if (m < -1 || m >= r->n_experts)
                return oracle_fail(MOES_ERR_INVALID_MAP,
                    "expert_map[%lld] = %lld is outside [-1, %lld)",
                    (long long)i, (long long)m, (long long)r->n_experts);
        }
    }
    for (int64_t t = 0; t < n; t++) {
        for (int64_t k = 0; k < k_top; k++) {
            int64_t id = load_index(r->ids, or_->ids_elem,
                                    t * r->ids_stride + k);
            if (id < -1 || id >= r->n_experts_global)
                return oracle_fail(MOES_ERR_INVALID_ID,
                    "ids[%lld][%lld] = %lld is outside [-1, %lld)",
                    (long long)t, (long long)k, (long long)id,
                    (long long)r->n_experts_global);
        }
    }

    local = malloc((size_t)(or_->choices > 0 ? or_->choices : 1) *
                   sizeof *local);
    counts = calloc((size_t)r->n_experts, sizeof *counts);
    if (!local || !counts) {
        free(local);
        free(counts);
        return oracle_fail(MOES_ERR_OUT_OF_MEMORY, "oracle: out of memory");
    }
    for (int64_t t = 0; t < n; t++) {
        for (int64_t k = 0; k < k_top; k++) {
            int64_t id = load_index(r->ids, or_->ids_elem,
                                    t * r->ids_stride + k);
            int64_t e = id;
            if (id >= 0 && r->expert_map)
                e = r->expert_map[id];
            local[t * k_top + k] = e;
            if (e >= 0)
                counts[e]++;
        }
    }
    *local_out = local;
    *counts_out = counts;
    return MOES_OK;
}

int moes_oracle_count(const moes_routing *routing, void *counts,
                      int counts_dtype)
{
    oracle_routing or_;
    size_t elem;
    int64_t *local, *c;
    int st = oracle_check_count(routing, counts, counts_dtype, &or_, &elem);
    if (st != MOES_OK)
        return st;
    st = route(&or_, &local, &c);
    if (st != MOES_OK)
        return st;
    for (int64_t e = 0; e < or_.r.n_experts; e++)
        store_index(counts, elem, e, c[e]);
    free(local);
    free(c);
    return MOES_OK;
}

int moes_oracle_distinct_experts(const moes_routing *routing, void *out,
                                 int out_dtype, int64_t out_stride)
{
    oracle_routing or_;
    size_t elem;
    int64_t *local, *c;
    int st = oracle_check_distinct(routing, out, out_dtype, &out_stride,
                                   &or_, &elem);
    if (st != MOES_OK)
        return st;
    st = route(&or_, &local, &c);
    if (st != MOES_OK)
        return st;
    const int64_t k_top = or_.r.top_k;
    for (int64_t t = 0; t < or_.r.n_tokens; t++) {
        /* The next larger expert of the token each time, until none. */
        int64_t j = 0, last = -1;
        for (;;) {
            int64_t next = -1;
            for (int64_t k = 0; k < k_top; k++) {
                int64_t e = local[t * k_top + k];
                if (e > last && (next < 0 || e < next))
                    next = e;
            }
            if (next < 0)
                break;
            store_index(out, elem, t * out_stride + j++, next);
            last = next;
        }
        for (; j < k_top; j++)
            store_index(out, elem, t * out_stride + j, -1);
    }
    free(local);
    free(c);
    return MOES_OK;
}

/* Row `row` of out gets x[t] and its scales. */
static void copy_row(const oracle_scatter *s, int64_t t, int64_t row)
{
    const moes_scatter_args *a = &s->a;
    const int64_t rs = a->out_scales_row_stride;
    const int64_t cs = a->out_scales_col_stride;
    memcpy((char *)a->out + (size_t)(row * a->out_stride) * s->x_elem,
           (const char *)a->x + (size_t)(t * a->x_stride) * s->x_elem,
           (size_t)a->hidden * s->x_elem);
    if (!a->x_scales)
        return;
    const float *src = a->x_scales + t * a->x_scales_stride;
    if (a->out_scales_format == MOES_SCALES_FP32) {
        for (int64_t j = 0; j < s->n_scales; j++)
            memcpy((char *)a->out_scales + (size_t)(row * rs + j * cs) * 4,
                   &src[j], 4);
        return;
    }
    for (int64_t w = 0; w < s->n_scale_cols; w++) {
        /* Byte b of word w: the exponent field of scale 4w + b. */
        uint8_t bytes[4] = {0, 0, 0, 0};
        uint32_t word;
        for (int b = 0; b < 4; b++) {
            if (4 * w + b < s->n_scales) {
                uint32_t bits;
                memcpy(&bits, &src[4 * w + b], 4);
                bytes[b] = (uint8_t)((bits >> 23) & 0xFF);
            }
        }
        word = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 |
               (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
        memcpy((char *)a->out_scales + (size_t)(row * rs + w * cs) * 4, &word,
               4);
    }
}

/* A row that holds no token: its label, its row_source pad, and zero
 * data and zero scales when asked for. */
static void pad_row(const oracle_scatter *s, int64_t row, int64_t label)
{
    const moes_scatter_args *a = &s->a;
    if (a->m_indices)
        store_index(a->m_indices, s->index_elem, row, label);
    if (a->row_source)
        store_index(a->row_source, s->index_elem, row, a->row_source_pad);
    if (!(a->flags & MOES_SCATTER_ZERO_PADDING))
        return;
    memset((char *)a->out + (size_t)(row * a->out_stride) * s->x_elem, 0,
           (size_t)a->hidden * s->x_elem);
    if (a->x_scales)
        for (int64_t c = 0; c < s->n_scale_cols; c++)
            memset((char *)a->out_scales +
                       (size_t)(row * a->out_scales_row_stride +
                                c * a->out_scales_col_stride) * 4,
                   0, 4);
}

int moes_oracle_scatter(const moes_routing *routing,
                        const moes_scatter_args *args)
{
    oracle_scatter s;
    const moes_scatter_args *a;
    int64_t n, k_top, n_exp, cap, *local, *counts, *start, *block;
    int masked, pads, st;

    st = oracle_check_scatter(routing, args, &s);
    if (st != MOES_OK || (s.a.flags & MOES_SCATTER_CHECK_ONLY))
        return st;
    a = &s.a;
    n = s.route.r.n_tokens;
    k_top = s.route.r.top_k;
    n_exp = s.route.r.n_experts;
    cap = a->capacity;
    masked = a->layout == MOES_LAYOUT_MASKED;
    pads = a->m_indices || a->row_source ||
           (a->flags & MOES_SCATTER_ZERO_PADDING);

    st = route(&s.route, &local, &counts);
    if (st != MOES_OK)
        return st;
    start = calloc((size_t)n_exp, sizeof *start);
    block = calloc((size_t)n_exp, sizeof *block);
    if (!start || !block) {
        free(local);
        free(counts);
        free(start);
        free(block);
        return oracle_fail(MOES_ERR_OUT_OF_MEMORY, "oracle: out of memory");
    }

    /* Where each expert's rows begin, and how many rows it owns. */
    if (masked) {
        for (int64_t e = 0; e < n_exp; e++) {
            start[e] = e * cap;
            block[e] = cap;
        }
    } else {
        int64_t m = 0;
        for (int64_t e = 0; e < n_exp; e++) {
            start[e] = m;
            block[e] = round_up(counts[e], a->alignment);
            m = block[e] > INT64_MAX - m ? INT64_MAX : m + block[e];
        }
        if (m > cap) {
            free(local);
            free(counts);
            free(start);
            free(block);
            if (m == INT64_MAX)
                return oracle_fail(MOES_ERR_CAPACITY,
                    "capacity = %lld is smaller than the rows this routing "
                    "needs (their count does not fit 64 bits)",
                    (long long)cap);
            return oracle_fail(MOES_ERR_CAPACITY,
                "capacity = %lld is smaller than the %lld rows this routing "
                "needs", (long long)cap, (long long)m);
        }
    }

    /* UE8M0 keeps only the exponent: every scale of every token must be a
     * positive, finite, normal power of two (exponent 1..254, no sign, no
     * mantissa bits), checked after map, ids and capacity. */
    if (a->x_scales && a->out_scales_format == MOES_SCALES_UE8M0) {
        for (int64_t t = 0; t < n; t++) {
            for (int64_t j = 0; j < s.n_scales; j++) {
                uint32_t bits;
                float f;
                memcpy(&bits, &a->x_scales[t * a->x_scales_stride + j], 4);
                if ((bits & 0x80000000u) == 0 && (bits & 0x007FFFFFu) == 0 &&
                    (bits >> 23) >= 1 && (bits >> 23) <= 254)
                    continue;
                memcpy(&f, &bits, 4);
                free(local);
                free(counts);
                free(start);
                free(block);
                return oracle_fail(MOES_ERR_INVALID_SCALE,
                    "x_scales[%lld][%lld] = %g (bits 0x%08x) is not a "
                    "positive, finite, normal power of two, which UE8M0 "
                    "needs", (long long)t, (long long)j, (double)f,
                    (unsigned)bits);
            }
        }
    }

    /* Nothing is wrong: now write. Unplaced (t, k) say -1. */
    for (int64_t t = 0; t < n; t++)
        for (int64_t k = 0; k < k_top; k++)
            store_index(a->out_index, s.index_elem,
                        t * a->out_index_stride + k, -1);

    for (int64_t e = 0; e < n_exp; e++) {
        int64_t placed = 0;
        int64_t label = (a->flags & MOES_SCATTER_LABEL_PADDING) ? e : -1;
        for (int64_t f = 0; f < n * k_top; f++) {
            if (local[f] != e)
                continue;
            if (!masked || placed < cap) {
                int64_t row = start[e] + placed;
                int64_t t = f / k_top, k = f % k_top;
                store_index(a->out_index, s.index_elem,
                            t * a->out_index_stride + k, row);
                if (!s.index_only)
                    copy_row(&s, t, row);
                if (a->m_indices)
                    store_index(a->m_indices, s.index_elem, row, e);
                if (a->row_source)
                    store_index(a->row_source, s.index_elem, row, f);
            }
            placed++;
        }
        /* placed == counts[e]; the rows of the block after the kept ones
         * are padding (walked only when something is written there: an
         * index-only call's capacity need not fit any buffer). */
        for (int64_t r = start[e] + (masked && placed > cap ? cap : placed);
             pads && r < start[e] + block[e]; r++)
            pad_row(&s, r, label);
        if (a->counts)
            store_index(a->counts, s.index_elem, e, counts[e]);
        if (a->expert_start)
            store_index(a->expert_start, s.index_elem, e, start[e]);
        /* The end of the block, or with UNPADDED_END of the rows kept. */
        if (a->expert_end)
            store_index(a->expert_end, s.index_elem, e,
                        (a->flags & MOES_SCATTER_UNPADDED_END)
                            ? start[e] + (masked && counts[e] > cap
                                              ? cap : counts[e])
                            : start[e] + block[e]);
        if (a->masked_m)
            store_index(a->masked_m, s.index_elem, e,
                        counts[e] < cap ? counts[e] : cap);
    }

    if (!masked) {
        /* The tail after the last block, up to the capacity. */
        int64_t used = n_exp > 0 ? start[n_exp - 1] + block[n_exp - 1] : 0;
        for (int64_t r = used; pads && r < cap; r++)
            pad_row(&s, r, -1);
    }
    if (a->n_dropped) {
        int64_t dropped = 0;
        for (int64_t e = 0; e < n_exp; e++)
            if (counts[e] > cap)
                dropped += counts[e] - cap;
        *a->n_dropped = dropped;
    }
    free(local);
    free(counts);
    free(start);
    free(block);
    return MOES_OK;
}

static void store_float(void *base, int dtype, int64_t i, float f)
{
    if (dtype == MOES_DTYPE_FP32) {
        /* Every NaN written is canonical: quiet, its sign, no payload. */
        uint32_t u;
        memcpy(&u, &f, 4);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u)
            u = (u & 0x80000000u) | 0x7FC00000u;
        memcpy((char *)base + i * 4, &u, 4);
        return;
    }
    uint16_t h = dtype == MOES_DTYPE_BF16 ? moes_f32_to_bf16(f)
                                          : moes_f32_to_f16(f);
    memcpy((char *)base + i * 2, &h, 2);
}

int moes_oracle_gather(const moes_gather_args *args)
{
    oracle_gather g;
    const moes_gather_args *a;
    int st = oracle_check_gather(args, &g);
    if (st != MOES_OK || (g.a.flags & MOES_GATHER_CHECK_ONLY))
        return st;
    a = &g.a;
    for (int64_t t = 0; t < a->n_tokens; t++) {
        for (int64_t k = 0; k < a->top_k; k++) {
            int64_t row = load_index(a->out_index, g.index_elem,
                                     t * a->out_index_stride + k);
            if (row < -1 || row >= a->y_rows)
                return oracle_fail(MOES_ERR_INVALID_OUT_INDEX,
                    "out_index[%lld][%lld] = %lld is outside [-1, %lld)",
                    (long long)t, (long long)k, (long long)row,
                    (long long)a->y_rows);
        }
    }
    /* Each token's placed choices, in k order, listed once: the sum
     * skips the others, and a wide top_k of mostly -1 (which a fuzzer
     * finds) must not cost K loads per element. */
    if (a->n_tokens == 0)
        return MOES_OK; /* (top_k is then bounded by no buffer) */
    int64_t *placed = malloc((size_t)a->top_k * sizeof *placed);
    if (!placed)
        return oracle_fail(MOES_ERR_OUT_OF_MEMORY, "oracle: out of memory");
    for (int64_t t = 0; t < a->n_tokens; t++) {
        int64_t n_placed = 0;
        for (int64_t k = 0; k < a->top_k; k++)
            if (load_index(a->out_index, g.index_elem,
                           t * a->out_index_stride + k) >= 0)
                placed[n_placed++] = k;
        for (int64_t h = 0; h < a->hidden; h++) {
            int64_t o = t * a->out_stride + h;
            float acc = (a->flags & MOES_GATHER_ACCUMULATE)
                            ? load_float(a->out, a->out_dtype, o)
                            : 0.0f;
            for (int64_t i = 0; i < n_placed; i++) {
                const int64_t k = placed[i];
                int64_t row = load_index(a->out_index, g.index_elem,
                                         t * a->out_index_stride + k);
                float w = 1.0f;
                if (a->weights)
                    memcpy(&w, &a->weights[t * a->weights_stride + k], 4);
                acc = moes_gather_step(
                    acc, w,
                    load_float(a->y, a->y_dtype, row * a->y_stride + h));
            }
            store_float(a->out, a->out_dtype, o, acc);
        }
    }
    free(placed);
    return MOES_OK;
}
