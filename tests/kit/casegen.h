/* SPDX-License-Identifier: MIT */
/*
 * casegen.h - one random, complete case (routing, scatter and gather
 * arguments, host inputs) drawn deterministically from a 64-bit seed.
 *
 * The same seed gives the same case on every machine: a failure is
 * replayed from its seed alone. Pointers in the argument structs are left
 * NULL; the runner (caserun.h) points them at buffers it allocates on the
 * backend under test, or at host buffers for the oracle.
 */
#ifndef MOES_CASEGEN_H
#define MOES_CASEGEN_H

#include <stddef.h>
#include <stdint.h>

#include "moescatter.h"

/* What a case deliberately breaks, so that error paths are compared. */
typedef enum moes_case_fault {
    MOES_CASE_VALID = 0,
    MOES_CASE_BAD_ID = 1,        /* ids entries < -1 or >= E_global      */
    MOES_CASE_BAD_MAP = 2,       /* expert map entries < -1 or >= E      */
    MOES_CASE_BAD_CAPACITY = 3,  /* a contiguous/grouped capacity < M    */
    MOES_CASE_BAD_OUT_INDEX = 4, /* gather out_index outside [-1, M)     */
    MOES_CASE_BAD_SCALE = 5,     /* UE8M0 scales that are not positive,
                                    finite, normal powers of two        */
    MOES_CASE_FAULT_COUNT = 6
} moes_case_fault;

/* Bounds on the drawn sizes (0 = the default); a test that needs many
 * fast cases lowers them, one that wants larger calls raises them (a few
 * cases then draw tokens past 400 and experts past 3000). The last two
 * steer cases towards the GPU gather's large shapes, which a random case
 * seldom takes: many tokens, and rows of 16-byte vectors. */
typedef struct moes_case_limits {
    int64_t max_tokens;   /* default 400  */
    int64_t max_hidden;   /* default 1100 */
    int64_t max_experts;  /* default 3000 */
    int64_t max_top_k;    /* default 9: K drawn from 1 to it */
    int64_t min_tokens;   /* default 0; at most max_tokens */
    int vector_rows;      /* nonzero: the hidden size and the gather's y and
                           * out strides a multiple of 8 elements, where
                           * the buffer budget allows 8 (else as drawn) */
    int sparse_gather;    /* nonzero: the gather of an expert-parallel rank:
                           * an out_index entry names a row one time in
                           * eight (else -1), and y and the weights are
                           * finite numbers but for one y row and one
                           * weight in 64, drawn as usual */
} moes_case_limits;

/* A host buffer of the case: bytes long, NULL when bytes is 0. */
typedef struct moes_case_buffer {
    void *data;
    int64_t bytes;
} moes_case_buffer;

typedef struct moes_case {
    uint64_t seed;
    int fault;                  /* moes_case_fault                          */
    int counts_dtype;           /* for moes_count                           */

    /* Arguments, buffers NULL. */
    moes_routing routing;
    moes_scatter_args scatter;
    moes_gather_args gather;    /* y_rows is the scatter's rows of out      */

    /* Which optional scatter outputs the case asks for. */
    int want_counts, want_start, want_end, want_m_indices, want_n_dropped;
    int want_row_source;
    /* An index-only scatter: x, x_scales, out and out_scales are NULL
     * (hidden still sizes the gather). */
    int index_only;

    /* Inputs (host). */
    moes_case_buffer ids, map, x, x_scales;
    moes_case_buffer y;           /* [M][y_stride] expert outputs           */
    moes_case_buffer weights;
    /* The gather's out_index when the scatter's own cannot be used (the
     * scatter failed, or the case breaks out_index): [N][stride]. */
    moes_case_buffer gather_index;
    /* Initial contents of the gather's out (ACCUMULATE), else unused.     */
    moes_case_buffer gather_out_init;

    /* Byte sizes of the outputs (0 = not asked for). */
    int64_t count_bytes;        /* moes_count's counts                      */
    int64_t distinct_bytes;     /* moes_distinct_experts' out: [N][stride]  */
    int64_t distinct_stride;    /* its out_stride (0 means K)               */
    int64_t out_bytes, out_scales_bytes, out_index_bytes;
    int64_t expert_array_bytes; /* counts, start, end, masked_m: E entries  */
    int64_t m_indices_bytes;
    int64_t row_source_bytes;
    int64_t gather_out_bytes;

    /* Derived facts, for messages and for tests. */
    int64_t out_rows;           /* capacity, or E * C (masked)              */
    int64_t rows_needed;        /* M of contiguous/grouped, else 0          */
} moes_case;

/* Draws the case of seed. fault is a moes_case_fault, or -1 for a fault
 * drawn from the seed (valid in about half of the cases). limits may be
 * NULL. Returns MOES_OK or MOES_ERR_OUT_OF_MEMORY (c is then empty). */
int moes_case_generate(moes_case *c, uint64_t seed, int fault,
                       const moes_case_limits *limits);

/* The limits of the seed classes of the differential against the GPU
 * (tests/gpu/diff_cuda.c): the last decimal digit of the seed picks a
 * class, so that the seed alone replays a case. Returns NULL (the
 * generator's defaults) for the digits with no class of their own.
 *   0: up to 4000 tokens and 20000 experts (calls past 8192 choices, and
 *      of experts enough that the sort places them);
 *   3: 2200 to 4000 tokens, K up to 40 and rows of 16-byte vectors where
 *      they fit (the GPU gather's large shape, K past a warp's 32 entries);
 *   5: up to 2000 tokens with K up to 48;
 *   7: as 3 with K up to 16 and the gather of an expert-parallel rank
 *      (sparse_gather). */
const moes_case_limits *moes_case_class_limits(uint64_t seed);

/* Frees the host buffers of c (c may be half-built or zeroed). */
void moes_case_free(moes_case *c);

/* One line with the case's parameters, for failure messages. */
void moes_case_describe(const moes_case *c, char *buf, size_t len);

/* Bytes of one element of dtype (moes_dtype_size), 0 for a value that
 * is not a dtype: the one place the kit and its users size buffers by
 * dtype. */
size_t moes_case_dtype_bytes(int dtype);

/* The name of a fault ("valid", "bad id", ...). */
const char *moes_case_fault_name(int fault);

#endif /* MOES_CASEGEN_H */
