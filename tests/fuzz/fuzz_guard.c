/* SPDX-License-Identifier: MIT */
/*
 * fuzz_guard.c - output buffers with canaries on both sides.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_guard.h"

/* A position-dependent pattern: a shifted copy of a row cannot pass for
 * the canary, and no byte value repeats at a short period. */
static uint8_t canary(size_t i)
{
    return (uint8_t)(0xA5u ^ (uint8_t)(i * 131u) ^ (uint8_t)(i >> 8));
}

int fz_buf_alloc(fz_buf *b, size_t len)
{
    memset(b, 0, sizeof *b);
    b->block = malloc(len + 2 * FZ_GUARD_BYTES);
    b->initial = malloc(len ? len : 1);
    if (!b->block || !b->initial) {
        fz_buf_free(b);
        return 0;
    }
    b->len = len;
    b->data = b->block + FZ_GUARD_BYTES;
    for (size_t i = 0; i < len + 2 * FZ_GUARD_BYTES; i++)
        b->block[i] = canary(i);
    memcpy(b->initial, b->data, len);
    return 1;
}

void fz_buf_set(fz_buf *b, const void *src)
{
    memcpy(b->data, src, b->len);
    memcpy(b->initial, src, b->len);
}

int fz_buf_guards_ok(const fz_buf *b)
{
    if (!b->block)
        return 1;
    for (size_t i = 0; i < FZ_GUARD_BYTES; i++)
        if (b->block[i] != canary(i))
            return 0;
    for (size_t i = FZ_GUARD_BYTES + b->len; i < b->len + 2 * FZ_GUARD_BYTES;
         i++)
        if (b->block[i] != canary(i))
            return 0;
    return 1;
}

int fz_buf_untouched(const fz_buf *b)
{
    return fz_buf_diff(b, b->initial) < 0;
}

int64_t fz_buf_diff(const fz_buf *b, const void *expected)
{
    const uint8_t *e = expected;
    if (!b->block || !b->len || memcmp(b->data, e, b->len) == 0)
        return -1;
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] != e[i])
            return (int64_t)i;
    return -1;
}

void fz_buf_free(fz_buf *b)
{
    free(b->block);
    free(b->initial);
    memset(b, 0, sizeof *b);
}

void *fz_input_copy(const void *src, size_t len)
{
    /* malloc(0) may return NULL; the caller needs a pointer that is not
     * NULL and that no byte can be read through. */
    void *p = malloc(len);
    if (!p && !len)
        p = malloc(1);
    if (p && len && src)
        memcpy(p, src, len);
    return p;
}
