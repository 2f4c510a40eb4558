/* SPDX-License-Identifier: MIT */
/*
 * compare.h - bit-for-bit comparison of two runs of a case, and the
 * differential check of one seed (generate, run on both sides, compare).
 */
#ifndef MOES_COMPARE_H
#define MOES_COMPARE_H

#include <stddef.h>
#include <stdint.h>

#include "casegen.h"
#include "caserun.h"

/* 0 when got equals expected: the same status for every call, the same
 * message for data errors (which name the element), and the same bytes in
 * every output buffer, gaps and untouched padding included. 1 otherwise,
 * with the first difference described in msg (call or buffer, row,
 * column, both values). */
int moes_case_compare(const moes_case *c, const moes_case_result *expected,
                      const moes_case_result *got, char *msg, size_t len);

enum {
    MOES_CHECK_SAME = 0,
    MOES_CHECK_DIFFERENT = 1,
    MOES_CHECK_ERROR = 2 /* the case could not be generated or run */
};

/* Generates the case of (seed, fault, limits), runs it on ctx and on ref
 * (the oracle when ref is NULL) and compares. Returns a MOES_CHECK_*
 * value; for DIFFERENT and ERROR, msg holds the case's description and
 * what went wrong. */
int moes_case_check(moes_context *ctx, moes_context *ref, uint64_t seed,
                    int fault, const moes_case_limits *limits, char *msg,
                    size_t len);

#endif /* MOES_COMPARE_H */
