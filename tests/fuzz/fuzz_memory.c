/* SPDX-License-Identifier: MIT */
/*
 * fuzz_memory.c - any argument set for moes_fill and moes_fill_rows on
 * the CPU backend.
 *
 * The input becomes the call, its sizes (mostly small, now and then one
 * of fz_wild's edges), which pointers are NULL, where dst lies in its
 * buffer, the pattern's bytes and, one call in eight, a pattern that lies
 * inside the rows it writes. Every byte the arguments can reach is a
 * guarded buffer that starts canary-filled. Then:
 *   - the status is what the header's rules give, in their order;
 *   - on success every byte is what the definition writes (the pattern's
 *     bytes as they were at the call) and nothing else changed;
 *   - on failure nothing changed and there is a message;
 *   - never a guard overwritten, a crash or a sanitizer report.
 * A valid call that would write more than 1 MiB is not made.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_context.h"
#include "fuzz_guard.h"
#include "fuzz_input.h"
#include "moescatter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_WRITE = 1 << 20 };

static moes_context *cpu_context(void)
{
    static moes_context *ctx;
    if (!ctx)
        ctx = fz_cpu_context(2);
    return ctx;
}

/* The status moes_fill_rows must return, from the header's rules; *span
 * gets the bytes a valid call reaches from dst (0 for no rows). */
static int fill_rows_status(const void *dst, int64_t rows, int64_t stride,
                            const void *pattern, int64_t bytes,
                            int64_t *span)
{
    *span = 0;
    if (rows < 0 || bytes < 1 || bytes > MOES_FILL_ROWS_MAX_PATTERN)
        return MOES_ERR_INVALID_SIZE;
    if (rows > 1 && stride < bytes)
        return MOES_ERR_INVALID_STRIDE;
    if (rows == 0)
        return MOES_OK;
    if (!dst || !pattern)
        return MOES_ERR_NULL_POINTER;
    if (rows > 1 && __builtin_mul_overflow(rows - 1, stride, span))
        return MOES_ERR_OVERFLOW;
    if (__builtin_add_overflow(*span, bytes, span) ||
        (uint64_t)*span > UINTPTR_MAX - (uintptr_t)dst)
        return MOES_ERR_OVERFLOW;
    return MOES_OK;
}

static void check_failure(moes_context *ctx, const char *what, int rc,
                          int want, const fz_buf *b)
{
    if (rc != want)
        fz_fail("%s: status %d, expected %d (%s)", what, rc, want,
                moes_last_error(ctx));
    if (!fz_buf_guards_ok(b))
        fz_fail("%s: a guard was overwritten", what);
    if (rc != MOES_OK) {
        if (!fz_buf_untouched(b))
            fz_fail("%s: failed with status %d but wrote", what, rc);
        if (!moes_last_error(ctx)[0])
            fz_fail("%s: failed with status %d and no message", what, rc);
    }
}

