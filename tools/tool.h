/* SPDX-License-Identifier: MIT */
/*
 * tool.h - what the subcommands of the moescatter tool share: exit
 * statuses, the option parser, number parsing and opening a context.
 */
#ifndef MOES_TOOL_H
#define MOES_TOOL_H

#include <stdint.h>

#include "moescatter.h"

/* Exit statuses of every subcommand. */
#define TOOL_EXIT_OK 0
#define TOOL_EXIT_FAILURE 1 /* a difference, a library or system error */
#define TOOL_EXIT_USAGE 2   /* a bad command line */

/* One long option: "--name" or "--name VALUE" / "--name=VALUE". */
typedef struct tool_option {
    const char *name;  /* without the leading "--"                     */
    int takes_value;
    int id;            /* > 0, returned by tool_next_option            */
} tool_option;

/* tool_next_option's results besides an option id. */
#define TOOL_OPT_END 0
#define TOOL_OPT_ERROR (-1) /* message printed: exit TOOL_EXIT_USAGE    */
#define TOOL_OPT_HELP (-2)  /* --help or -h                             */

typedef struct tool_parser {
    const char *command;         /* the subcommand, for messages       */
    const tool_option *options;  /* ends with a NULL name              */
    int argc;
    char **argv;                 /* argv[0] is the subcommand          */
    int next;
} tool_parser;

void tool_parser_init(tool_parser *p, const char *command,
                      const tool_option *options, int argc, char **argv);

/* The next option of the command line: its id and, when it takes one,
 * *value. Positional arguments are errors. */
int tool_next_option(tool_parser *p, const char **value);

/* Prints "moescatter COMMAND: MESSAGE" and a hint to use --help on
 * standard error; returns TOOL_EXIT_USAGE. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int tool_usage_error(const char *command, const char *fmt, ...);

/* Prints "moescatter COMMAND: MESSAGE" on standard error; returns
 * TOOL_EXIT_FAILURE. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int tool_fail(const char *command, const char *fmt, ...);

/* Number parsing for option values. Each returns TOOL_EXIT_OK, or prints
 * what is wrong and returns TOOL_EXIT_USAGE. */
int tool_parse_i64(const char *command, const char *option, const char *text,
                   int64_t min, int64_t max, int64_t *out);
int tool_parse_u64(const char *command, const char *option, const char *text,
                   uint64_t *out);
int tool_parse_seconds(const char *command, const char *option,
                       const char *text, double *out);
/* auto, cpu or cuda into a moes_backend value. */
int tool_parse_backend(const char *command, const char *text, int *backend);

/* "cpu", "cuda" or "auto". */
const char *tool_backend_name(int backend);

/* Opens a context on backend with threads CPU threads (0: OpenMP's
 * default). On failure prints why and returns TOOL_EXIT_FAILURE. */
int tool_open_context(const char *command, int backend, int threads,
                      moes_context **ctx);

/* Destroys ctx; prints a failure to release it and returns
 * TOOL_EXIT_FAILURE, else TOOL_EXIT_OK. */
int tool_close_context(const char *command, moes_context *ctx);

/* Prints a failed library call on ctx ("moescatter bench: moes_scatter:
 * invalid expert id: ids[3][1] = 300 is outside [-1, 256)") and returns
 * TOOL_EXIT_FAILURE. */
int tool_library_error(const char *command, moes_context *ctx,
                       const char *call, int status);

/* The subcommands: argv[0] is the subcommand's name. */
int tool_info(int argc, char **argv);
int tool_check(int argc, char **argv);
int tool_bench(int argc, char **argv);
/* bench --ep (bench_ep.c): under mpirun, or a usage error in a build
 * without MPI. */
int tool_bench_ep(int argc, char **argv);

#endif /* MOES_TOOL_H */
