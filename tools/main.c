/* SPDX-License-Identifier: MIT */
/*
 * main.c - the moescatter command: finds the subcommand and runs it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "tool.h"

typedef struct tool_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} tool_command;

static const tool_command commands[] = {
    {"info", tool_info,
     "the library version, the backends and the device or CPU threads"},
    {"check", tool_check,
     "compare a backend against the ground truth on random cases"},
    {"bench", tool_bench,
     "time scatter and gather on the shapes of real models"},
};

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: moescatter COMMAND [OPTIONS]\n"
        "       moescatter COMMAND --help\n"
        "       moescatter --version\n"
        "\n"
        "Token scatter and gather for Mixture-of-Experts layers.\n"
        "\n"
        "Commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
        "\n"
        "Environment: MOES_BACKEND=auto|cpu|cuda overrides --backend;\n"
        "MOES_LOG=1 prints the backend choice on standard error.\n"
        "Exit status: 0 success, 1 failure, 2 bad command line.\n"
        "See moescatter(1).\n");
}

/* A command's status, or a failure where its standard output could not
 * all be written (a full disk under `bench --json > file`). */
static int written(int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "moescatter: cannot write the standard output: %s\n",
                strerror(errno));
        return status == TOOL_EXIT_OK ? TOOL_EXIT_FAILURE : status;
    }
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return written(TOOL_EXIT_OK);
    }
    if (strcmp(argv[1], "--version") == 0) {
        int major, minor, patch;
        moes_version(&major, &minor, &patch);
        printf("moescatter %s (library %d.%d.%d)\n", PACKAGE_VERSION, major,
               minor, patch);
        return written(TOOL_EXIT_OK);
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return written(commands[i].run(argc - 1, argv + 1));
    fprintf(stderr, "moescatter: unknown command '%s'\n"
                    "Try 'moescatter --help'.\n", argv[1]);
    return TOOL_EXIT_USAGE;
}
