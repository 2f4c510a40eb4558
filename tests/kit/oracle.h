/* SPDX-License-Identifier: MIT */
/*
 * oracle.h - count, distinct experts, scatter and gather written
 * straight from docs/design-rules.md, single-threaded, on host buffers.
 *
 * The oracle is the reference the backends are compared with. It is meant
 * to be read and believed, not to be fast: the scatter walks every (t, k)
 * once per expert. It checks arguments with the library's status codes
 * (the status decides valid versus invalid; its messages for argument
 * errors are its own), and checks the data (map entries, ids, capacity,
 * out_index) exactly as lib/data_error.h says: map errors before id errors
 * before capacity errors, the smallest flat index first, and the message in
 * the library's words. On any error no output is written.
 */
#ifndef MOES_ORACLE_H
#define MOES_ORACLE_H

#include <stdint.h>

#include "moescatter.h"

/* counts[e] (E entries of counts_dtype) = number of (t, k) whose local
 * expert is e. */
int moes_oracle_count(const moes_routing *routing, void *counts,
                      int counts_dtype);

/* out[t][j]: token t's distinct local experts ascending, then -1. */
int moes_oracle_distinct_experts(const moes_routing *routing, void *out,
                                 int out_dtype, int64_t out_stride);

/* The scatter of moes_scatter(), every pointer a host pointer. */
int moes_oracle_scatter(const moes_routing *routing,
                        const moes_scatter_args *args);

/* The gather of moes_gather(), every pointer a host pointer. */
int moes_oracle_gather(const moes_gather_args *args);

/* The message of the calling thread's last failed oracle call ("" when
 * none). For data errors it is worded like moes_last_error(). */
const char *moes_oracle_last_error(void);

#endif /* MOES_ORACLE_H */
