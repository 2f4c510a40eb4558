/* SPDX-License-Identifier: MIT */
/*
 * bench.c - `moescatter bench`: times the scatter and the gather on the
 * MoE layers of real models and compares them with the copy bandwidth of
 * the same backend, for one token count or a sweep of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum {
    OPT_PRESET = 1, OPT_TOKENS, OPT_BACKEND, OPT_THREADS, OPT_ITERS,
    OPT_LAYOUT, OPT_ALIGNMENT, OPT_UE8M0, OPT_ALLOW_REPEATS, OPT_ACCUMULATE,
    OPT_EXACT_CAPACITY, OPT_INDEX_ONLY,
    OPT_JSON, OPT_SEED, OPT_SWEEP, OPT_MIN_TOKENS, OPT_MAX_TOKENS, OPT_CSV,
    OPT_PLOT, OPT_LIST, OPT_EXPERTS, OPT_IDLE, OPT_ZERO_PADDING
};

static const tool_option options[] = {
    {"preset", 1, OPT_PRESET},
    {"tokens", 1, OPT_TOKENS},
    {"backend", 1, OPT_BACKEND},
    {"threads", 1, OPT_THREADS},
    {"iters", 1, OPT_ITERS},
    {"layout", 1, OPT_LAYOUT},
    {"alignment", 1, OPT_ALIGNMENT},
    {"ue8m0", 0, OPT_UE8M0},
    {"allow-repeats", 0, OPT_ALLOW_REPEATS},
    {"accumulate", 0, OPT_ACCUMULATE},
    {"exact-capacity", 0, OPT_EXACT_CAPACITY},
    {"index-only", 0, OPT_INDEX_ONLY},
    {"json", 0, OPT_JSON},
    {"seed", 1, OPT_SEED},
    {"sweep", 0, OPT_SWEEP},
    {"min-tokens", 1, OPT_MIN_TOKENS},
    {"max-tokens", 1, OPT_MAX_TOKENS},
    {"csv", 1, OPT_CSV},
    {"plot", 1, OPT_PLOT},
    {"list-presets", 0, OPT_LIST},
    {"experts", 1, OPT_EXPERTS},
    {"idle", 0, OPT_IDLE},
    {"zero-padding", 0, OPT_ZERO_PADDING},
    {NULL, 0, 0},
};

/* Defaults: a modest run that takes a few seconds on a small CPU. */
#define DEFAULT_TOKENS 256
#define DEFAULT_ITERS 50
#define DEFAULT_WARMUP 5
#define DEFAULT_SEED 1
#define SWEEP_MAX_TOKENS_CUDA 32768
#define SWEEP_MAX_TOKENS_CPU 1024
/* The sets together exceed this: more than twice the L2 of current GPUs
 * (50 MiB on an H100) and the last-level cache of most CPUs. */
#define ROTATE_BYTES (128ll << 20)
#define COPY_BYTES_CUDA (1ll << 30)
#define COPY_BYTES_CPU (64ll << 20)
#define COPY_ITERS_MAX 20
/* On CUDA each timed call (and copy) is queued behind a fill of this many
 * bytes: the device is still busy with it while the host queues the
 * timestamps and the call, so the figure is the call's time on the
 * device, and the L2 (tens of MiB on current GPUs) holds the fill's
 * lines instead of the previous call's data. */
#define CLEAR_BYTES_CUDA (256ll << 20)

