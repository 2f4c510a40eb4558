/* SPDX-License-Identifier: MIT */
/*
 * caserun.h - runs a case (casegen.h) on a context of any backend, or on
 * the oracle, and brings every output back to the host.
 *
 * Every output buffer starts filled with the canary byte, so that rows a
 * call must not touch (padding without ZERO_PADDING, the gaps of strided
 * rows, everything after an error) can be checked byte for byte. The
 * gather works on y (generated, M rows) with the out_index the scatter
 * just produced; when the scatter failed, or the case breaks out_index on
 * purpose, it uses the case's own gather_index instead.
 */
#ifndef MOES_CASERUN_H
#define MOES_CASERUN_H

#include <stdint.h>

#include "casegen.h"
#include "moescatter.h"

/* The byte every output buffer is filled with before a call. */
#define MOES_CANARY 0xA5

/* The output buffers of a case, in the order they are compared. */
typedef enum moes_case_output {
    MOES_OUT_COUNT_COUNTS = 0, /* moes_count's counts                   */
    MOES_OUT_DATA,             /* scatter: out                          */
    MOES_OUT_SCALES,           /* scatter: out_scales                   */
    MOES_OUT_INDEX,            /* scatter: out_index                    */
    MOES_OUT_COUNTS,           /* scatter: counts                       */
    MOES_OUT_START,            /* scatter: expert_start                 */
    MOES_OUT_END,              /* scatter: expert_end                   */
    MOES_OUT_M_INDICES,        /* scatter: m_indices                    */
    MOES_OUT_MASKED_M,         /* scatter: masked_m                     */
    MOES_OUT_N_DROPPED,        /* scatter: n_dropped (one int64)        */
    MOES_OUT_ROW_SOURCE,       /* scatter: row_source                   */
    MOES_OUT_GATHER,           /* gather: out                           */
    MOES_OUT_DISTINCT,         /* moes_distinct_experts: out, [N][K] of
                                  the scatter's index_dtype             */
    MOES_OUT_COUNT_OF
} moes_case_output;

/* The calls of a case. */
enum { MOES_CALL_COUNT = 0, MOES_CALL_SCATTER, MOES_CALL_GATHER,
       MOES_CALL_DISTINCT, MOES_CALL_COUNT_OF };

typedef struct moes_case_result {
    /* The status of each call: the call's own when not MOES_OK, else that
     * of the moes_synchronize() after it. */
    int status[MOES_CALL_COUNT_OF];
    char message[MOES_CALL_COUNT_OF][512];
    moes_case_buffer out[MOES_OUT_COUNT_OF];
} moes_case_result;

/* Runs count, scatter, gather and distinct experts of c on ctx, or on the
 * oracle when ctx is NULL. Returns MOES_OK when the case could be run
 * (whatever the calls returned: those are in res->status), else the
 * status of the failed allocation or copy, with a message in msg. Free
 * res with moes_case_result_free() in both cases. */
int moes_case_run(moes_context *ctx, const moes_case *c, moes_case_result *res,
                  char *msg, size_t msg_len);

void moes_case_result_free(moes_case_result *res);

/* The name of output buffer i ("out_index"). */
const char *moes_case_output_name(int i);

#endif /* MOES_CASERUN_H */
