/* SPDX-License-Identifier: MIT */
/*
 * fuzz_check.h - how a fuzz target reports a finding: a message on
 * standard error, then abort(), which libFuzzer records as a crash (and
 * saves the input) and the replay driver turns into a failed test.
 */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2), noreturn))
#endif
static inline void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FINDING: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#endif /* FUZZ_CHECK_H */