static void usage(void)
{
    printf(
        "Usage: moescatter bench [OPTIONS]\n"
        "\n"
        "Times moes_scatter (count and scatter, as one call) and moes_gather\n"
        "on the MoE layer of a real model, rotating among input sets that\n"
        "together exceed 128 MiB, and prints per call the median time, the\n"
        "fewest bytes the call must move, GB/s, and the fraction of the copy\n"
        "bandwidth (moes_copy_within) measured in the same run.\n"
        "\n"
        "  --preset NAME      deepseek-v3 (default), deepseek-v3-ep8,\n"
        "                     qwen3-30b-a3b, mixtral (--list-presets)\n"
        "  --tokens N         tokens (default %d)\n"
        "  --experts E        the preset's layer with E experts instead\n"
        "                     (presets that hold every expert)\n"
        "  --layout L         contiguous (default), grouped or masked\n"
        "  --alignment A      rows per aligned block (default 128)\n"
        "  --ue8m0            pack the scales as UE8M0 (deepseek presets)\n"
        "  --allow-repeats    a token may name the same expert twice\n"
        "  --accumulate       the gather adds onto the old output\n"
        "  --exact-capacity   give the scatter only the rows the routings\n"
        "                     use (default: moes_scatter_capacity's\n"
        "                     bound, as a caller that captures graphs does;\n"
        "                     masked: always the largest count)\n"
        "  --index-only       the scatter copies no rows (x and out NULL):\n"
        "                     it reports out_index, its layout's indices\n"
        "                     and row_source (pad N*K), as for GEMMs that\n"
        "                     read the rows in place\n"
        "  --zero-padding     the scatter zeroes every row that holds no\n"
        "                     token (MOES_SCATTER_ZERO_PADDING)\n"
        "  --seed S           routing and data seed (default %d)\n"
        "  --iters N          timed calls per operation (default %d)\n"
        "  --idle             CUDA: queue each timed call on an idle device,\n"
        "                     so that its figure includes the host's launch\n"
        "                     (default: behind a 256 MiB fill that clears\n"
        "                     the L2 and keeps the device busy)\n"
        "  --backend B        auto (default), cpu or cuda\n"
        "  --threads N        OpenMP threads of the CPU backend\n"
        "  --json             print JSON instead of the table\n"
        "  --sweep            every power of two from --min-tokens (1) to\n"
        "                     --max-tokens (%d on CUDA, %d on the CPU)\n"
        "  --csv FILE         write the results as CSV\n"
        "  --plot FILE        with --sweep: plot GB/s against tokens into\n"
        "                     FILE.png or FILE.svg with gnuplot (the CSV\n"
        "                     goes to --csv, or next to the plot)\n"
        "\n"
        "  --ep               expert-parallel dispatch and combine across\n"
        "                     the ranks of an MPI job instead (mpirun -np R\n"
        "                     moescatter bench --ep --help for its options)\n"
        "\n"
        "See moescatter(1), BYTES MOVED, for what is counted.\n",
        DEFAULT_TOKENS, DEFAULT_SEED, DEFAULT_ITERS, SWEEP_MAX_TOKENS_CUDA,
        SWEEP_MAX_TOKENS_CPU);
}

static void list_presets(void)
{
    for (int i = 0; i < bench_n_presets; i++) {
        const bench_preset *p = &bench_presets[i];
        printf("%-16s %s: hidden %lld, %lld experts", p->name, p->model,
               (long long)p->hidden, (long long)p->n_experts);
        if (p->n_experts != p->n_experts_global)
            printf(" of %lld", (long long)p->n_experts_global);
        printf(", top-%lld, x %s%s, y %s, out %s\n", (long long)p->top_k,
               bench_dtype_name(p->x_dtype),
               p->scale_block ? " + fp32 scales per 128" : "",
               bench_dtype_name(p->y_dtype), bench_dtype_name(p->out_dtype));
    }
}

typedef struct bench_options {
    bench_config cfg;
    int backend, json, sweep;
    int64_t threads, min_tokens, max_tokens;
    int tokens_given, min_given, max_given, idle;
    const char *csv, *plot;
    int64_t experts;            /* --experts, 0: the preset's           */
    bench_preset custom;        /* the preset with that expert count    */
    char custom_model[128];
} bench_options;

/* --experts: the preset's layer with E experts, in o->custom. */
static int use_experts(bench_options *o)
{
    const bench_preset *p = o->cfg.preset;
    if (p->n_experts != p->n_experts_global)
        return tool_usage_error("bench", "--experts: preset %s is expert "
                                "parallel (it holds %lld of %lld experts); "
                                "give a preset that holds every expert",
                                p->name, (long long)p->n_experts,
                                (long long)p->n_experts_global);
    o->custom = *p;
    o->custom.n_experts = o->custom.n_experts_global = o->experts;
    snprintf(o->custom_model, sizeof o->custom_model,
             "%s, with %lld experts instead of %lld", p->model,
             (long long)o->experts, (long long)p->n_experts);
    o->custom.model = o->custom_model;
    o->cfg.preset = &o->custom;
    return TOOL_EXIT_OK;
}

