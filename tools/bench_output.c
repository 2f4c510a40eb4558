/* SPDX-License-Identifier: MIT */
/*
 * bench_output.c - what `moescatter bench` prints: the header, the table
 * of one run, the lines of a sweep, JSON, CSV, and the plot through
 * gnuplot.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MIB (1024.0 * 1024.0)

static const char *layout_name(int layout)
{
    switch (layout) {
    case MOES_LAYOUT_CONTIGUOUS: return "contiguous";
    case MOES_LAYOUT_GROUPED: return "grouped";
    default: return "masked";
    }
}

static const char *scales_name(const bench_config *cfg)
{
    if (!cfg->preset->scale_block)
        return "none";
    return cfg->ue8m0 ? "ue8m0" : "fp32";
}

static double fraction(const bench_run_info *run, const bench_timing *t)
{
    double copy = bench_gbps(run->copy.bytes, run->copy.median_ms);
    return copy > 0.0 ? bench_gbps(t->bytes, t->median_ms) / copy : 0.0;
}

void bench_print_header(FILE *f, const bench_run_info *run)
{
    const bench_config *cfg = run->cfg;
    const bench_preset *p = cfg->preset;
    const moes_context_info *ci = run->ctx_info;

    fprintf(f, "preset    %s: %s\n", p->name, p->model);
    fprintf(f, "shape     hidden %lld, %lld experts", (long long)p->hidden,
            (long long)p->n_experts);
    if (p->n_experts != p->n_experts_global)
        fprintf(f, " of %lld (expert map, -1 for the others)",
                (long long)p->n_experts_global);
    fprintf(f, ", top-%lld\n", (long long)p->top_k);
    fprintf(f, "dtypes    x %s", bench_dtype_name(p->x_dtype));
    if (p->scale_block)
        fprintf(f, " with fp32 scales per %lld%s", (long long)p->scale_block,
                cfg->ue8m0 ? " (out: packed UE8M0)" : "");
    fprintf(f, ", y %s, gather out %s%s\n", bench_dtype_name(p->y_dtype),
            bench_dtype_name(p->out_dtype),
            cfg->accumulate ? " (accumulating)" : "");
    fprintf(f, "layout    %s%s%s", layout_name(cfg->layout),
            cfg->index_only ? " (index only: no rows copied, row_source "
                              "written)" : "",
            cfg->zero_padding ? " (padding rows zeroed)" : "");
    if (cfg->layout != MOES_LAYOUT_MASKED)
        fprintf(f, ", alignment %lld", (long long)cfg->alignment);
    fprintf(f, "; routing seed %llu, %s\n", (unsigned long long)cfg->seed,
            cfg->allow_repeats ? "repeated experts allowed in a token"
                               : "no repeated expert in a token");
    if (ci->backend == MOES_BACKEND_CUDA)
        fprintf(f, "backend   cuda: %s, %d SMs (%s)\n", ci->device_name,
                ci->device_multiprocessors, ci->reason);
    else
        fprintf(f, "backend   cpu: %d threads (%s)\n", ci->cpu_threads,
                ci->reason);
    fprintf(f, "copy      moes_copy_within of %.0f MiB, the yardstick: "
               "%.3f ms, "
               "%.1f GB/s (bytes read + written)\n",
            (double)run->copy_buffer_bytes / MIB, run->copy.median_ms,
            bench_gbps(run->copy.bytes, run->copy.median_ms));
    fprintf(f, "timing    median of %lld calls each, after warm-up, ",
            (long long)cfg->iters);
    if (run->clear_bytes > 0)
        fprintf(f, "each behind a %.0f MiB fill (L2 cleared, launch hidden)\n",
                (double)run->clear_bytes / MIB);
    else if (ci->backend == MOES_BACKEND_CUDA)
        fprintf(f, "each on an idle device (launch included)\n");
    else
        fprintf(f, "each a call that returns when done\n");
}

static void print_timing_row(FILE *f, const char *name,
                             const bench_run_info *run, const bench_timing *t)
{
    fprintf(f, "%-8s %10.4f %10.4f %10.4f %11.3f %9.2f %8.3f\n", name,
            t->median_ms, t->min_ms, t->max_ms, t->bytes / 1e6,
            bench_gbps(t->bytes, t->median_ms), fraction(run, t));
}

void bench_print_table(FILE *f, const bench_run_info *run,
                       const bench_result *r)
{
    fprintf(f, "tokens    %lld; %lld input sets rotating, %.1f MiB moved per "
               "round\n",
            (long long)r->tokens, (long long)r->n_sets, r->sets_bytes / MIB);
    if (run->cfg->layout == MOES_LAYOUT_MASKED)
        fprintf(f, "rows      %lld (capacity per expert: the largest count); "
                   "moes_scatter_capacity: %lld per expert\n",
                (long long)r->rows_used_max, (long long)r->capacity_bound);
    else
        fprintf(f, "rows      %lld used at most, capacity %lld (%s)\n",
                (long long)r->rows_used_max, (long long)r->capacity,
                r->capacity == r->capacity_bound ? "moes_scatter_capacity"
                                                 : "the rows used");
    fprintf(f, "\n%-8s %10s %10s %10s %11s %9s %8s\n", "call", "median ms",
            "min ms", "max ms", "MB moved", "GB/s", "of copy");
    print_timing_row(f, "scatter", run, &r->scatter);
    print_timing_row(f, "gather", run, &r->gather);
    print_timing_row(f, "copy", run, &run->copy);
    if (r->has_copies) {
        print_timing_row(f, "copy-sc", run, &r->scatter_copy);
        print_timing_row(f, "copy-ga", run, &r->gather_copy);
        fprintf(f, "(copy-sc, copy-ga: a copy of the scatter's, the "
                   "gather's bytes, timed alike)\n");
    }
}

void bench_print_sweep_row(FILE *f, const bench_run_info *run,
                           const bench_result *r, int first)
{
    if (first)
        fprintf(f, "\n%8s %11s %17s %9s %8s %11s %17s %9s %8s %5s\n",
                "tokens", "scatter ms", "(min - max)", "GB/s", "of copy",
                "gather ms", "(min - max)", "GB/s", "of copy", "sets");
    fprintf(f, "%8lld %11.4f (%7.4f - %7.4f) %9.2f %8.3f %11.4f "
               "(%7.4f - %7.4f) %9.2f %8.3f %5lld\n",
            (long long)r->tokens, r->scatter.median_ms, r->scatter.min_ms,
            r->scatter.max_ms,
            bench_gbps(r->scatter.bytes, r->scatter.median_ms),
            fraction(run, &r->scatter), r->gather.median_ms,
            r->gather.min_ms, r->gather.max_ms,
            bench_gbps(r->gather.bytes, r->gather.median_ms),
            fraction(run, &r->gather), (long long)r->n_sets);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_timing(FILE *f, const char *name, const bench_run_info *run,
                        const bench_timing *t, int with_fraction)
{
    fprintf(f, "\"%s\": {\"median_ms\": %.6f, \"min_ms\": %.6f, "
               "\"max_ms\": %.6f, \"bytes\": %.0f, \"gbps\": %.4f",
            name, t->median_ms, t->min_ms, t->max_ms, t->bytes,
            bench_gbps(t->bytes, t->median_ms));
    if (with_fraction)
        fprintf(f, ", \"fraction_of_copy\": %.5f", fraction(run, t));
    fputc('}', f);
}

void bench_print_json(FILE *f, const bench_run_info *run,
                      const bench_result *results, int64_t n_results)
{
    const bench_config *cfg = run->cfg;
    const bench_preset *p = cfg->preset;
    const moes_context_info *ci = run->ctx_info;
    fprintf(f, "{\"preset\": ");
    json_string(f, p->name);
    fprintf(f, ", \"model\": ");
    json_string(f, p->model);
    fprintf(f, ", \"hidden\": %lld, \"experts\": %lld, "
               "\"experts_global\": %lld, \"top_k\": %lld, ",
            (long long)p->hidden, (long long)p->n_experts,
            (long long)p->n_experts_global, (long long)p->top_k);
    fprintf(f, "\"x_dtype\": \"%s\", \"scales\": \"%s\", "
               "\"scale_block\": %lld, \"y_dtype\": \"%s\", "
               "\"out_dtype\": \"%s\", \"accumulate\": %s, ",
            bench_dtype_name(p->x_dtype), scales_name(cfg),
            (long long)p->scale_block, bench_dtype_name(p->y_dtype),
            bench_dtype_name(p->out_dtype),
            cfg->accumulate ? "true" : "false");
    fprintf(f, "\"layout\": \"%s\", \"alignment\": %lld, \"seed\": %llu, "
               "\"allow_repeats\": %s, \"index_only\": %s, "
               "\"zero_padding\": %s, \"iters\": %lld, ",
            layout_name(cfg->layout), (long long)cfg->alignment,
            (unsigned long long)cfg->seed,
            cfg->allow_repeats ? "true" : "false",
            cfg->index_only ? "true" : "false",
            cfg->zero_padding ? "true" : "false", (long long)cfg->iters);
    fprintf(f, "\"backend\": \"%s\", \"device\": ",
            tool_backend_name(ci->backend));
    json_string(f, ci->device_name);
    fprintf(f, ", \"cpu_threads\": %d, \"reason\": ", ci->cpu_threads);
    json_string(f, ci->reason);
    fprintf(f, ", \"copy_buffer_bytes\": %lld, \"clear_bytes\": %lld, ",
            (long long)run->copy_buffer_bytes, (long long)run->clear_bytes);
    json_timing(f, "copy", run, &run->copy, 0);
    fprintf(f, ", \"results\": [");
    for (int64_t i = 0; i < n_results; i++) {
        const bench_result *r = &results[i];
        fprintf(f, "%s\n  {\"tokens\": %lld, \"input_sets\": %lld, "
                   "\"rows_used\": %lld, \"capacity\": %lld, "
                   "\"capacity_bound\": %lld, ",
                i ? "," : "", (long long)r->tokens, (long long)r->n_sets,
                (long long)r->rows_used_max, (long long)r->capacity,
                (long long)r->capacity_bound);
        json_timing(f, "scatter", run, &r->scatter, 1);
        fprintf(f, ", ");
        json_timing(f, "gather", run, &r->gather, 1);
        if (r->has_copies) {
            fprintf(f, ", ");
            json_timing(f, "scatter_copy", run, &r->scatter_copy, 1);
            fprintf(f, ", ");
            json_timing(f, "gather_copy", run, &r->gather_copy, 1);
        }
        fputc('}', f);
    }
    fprintf(f, "]}\n");
}

int bench_write_csv(const char *path, const bench_run_info *run,
                    const bench_result *results, int64_t n_results)
{
    FILE *f = fopen(path, "w");
    double copy = bench_gbps(run->copy.bytes, run->copy.median_ms);
    if (!f)
        return tool_fail("bench", "cannot write %s", path);
    fprintf(f, "tokens,scatter_ms,scatter_bytes,scatter_gbps,"
               "scatter_fraction_of_copy,gather_ms,gather_bytes,gather_gbps,"
               "gather_fraction_of_copy,copy_gbps,input_sets,rows_used,"
               "capacity_bound,capacity,scatter_min_ms,scatter_max_ms,"
               "gather_min_ms,gather_max_ms,clear_bytes,scatter_copy_ms,"
               "gather_copy_ms\n");
    for (int64_t i = 0; i < n_results; i++) {
        const bench_result *r = &results[i];
        fprintf(f, "%lld,%.6f,%.0f,%.4f,%.5f,%.6f,%.0f,%.4f,%.5f,%.4f,"
                   "%lld,%lld,%lld,%lld,%.6f,%.6f,%.6f,%.6f,%lld,",
                (long long)r->tokens, r->scatter.median_ms, r->scatter.bytes,
                bench_gbps(r->scatter.bytes, r->scatter.median_ms),
                fraction(run, &r->scatter), r->gather.median_ms,
                r->gather.bytes,
                bench_gbps(r->gather.bytes, r->gather.median_ms),
                fraction(run, &r->gather), copy, (long long)r->n_sets,
                (long long)r->rows_used_max, (long long)r->capacity_bound,
                (long long)r->capacity, r->scatter.min_ms, r->scatter.max_ms,
                r->gather.min_ms, r->gather.max_ms,
                (long long)run->clear_bytes);
        /* Empty where no copy was timed. */
        if (r->has_copies)
            fprintf(f, "%.6f,%.6f\n", r->scatter_copy.median_ms,
                    r->gather_copy.median_ms);
        else
            fprintf(f, ",\n");
    }
    if (fclose(f) != 0)
        return tool_fail("bench", "cannot write %s", path);
    return TOOL_EXIT_OK;
}