static void fuzz_fill_rows(moes_context *ctx, fz_input *in)
{
    const int64_t rows = fz_size(in, 0, 300);
    const int64_t stride = fz_size(in, -4, 700);
    const int64_t bytes = fz_size(in, -2, MOES_FILL_ROWS_MAX_PATTERN + 2);
    const int64_t offset = fz_range(in, 0, 15);
    const uint8_t flags = fz_u8(in);
    /* The pattern: exactly its claimed bytes (so that a read past them
     * is AddressSanitizer's), or NULL. */
    const int64_t pattern_len = bytes < 1 ? 1
                                : bytes > MOES_FILL_ROWS_MAX_PATTERN + 2
                                    ? MOES_FILL_ROWS_MAX_PATTERN + 2
                                    : bytes;
    uint8_t *pattern = fz_input_copy(NULL, (size_t)pattern_len);
    if (!pattern)
        return;
    for (int64_t i = 0; i < pattern_len; i++)
        pattern[i] = fz_u8(in);
    /* Size the destination from what a valid call would reach; a call
     * bound to fail gets a small buffer, which it must not touch. */
    int64_t span;
    const int want_probe = fill_rows_status((void *)(uintptr_t)64, rows,
                                            stride, pattern, bytes, &span);
    if (want_probe != MOES_OK)
        span = 0;
    else if (span > MAX_WRITE) {
        free(pattern);
        return;
    }
    fz_buf b;
    if (!fz_buf_alloc(&b, (size_t)(offset + span + 16))) {
        free(pattern);
        return;
    }
    uint8_t *dst = (flags & 1) ? NULL : b.data + offset;
    const void *src = (flags & 2) ? NULL : pattern;
    /* One call in eight: the pattern inside the rows it writes. */
    if (want_probe == MOES_OK && rows > 0 && src && dst &&
        (flags & 0x1C) == 0)
        src = dst + (span - bytes) / 2;
    int want = fill_rows_status(dst, rows, stride, src, bytes, &span);
    uint8_t *expected = malloc(b.len);
    uint8_t *snapshot = malloc(pattern_len > 0 ? (size_t)pattern_len : 1);
    if (!expected || !snapshot)
        fz_fail("out of memory");
    memcpy(expected, b.data, b.len);
    if (src && bytes > 0 && bytes <= MOES_FILL_ROWS_MAX_PATTERN)
        memcpy(snapshot, src, (size_t)bytes);
    if (want == MOES_OK)
        for (int64_t r = 0; r < rows; r++)
            memcpy(expected + offset + (rows > 1 ? r * stride : 0), snapshot,
                   (size_t)bytes);
    const int rc = moes_fill_rows(ctx, dst, rows, stride, src, bytes);
    check_failure(ctx, "moes_fill_rows", rc, want, &b);
    if (rc == MOES_OK) {
        const int64_t at = fz_buf_diff(&b, expected);
        if (at >= 0)
            fz_fail("moes_fill_rows: %lld rows of %lld bytes, %lld apart: "
                    "byte %lld is 0x%02x, not 0x%02x", (long long)rows,
                    (long long)bytes, (long long)stride, (long long)at,
                    b.data[at], expected[at]);
    }
    free(snapshot);
    free(expected);
    fz_buf_free(&b);
    free(pattern);
}

static void fuzz_fill(moes_context *ctx, fz_input *in)
{
    const int64_t bytes = fz_size(in, -2, 5000);
    const int value = (int)fz_size(in, -3, 260);
    const uint8_t flags = fz_u8(in);
    int want;
    if (bytes < 0)
        want = MOES_ERR_INVALID_SIZE;
    else if (value < 0 || value > 255)
        want = MOES_ERR_INVALID_ARGUMENT;
    else if (bytes == 0)
        want = MOES_OK;
    else if (flags & 1)
        want = MOES_ERR_NULL_POINTER;
    else if (bytes > MAX_WRITE)
        return;
    else
        want = MOES_OK;
    fz_buf b;
    const int64_t len = bytes > 0 && bytes <= MAX_WRITE ? bytes : 16;
    if (!fz_buf_alloc(&b, (size_t)len))
        return;
    const int rc = moes_fill(ctx, (flags & 1) ? NULL : b.data, value, bytes);
    check_failure(ctx, "moes_fill", rc, want, &b);
    if (rc == MOES_OK && bytes > 0) {
        uint8_t *expected = malloc((size_t)len);
        if (!expected)
            fz_fail("out of memory");
        memset(expected, value, (size_t)len);
        if (fz_buf_diff(&b, expected) >= 0)
            fz_fail("moes_fill: %lld bytes not all 0x%02x", (long long)bytes,
                    value);
        free(expected);
    }
    fz_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size};
    moes_context *ctx = cpu_context();
    if (fz_u8(&in) & 1)
        fuzz_fill(ctx, &in);
    else
        fuzz_fill_rows(ctx, &in);
    return 0;
}