static int parse_layout(const char *text, int *layout)
{
    if (strcmp(text, "contiguous") == 0)
        *layout = MOES_LAYOUT_CONTIGUOUS;
    else if (strcmp(text, "grouped") == 0)
        *layout = MOES_LAYOUT_GROUPED;
    else if (strcmp(text, "masked") == 0)
        *layout = MOES_LAYOUT_MASKED;
    else
        return tool_usage_error("bench", "--layout: '%s' is not contiguous, "
                                "grouped or masked", text);
    return TOOL_EXIT_OK;
}

/* Returns -1 to go on, or the exit status. */
static int parse(int argc, char **argv, bench_options *o)
{
    tool_parser p;
    const char *v;
    int id, rc = TOOL_EXIT_OK;

    memset(o, 0, sizeof *o);
    o->cfg.preset = &bench_presets[0];
    o->cfg.tokens = DEFAULT_TOKENS;
    o->cfg.layout = MOES_LAYOUT_CONTIGUOUS;
    o->cfg.alignment = 128;
    o->cfg.seed = DEFAULT_SEED;
    o->cfg.iters = DEFAULT_ITERS;
    o->cfg.warmup = DEFAULT_WARMUP;
    o->cfg.rotate_bytes = ROTATE_BYTES;
    o->backend = MOES_BACKEND_AUTO;
    o->min_tokens = 1;
    tool_parser_init(&p, "bench", options, argc, argv);
    while (rc == TOOL_EXIT_OK &&
           (id = tool_next_option(&p, &v)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_HELP: usage(); return TOOL_EXIT_OK;
        case TOOL_OPT_ERROR: return TOOL_EXIT_USAGE;
        case OPT_LIST: list_presets(); return TOOL_EXIT_OK;
        case OPT_PRESET:
            o->cfg.preset = bench_find_preset(v);
            if (!o->cfg.preset)
                return tool_usage_error("bench", "--preset: unknown preset "
                                        "'%s' (see --list-presets)", v);
            break;
        case OPT_TOKENS:
            rc = tool_parse_i64("bench", "--tokens", v, 1, 1ll << 24,
                                &o->cfg.tokens);
            o->tokens_given = 1;
            break;
        case OPT_BACKEND:
            rc = tool_parse_backend("bench", v, &o->backend);
            break;
        case OPT_THREADS:
            rc = tool_parse_i64("bench", "--threads", v, 1, 4096, &o->threads);
            break;
        case OPT_ITERS:
            rc = tool_parse_i64("bench", "--iters", v, 1, 1000000,
                                &o->cfg.iters);
            break;
        case OPT_LAYOUT: rc = parse_layout(v, &o->cfg.layout); break;
        case OPT_ALIGNMENT:
            rc = tool_parse_i64("bench", "--alignment", v, 1, 1 << 20,
                                &o->cfg.alignment);
            break;
        case OPT_UE8M0: o->cfg.ue8m0 = 1; break;
        case OPT_ALLOW_REPEATS: o->cfg.allow_repeats = 1; break;
        case OPT_ACCUMULATE: o->cfg.accumulate = 1; break;
        case OPT_EXACT_CAPACITY: o->cfg.exact_capacity = 1; break;
        case OPT_INDEX_ONLY: o->cfg.index_only = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_SEED:
            rc = tool_parse_u64("bench", "--seed", v, &o->cfg.seed);
            break;
        case OPT_SWEEP: o->sweep = 1; break;
        case OPT_MIN_TOKENS:
            rc = tool_parse_i64("bench", "--min-tokens", v, 1, 1ll << 24,
                                &o->min_tokens);
            o->min_given = 1;
            break;
        case OPT_MAX_TOKENS:
            rc = tool_parse_i64("bench", "--max-tokens", v, 1, 1ll << 24,
                                &o->max_tokens);
            o->max_given = 1;
            break;
        case OPT_EXPERTS:
            rc = tool_parse_i64("bench", "--experts", v, 1, 1ll << 24,
                                &o->experts);
            break;
        case OPT_CSV: o->csv = v; break;
        case OPT_PLOT: o->plot = v; break;
        case OPT_IDLE: o->idle = 1; break;
        case OPT_ZERO_PADDING: o->cfg.zero_padding = 1; break;
        }
    }
    if (rc == TOOL_EXIT_OK && o->experts)
        rc = use_experts(o);
    if (rc != TOOL_EXIT_OK)
        return rc;
    if (o->cfg.ue8m0 && o->cfg.index_only)
        return tool_usage_error("bench", "--ue8m0 and --index-only exclude "
                                "each other: an index-only scatter has no "
                                "scales");
    if (o->cfg.zero_padding && o->cfg.index_only)
        return tool_usage_error("bench", "--zero-padding and --index-only "
                                "exclude each other: an index-only scatter "
                                "has no rows to zero");
    if (o->cfg.ue8m0 && !o->cfg.preset->scale_block)
        return tool_usage_error("bench", "--ue8m0: preset %s has no scales",
                                o->cfg.preset->name);
    if (!o->cfg.allow_repeats &&
        o->cfg.preset->top_k > o->cfg.preset->n_experts_global)
        return tool_usage_error("bench", "top-k exceeds the experts");
    if (o->plot && !o->sweep)
        return tool_usage_error("bench", "--plot needs --sweep");
    if (o->sweep && o->tokens_given)
        return tool_usage_error("bench", "--sweep and --tokens exclude each "
                                "other; use --min-tokens and --max-tokens");
    if ((o->min_given || o->max_given) && !o->sweep)
        return tool_usage_error("bench", "--min-tokens and --max-tokens "
                                "bound a --sweep; one call size is "
                                "--tokens");
    if (o->max_given && o->max_tokens < o->min_tokens)
        return tool_usage_error("bench", "--max-tokens is below --min-tokens");
    return -1;
}

