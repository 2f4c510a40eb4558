/* SPDX-License-Identifier: MIT */
/*
 * fuzz_guard.h - output buffers with canaries on both sides.
 *
 * Each buffer is one allocation: a guard zone, exactly the bytes the
 * arguments claim, another guard zone. The data bytes start canary-filled
 * (or with given contents) and a copy of them is kept, so that a write out
 * of bounds shows up in a guard (or, past the guards, to AddressSanitizer)
 * and any write at all shows up against the copy.
 */
#ifndef FUZZ_GUARD_H
#define FUZZ_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define FZ_GUARD_BYTES 64

typedef struct fz_buf {
    uint8_t *block;   /* guard, data, guard                              */
    uint8_t *data;    /* NULL when the buffer is not passed              */
    uint8_t *initial; /* the data's first contents                       */
    size_t len;
} fz_buf;

/* Allocates len bytes of canary-filled data between guards. Returns 0 when
 * memory runs out. */
int fz_buf_alloc(fz_buf *b, size_t len);

/* Replaces the data's contents (and the kept copy) with src. */
void fz_buf_set(fz_buf *b, const void *src);

/* 1 when both guards still hold their canaries. */
int fz_buf_guards_ok(const fz_buf *b);

/* 1 when the data still equals its first contents. */
int fz_buf_untouched(const fz_buf *b);

/* Offset of the first byte that differs from expected, or -1. */
int64_t fz_buf_diff(const fz_buf *b, const void *expected);

void fz_buf_free(fz_buf *b);

/* An input buffer of exactly len bytes (so that AddressSanitizer sees a
 * read past its end) filled from src (left as is when src is NULL), or
 * NULL when memory runs out. */
void *fz_input_copy(const void *src, size_t len);

#endif /* FUZZ_GUARD_H */