/* Whether an executable called name is on PATH. */
static int on_path(const char *name)
{
    const char *path = getenv("PATH");
    char buf[4096];
    while (path && *path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        if (len > 0 && len + strlen(name) + 2 <= sizeof buf) {
            memcpy(buf, path, len);
            buf[len] = '/';
            strcpy(buf + len + 1, name);
            if (access(buf, X_OK) == 0)
                return 1;
        }
        path = colon ? colon + 1 : NULL;
    }
    return 0;
}

/* A gnuplot single-quoted string: a quote is written twice. */
static void gnuplot_string(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Whether a file can be written at path: the file itself when it is
 * there, else its folder. */
static int can_write(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int ok;
    if (access(path, F_OK) == 0)
        return access(path, W_OK) == 0;
    if (!slash)
        return access(".", W_OK) == 0;
    if (slash == path)
        return access("/", W_OK) == 0;
    dir = malloc((size_t)(slash - path) + 1);
    if (!dir)
        return 0;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    ok = access(dir, W_OK) == 0;
    free(dir);
    return ok;
}

int bench_check_outputs(const char *csv_path, const char *plot_path)
{
    if (csv_path && !can_write(csv_path))
        return tool_fail("bench", "--csv: cannot write %s (no such folder, "
                         "or no permission)", csv_path);
    if (!plot_path)
        return TOOL_EXIT_OK;
    if (!ends_with(plot_path, ".svg") && !ends_with(plot_path, ".png"))
        return tool_fail("bench", "--plot %s: the name must end in .png or "
                         ".svg", plot_path);
    if (strchr(plot_path, '\n') || (csv_path && strchr(csv_path, '\n')))
        return tool_fail("bench", "--plot: a file name holds a newline");
    if (!can_write(plot_path))
        return tool_fail("bench", "--plot: cannot write %s (no such folder, "
                         "or no permission)", plot_path);
    if (!on_path("gnuplot"))
        return tool_fail("bench", "--plot: gnuplot is not installed (not "
                         "found on PATH)");
    return TOOL_EXIT_OK;
}

int bench_plot(const char *path, const char *csv_path,
               const bench_run_info *run)
{
    const bench_preset *p = run->cfg->preset;
    struct stat sb;
    FILE *g;
    int svg = ends_with(path, ".svg"), status;

    if (!svg && !ends_with(path, ".png"))
        return tool_fail("bench", "--plot %s: the name must end in .png or "
                         ".svg", path);
    if (strchr(path, '\n') || strchr(csv_path, '\n'))
        return tool_fail("bench", "--plot: a file name holds a newline");
    if (!on_path("gnuplot"))
        return tool_fail("bench", "gnuplot is not installed (not found on "
                         "PATH): no plot written; the data are in %s",
                         csv_path);
    g = popen("gnuplot", "w");
    if (!g)
        return tool_fail("bench", "cannot run gnuplot: no plot written; the "
                         "data are in %s", csv_path);
    if (svg)
        fprintf(g, "set terminal svg size 900,560\n");
    else
        fprintf(g, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) "
                   "{ set terminal pngcairo size 900,560 } "
                   "else { set terminal png size 900,560 }\n");
    fprintf(g, "set output ");
    gnuplot_string(g, path);
    fprintf(g, "\nset datafile separator ','\n"
               "set key top left\nset grid\nset logscale x 2\n"
               "set xlabel 'tokens'\nset ylabel 'GB/s (fewest bytes moved)'\n"
               "set title '%s on %s: %s layout'\n",
            p->name, tool_backend_name(run->ctx_info->backend),
            run->cfg->layout == MOES_LAYOUT_CONTIGUOUS ? "contiguous"
            : run->cfg->layout == MOES_LAYOUT_GROUPED  ? "grouped"
                                                       : "masked");
    fprintf(g, "plot ");
    gnuplot_string(g, csv_path);
    /* The median's GB/s, with a bar from the slowest call to the fastest. */
    fprintf(g, " using 1:4:($3/$16/1e6):($3/$15/1e6) skip 1 with yerrorlines "
               "title 'scatter (bar: max to min time)', '' using "
               "1:8:($7/$18/1e6):($7/$17/1e6) skip 1 with yerrorlines title "
               "'gather', '' using 1:10 skip 1 with lines dashtype 2 title "
               "'moes\\_copy\\_within'\n");
    status = pclose(g);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return tool_fail("bench", "gnuplot failed: no plot written; the data "
                         "are in %s", csv_path);
    if (stat(path, &sb) != 0 || sb.st_size == 0)
        return tool_fail("bench", "gnuplot wrote nothing to %s", path);
    return TOOL_EXIT_OK;
}