/* The CSV next to the plot: the plot's name with .csv for its extension. */
static char *csv_beside(const char *plot)
{
    size_t n = strlen(plot);
    char *s = malloc(n + 5);
    if (!s)
        return NULL;
    memcpy(s, plot, n + 1);
    if (n > 4 && s[n - 4] == '.')
        s[n - 4] = '\0';
    strcat(s, ".csv");
    return s;
}

/* The copies of the calls' bytes: half read, half written, at least one
 * byte each way. */
static int64_t copy_of(double bytes)
{
    const int64_t half = (int64_t)(bytes / 2.0);
    return half > 0 ? half : 1;
}

static int run_point(moes_context *ctx, const bench_config *cfg,
                     const bench_clear *clear, bench_result *r)
{
    bench_workload w;
    int rc = bench_workload_create(ctx, cfg, &w);
    if (rc != TOOL_EXIT_OK)
        return rc;
    rc = bench_measure(ctx, &w, clear, r);
    bench_workload_destroy(ctx, &w);
    /* After the sets are freed, so that the copies' buffers fit where
     * they did. */
    r->has_copies = clear->bytes > 0;
    if (rc == TOOL_EXIT_OK && r->has_copies)
        rc = bench_measure_copy(ctx, copy_of(r->scatter.bytes), cfg->iters,
                                clear, &r->scatter_copy);
    if (rc == TOOL_EXIT_OK && r->has_copies)
        rc = bench_measure_copy(ctx, copy_of(r->gather.bytes), cfg->iters,
                                clear, &r->gather_copy);
    return rc;
}

