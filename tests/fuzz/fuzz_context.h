/* SPDX-License-Identifier: MIT */
/*
 * fuzz_context.h - the CPU contexts the fuzz targets open once and keep
 * for the whole run.
 */
#ifndef FUZZ_CONTEXT_H
#define FUZZ_CONTEXT_H

#include <stdlib.h>

#include "fuzz_check.h"
#include "moescatter.h"

/* A CPU context of `threads` threads; a context that cannot be opened is
 * a finding. Waiting threads sleep instead of spinning between parallel
 * regions, as the machine may have fewer cores than threads: LLVM's
 * OpenMP reads OMP_WAIT_POLICY when it starts, GNU OpenMP at load time
 * (make check sets it). */
static inline moes_context *fz_cpu_context(int threads)
{
    moes_context *ctx;
    moes_context_options o;
    setenv("OMP_WAIT_POLICY", "passive", 0);
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CPU;
    o.cpu_threads = threads;
    if (moes_context_create(&ctx, &o) != MOES_OK)
        fz_fail("cannot open a CPU context: %s", moes_last_error(NULL));
    return ctx;
}

#endif /* FUZZ_CONTEXT_H */
