/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - what the unit tests share: opening a context (always through
 * MOES_BACKEND_AUTO, so that MOES_BACKEND=cuda runs the whole suite on a
 * GPU), backend buffers filled from the host, and canary checks.
 */
#ifndef MOES_TEST_HELPERS_H
#define MOES_TEST_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "moescatter.h"

#define CANARY 0xA5

/* A context on the backend AUTO picks (or MOES_BACKEND forces), with
 * threads CPU threads (0 = OpenMP's default). Fails the test on error. */
moes_context *test_open(int threads);
void test_close(moes_context *ctx);

/* 1 when ctx runs on the CPU (host pointers). */
int test_is_cpu(moes_context *ctx);

/* Backend memory: dev_new() allocates bytes filled with the canary,
 * dev_from() a copy of host data; dev_get() copies back into a new host
 * buffer (free() it). All fail the test on error. */
void *dev_new(moes_context *ctx, int64_t bytes);
void *dev_from(moes_context *ctx, const void *host, int64_t bytes);
void *dev_get(moes_context *ctx, const void *dev, int64_t bytes);
void dev_free(moes_context *ctx, void *dev);

/* 1 when all bytes of the backend buffer are the canary. */
int dev_is_canary(moes_context *ctx, const void *dev, int64_t bytes);

/* Ends the calling test (SIGALRM, which Criterion reports as a crash) if
 * it still runs after seconds. Used instead of Criterion's own .timeout:
 * Criterion 2.4 leaks a timer record in the runner whenever two timed
 * tests overlap, which fails the sanitizer build's leak check. */
void test_deadline(unsigned seconds);

#endif /* MOES_TEST_HELPERS_H */
