/* SPDX-License-Identifier: MIT */
/*
 * elements.h - the kit's reads and writes of one element of a caller's
 * buffer: an index of 4 or 8 bytes, a float of a row dtype, for the
 * oracle, the case generator and the tests that read cases. Through
 * memcpy, so any alignment the cases draw is fine. The kit's own, not the
 * library's, so that the oracle shares no code with what it checks.
 */
#ifndef MOES_KIT_ELEMENTS_H
#define MOES_KIT_ELEMENTS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "moescatter.h"
#include "numerics.h"

/* Element i of an index array of elem (4 or 8) bytes an element. */
static inline int64_t load_index(const void *base, size_t elem, int64_t i)
{
    if (elem == 4) {
        int32_t v;
        memcpy(&v, (const char *)base + i * 4, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, (const char *)base + i * 8, 8);
    return v;
}

static inline void store_index(void *base, size_t elem, int64_t i,
                               int64_t v)
{
    if (elem == 4) {
        int32_t w = (int32_t)v;
        memcpy((char *)base + i * 4, &w, 4);
    } else {
        memcpy((char *)base + i * 8, &v, 8);
    }
}

/* Element i of a row of dtype (fp32, bf16, fp16), widened to fp32. */
static inline float load_float(const void *base, int dtype, int64_t i)
{
    if (dtype == MOES_DTYPE_FP32) {
        float f;
        memcpy(&f, (const char *)base + i * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)base + i * 2, 2);
    return dtype == MOES_DTYPE_BF16 ? moes_bf16_to_f32(h) : moes_f16_to_f32(h);
}

#endif /* MOES_KIT_ELEMENTS_H */
