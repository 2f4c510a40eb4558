/* SPDX-License-Identifier: MIT */
/*
 * testkit.h - the test kit: a naive oracle, random cases, a runner for any
 * backend, and a bit-for-bit comparison. Used by the unit tests, the
 * fuzz targets and `moescatter check`.
 *
 *     moes_case_check(ctx, NULL, seed, -1, NULL, msg, sizeof msg)
 *
 * runs the random case of seed on ctx and on the oracle and says where
 * they differ; the seed alone replays the case.
 */
#ifndef MOES_TESTKIT_H
#define MOES_TESTKIT_H

#include "casegen.h"
#include "caserun.h"
#include "compare.h"
#include "oracle.h"

#endif /* MOES_TESTKIT_H */
