/* SPDX-License-Identifier: MIT */
/*
 * cpu_copy.h - copying a row into an output the call does not read back:
 * a token's row into the scatter's output, a chunk of a token's sums into
 * the gather's.
 *
 * The output of a prefill scatter is K times the input and far larger
 * than any cache, and it is not read back by this call: plain stores would
 * first read every destination line (write-allocate), a third of the
 * traffic for nothing. Long rows therefore go out with non-temporal
 * stores where the CPU has them; callers issue cpu_copy_fence() once the
 * rows are written so that they are visible like ordinary stores.
 */
#ifndef MOES_CPU_COPY_H
#define MOES_CPU_COPY_H

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CPU_COPY_AVX512 1
#else
#define CPU_COPY_AVX512 0
#endif

/* Rows shorter than this are copied with memcpy: they may stay in cache
 * and be read soon, and the setup costs more than it saves. */
#define CPU_STREAM_MIN_BYTES 1024

#if defined(__SSE2__)
#if CPU_COPY_AVX512
/* One streaming store a line: a scatter's rows go to random places, and
 * there a full line a store kept 13% more bytes moving than four 16-byte
 * stores (2-core AMD EPYC, six alternating rounds, bench/NOTES.md); a
 * sequential copy moves the same either way. */
__attribute__((target("avx512f"))) static inline void
cpu_stream_lines_avx512(char *d, const char *s, size_t lines)
{
    for (size_t i = 0; i < lines; i++, d += 64, s += 64)
        _mm512_stream_si512((void *)d,
                            _mm512_loadu_si512((const void *)s));
}
#endif

/* Whole lines of 64 bytes to a 64-byte aligned d, with streaming stores
 * as wide as the CPU has. */
static inline void cpu_stream_lines(char *d, const char *s, size_t lines)
{
#if CPU_COPY_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        cpu_stream_lines_avx512(d, s, lines);
        return;
    }
#endif
    for (size_t i = 0; i < lines; i++, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
}
#endif

/* Up to the first line boundary of dst and after the last by memcpy, the
 * lines between with streaming stores. */
static inline void cpu_copy_row(void *dst, const void *src, size_t bytes)
{
#if defined(__SSE2__)
    if (bytes >= CPU_STREAM_MIN_BYTES) {
        char *d = dst;
        const char *s = src;
        const size_t head = (64u - ((uintptr_t)d & 63u)) & 63u;
        const size_t lines = (bytes - head) / 64, body = lines * 64;
        memcpy(d, s, head);
        cpu_stream_lines(d + head, s + head, lines);
        memcpy(d + head + body, s + head + body, bytes - head - body);
        return;
    }
#endif
    memcpy(dst, src, bytes);
}

static inline void cpu_copy_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

#endif /* MOES_CPU_COPY_H */
