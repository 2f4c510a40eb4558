/* SPDX-License-Identifier: MIT */
/*
 * cpu_fp.h - the floating-point mode of the CPU's arithmetic.
 *
 * The gather's sums keep subnormals, as the CUDA kernels do (numerics.h),
 * but the thread that calls the library may run with them flushed: x86's
 * FTZ and DAZ bits in MXCSR, which programs built with -ffast-math set at
 * start-up and torch.set_flush_denormal(True) sets on its thread, or
 * AArch64's FZ bit in FPCR. Those bits belong to each thread, and OpenMP's
 * worker threads keep the ones they were made with, so every thread that
 * does a call's arithmetic clears them for the call and puts back what it
 * found (a register read, and a write only where a bit was set).
 */
#ifndef MOES_CPU_FP_H
#define MOES_CPU_FP_H

#include <stdint.h>

#if defined(__SSE__) && (defined(__x86_64__) || defined(__i386__))
#include <xmmintrin.h>
#define CPU_FP_FLUSH_BITS 0x8040u /* FTZ (bit 15) and DAZ (bit 6) */
typedef unsigned cpu_fp_mode;
static inline cpu_fp_mode cpu_fp_read(void) { return _mm_getcsr(); }
static inline void cpu_fp_write(cpu_fp_mode m) { _mm_setcsr(m); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define CPU_FP_FLUSH_BITS ((uint64_t)1 << 24) /* FZ */
typedef uint64_t cpu_fp_mode;
static inline cpu_fp_mode cpu_fp_read(void)
{
    uint64_t m;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(m));
    return m;
}
static inline void cpu_fp_write(cpu_fp_mode m)
{
    __asm__ __volatile__("msr fpcr, %0" : : "r"(m));
}
#else
/* No flush mode known here: nothing to clear. */
#define CPU_FP_FLUSH_BITS 0u
typedef unsigned cpu_fp_mode;
static inline cpu_fp_mode cpu_fp_read(void) { return 0; }
static inline void cpu_fp_write(cpu_fp_mode m) { (void)m; }
#endif

/* Clears the calling thread's flush bits; returns the mode to restore. */
static inline cpu_fp_mode cpu_fp_keep_subnormals(void)
{
    const cpu_fp_mode m = cpu_fp_read();
    if (m & CPU_FP_FLUSH_BITS)
        cpu_fp_write(m & ~(cpu_fp_mode)CPU_FP_FLUSH_BITS);
    return m;
}

/* Puts back the flush bits cpu_fp_keep_subnormals found; the rest of the
 * register (exception flags the call raised) stays as the call left it. */
static inline void cpu_fp_restore(cpu_fp_mode m)
{
    if (m & CPU_FP_FLUSH_BITS)
        cpu_fp_write(cpu_fp_read() | (m & CPU_FP_FLUSH_BITS));
}

#endif /* MOES_CPU_FP_H */
