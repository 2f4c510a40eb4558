/* SPDX-License-Identifier: MIT */
/*
 * options.c - the command-line parsing the subcommands share: long
 * options, numbers, backends, and the messages for bad input.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

void tool_parser_init(tool_parser *p, const char *command,
                      const tool_option *options, int argc, char **argv)
{
    p->command = command;
    p->options = options;
    p->argc = argc;
    p->argv = argv;
    p->next = 1;
}

int tool_next_option(tool_parser *p, const char **value)
{
    const char *arg, *eq;
    size_t len;

    *value = NULL;
    if (p->next >= p->argc)
        return TOOL_OPT_END;
    arg = p->argv[p->next++];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
        return TOOL_OPT_HELP;
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        tool_usage_error(p->command, "unexpected argument '%s'", arg);
        return TOOL_OPT_ERROR;
    }
    arg += 2;
    eq = strchr(arg, '=');
    len = eq ? (size_t)(eq - arg) : strlen(arg);
    for (const tool_option *o = p->options; o->name; o++) {
        if (strlen(o->name) != len || strncmp(o->name, arg, len) != 0)
            continue;
        if (!o->takes_value) {
            if (eq) {
                tool_usage_error(p->command, "--%s takes no value",
                                 o->name);
                return TOOL_OPT_ERROR;
            }
            return o->id;
        }
        if (eq) {
            *value = eq + 1;
        } else if (p->next < p->argc) {
            *value = p->argv[p->next++];
        } else {
            tool_usage_error(p->command, "--%s needs a value", o->name);
            return TOOL_OPT_ERROR;
        }
        return o->id;
    }
    tool_usage_error(p->command, "unknown option '--%.*s'", (int)len, arg);
    return TOOL_OPT_ERROR;
}

int tool_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "moescatter %s: ", command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'moescatter %s --help'.\n", command);
    return TOOL_EXIT_USAGE;
}

int tool_fail(const char *command, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "moescatter %s: ", command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return TOOL_EXIT_FAILURE;
}

int tool_parse_i64(const char *command, const char *option, const char *text,
                   int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (end == text || *end != '\0')
        return tool_usage_error(command, "%s: '%s' is not an integer",
                                option, text);
    if (errno == ERANGE || v < min || v > max)
        return tool_usage_error(command, "%s: %s is outside %lld..%lld",
                                option, text, (long long)min,
                                (long long)max);
    *out = (int64_t)v;
    return TOOL_EXIT_OK;
}

int tool_parse_u64(const char *command, const char *option, const char *text,
                   uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    /* strtoull accepts "-1" and negates it: reject any sign. */
    if (text[0] == '-' || text[0] == '+')
        return tool_usage_error(command,
                                "%s: '%s' is not an unsigned integer",
                                option, text);
    /* Decimal only: "010" is ten, as the seeds that runs print are. */
    v = strtoull(text, &end, 10);
    if (end == text || *end != '\0')
        return tool_usage_error(command,
                                "%s: '%s' is not an unsigned integer",
                                option, text);
    if (errno == ERANGE)
        return tool_usage_error(command, "%s: %s does not fit 64 bits",
                                option, text);
    *out = (uint64_t)v;
    return TOOL_EXIT_OK;
}

int tool_parse_seconds(const char *command, const char *option,
                       const char *text, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v) ||
        v <= 0.0)
        return tool_usage_error(command,
                                "%s: '%s' is not a positive number of "
                                "seconds", option, text);
    *out = v;
    return TOOL_EXIT_OK;
}

int tool_parse_backend(const char *command, const char *text, int *backend)
{
    if (strcmp(text, "auto") == 0)
        *backend = MOES_BACKEND_AUTO;
    else if (strcmp(text, "cpu") == 0)
        *backend = MOES_BACKEND_CPU;
    else if (strcmp(text, "cuda") == 0)
        *backend = MOES_BACKEND_CUDA;
    else
        return tool_usage_error(command,
                                "--backend: '%s' is not auto, cpu or cuda",
                                text);
    return TOOL_EXIT_OK;
}

const char *tool_backend_name(int backend)
{
    switch (backend) {
    case MOES_BACKEND_CPU: return "cpu";
    case MOES_BACKEND_CUDA: return "cuda";
    default: return "auto";
    }
}

int tool_open_context(const char *command, int backend, int threads,
                      moes_context **ctx)
{
    moes_context_options opts;
    int st;
    moes_context_options_init(&opts);
    opts.backend = backend;
    opts.cpu_threads = threads;
    st = moes_context_create(ctx, &opts);
    if (st != MOES_OK)
        return tool_fail(command, "cannot open a context on backend %s: "
                         "%s: %s", tool_backend_name(backend),
                         moes_strerror(st), moes_last_error(NULL));
    return TOOL_EXIT_OK;
}

int tool_close_context(const char *command, moes_context *ctx)
{
    /* The context is gone once this returns, and its message with it:
     * the status is all there is to print. */
    int st = moes_context_destroy(ctx);
    if (st != MOES_OK)
        return tool_fail(command, "moes_context_destroy: %s",
                         moes_strerror(st));
    return TOOL_EXIT_OK;
}

int tool_library_error(const char *command, moes_context *ctx,
                       const char *call, int status)
{
    return tool_fail(command, "%s: %s: %s", call, moes_strerror(status),
                     moes_last_error(ctx));
}