int tool_bench(int argc, char **argv)
{
    bench_options o;
    bench_run_info run;
    moes_context_info info;
    moes_context *ctx;
    bench_result *results = NULL;
    bench_clear clear = {NULL, 0};
    int64_t n_results = 0, cap_results = 0;
    char *csv_owned = NULL;
    const char *csv;
    int rc, st;

    /* --ep is another benchmark, with its own options. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--ep") == 0)
            return tool_bench_ep(argc, argv);
    rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    /* The files are checked now: a sweep can take minutes, and its
     * results must not be lost to a path found wrong at the end. */
    csv = o.csv;
    if (!csv && o.plot) {
        csv = csv_owned = csv_beside(o.plot);
        if (!csv)
            return tool_fail("bench", "cannot allocate a file name");
    }
    rc = bench_check_outputs(csv, o.plot);
    if (rc != TOOL_EXIT_OK) {
        free(csv_owned);
        return rc;
    }
    if (tool_open_context("bench", o.backend, (int)o.threads, &ctx)) {
        free(csv_owned);
        return TOOL_EXIT_FAILURE;
    }
    info.struct_size = sizeof info;
    st = moes_context_get_info(ctx, &info);
    if (st != MOES_OK) {
        rc = tool_library_error("bench", ctx, "moes_context_get_info", st);
        goto done;
    }
    memset(&run, 0, sizeof run);
    run.cfg = &o.cfg;
    run.ctx_info = &info;
    run.copy_buffer_bytes = info.backend == MOES_BACKEND_CUDA
                                ? COPY_BYTES_CUDA
                                : COPY_BYTES_CPU;
    if (info.backend == MOES_BACKEND_CUDA && !o.idle) {
        st = moes_malloc(ctx, &clear.buf, CLEAR_BYTES_CUDA);
        if (st == MOES_OK) {
            clear.bytes = CLEAR_BYTES_CUDA;
        } else if (st == MOES_ERR_OUT_OF_MEMORY) {
            /* A device too small for the fill still gets its figures,
             * taken as with --idle (the header says so). */
            fprintf(stderr, "bench: no device memory for the %lld MiB fill "
                            "ahead of each call; timing on an idle device\n",
                    (long long)(CLEAR_BYTES_CUDA >> 20));
            clear.buf = NULL;
        } else {
            rc = tool_library_error("bench", ctx, "moes_malloc", st);
            goto done;
        }
    }
    run.clear_bytes = clear.bytes;
    rc = bench_measure_copy(ctx, run.copy_buffer_bytes,
                            o.cfg.iters < COPY_ITERS_MAX ? o.cfg.iters
                                                         : COPY_ITERS_MAX,
                            &clear, &run.copy);
    if (rc != TOOL_EXIT_OK)
        goto done;
    if (!o.max_given) {
        o.max_tokens = info.backend == MOES_BACKEND_CUDA
                           ? SWEEP_MAX_TOKENS_CUDA
                           : SWEEP_MAX_TOKENS_CPU;
        /* A sweep from past the backend's default end is that one point. */
        if (o.max_tokens < o.min_tokens)
            o.max_tokens = o.min_tokens;
    }
    if (!o.json)
        bench_print_header(stdout, &run);

    for (int64_t tokens = o.sweep ? o.min_tokens : o.cfg.tokens;;
         tokens *= 2) {
        bench_config cfg = o.cfg;
        if (n_results == cap_results) {
            bench_result *more;
            cap_results = cap_results ? 2 * cap_results : 8;
            more = realloc(results, (size_t)cap_results * sizeof *results);
            if (!more) {
                rc = tool_fail("bench", "cannot allocate the results");
                goto done;
            }
            results = more;
        }
        cfg.tokens = tokens;
        rc = run_point(ctx, &cfg, &clear, &results[n_results]);
        if (rc != TOOL_EXIT_OK)
            goto done;
        if (!o.json) {
            if (o.sweep)
                bench_print_sweep_row(stdout, &run, &results[n_results],
                                      n_results == 0);
            else
                bench_print_table(stdout, &run, &results[n_results]);
            fflush(stdout);
        }
        n_results++;
        if (!o.sweep || tokens > o.max_tokens / 2)
            break;
    }
    if (o.json)
        bench_print_json(stdout, &run, results, n_results);

    if (csv) {
        rc = bench_write_csv(csv, &run, results, n_results);
        if (rc == TOOL_EXIT_OK && !o.json)
            printf("\nwrote %s\n", csv);
    }
    if (rc == TOOL_EXIT_OK && o.plot) {
        rc = bench_plot(o.plot, csv, &run);
        if (rc == TOOL_EXIT_OK && !o.json)
            printf("wrote %s\n", o.plot);
    }
done:
    free(results);
    free(csv_owned);
    moes_free(ctx, clear.buf);
    if (tool_close_context("bench", ctx) != TOOL_EXIT_OK)
        rc = TOOL_EXIT_FAILURE;
    return rc;
}
