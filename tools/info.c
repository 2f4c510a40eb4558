/* SPDX-License-Identifier: MIT */
/*
 * info.c - `moescatter info`: the library version, the backends built in,
 * the backend a context gets and why, and its device or CPU threads.
 */
#include <stdio.h>

#include "tool.h"

enum { OPT_BACKEND = 1, OPT_THREADS };

static const tool_option options[] = {
    {"backend", 1, OPT_BACKEND},
    {"threads", 1, OPT_THREADS},
    {NULL, 0, 0},
};

static void usage(void)
{
    printf(
        "Usage: moescatter info [--backend auto|cpu|cuda] [--threads N]\n"
        "\n"
        "Prints the library version, the backends compiled in, the backend\n"
        "a context opened with --backend gets (AUTO by default) and why,\n"
        "and the device (name, multiprocessors, memory) or the CPU threads.\n"
        "\n"
        "  --backend B  auto (default), cpu or cuda\n"
        "  --threads N  OpenMP threads of the CPU backend "
        "(default: OpenMP's)\n");
}

int tool_info(int argc, char **argv)
{
    tool_parser p;
    const char *value;
    int backend = MOES_BACKEND_AUTO, id, st, major, minor, patch;
    int64_t threads = 0;
    unsigned mask = 0;
    moes_context *ctx;
    moes_context_info info;

    tool_parser_init(&p, "info", options, argc, argv);
    while ((id = tool_next_option(&p, &value)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_HELP: usage(); return TOOL_EXIT_OK;
        case TOOL_OPT_ERROR: return TOOL_EXIT_USAGE;
        case OPT_BACKEND:
            if (tool_parse_backend("info", value, &backend))
                return TOOL_EXIT_USAGE;
            break;
        case OPT_THREADS:
            if (tool_parse_i64("info", "--threads", value, 1, 4096,
                               &threads))
                return TOOL_EXIT_USAGE;
            break;
        }
    }

    moes_version(&major, &minor, &patch);
    moes_backends_compiled(&mask);
    printf("libmoescatter %d.%d.%d\n", major, minor, patch);
    printf("backends compiled: cpu%s\n",
           (mask & (1u << MOES_BACKEND_CUDA)) ? " cuda" : "");
    if (tool_open_context("info", backend, (int)threads, &ctx))
        return TOOL_EXIT_FAILURE;
    info.struct_size = sizeof info;
    st = moes_context_get_info(ctx, &info);
    if (st != MOES_OK) {
        tool_library_error("info", ctx, "moes_context_get_info", st);
        moes_context_destroy(ctx);
        return TOOL_EXIT_FAILURE;
    }
    printf("backend requested: %s\n", tool_backend_name(backend));
    printf("backend: %s\n", tool_backend_name(info.backend));
    printf("reason: %s\n", info.reason);
    if (info.backend == MOES_BACKEND_CUDA) {
        printf("device: %s\n", info.device_name);
        printf("compute capability: %d.%d\n",
               info.device_compute_capability / 10,
               info.device_compute_capability % 10);
        printf("multiprocessors: %d\n", info.device_multiprocessors);
        printf("memory: %.1f GiB (%lld bytes)\n",
               (double)info.device_memory_bytes / (1024.0 * 1024 * 1024),
               (long long)info.device_memory_bytes);
    } else {
        printf("cpu threads: %d\n", info.cpu_threads);
    }
    return tool_close_context("info", ctx);
}
