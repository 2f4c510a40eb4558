/* SPDX-License-Identifier: MIT */
/*
 * bench.h - what the files of `moescatter bench` share: the model
 * presets, the workload (input sets on the backend), the measurements
 * and their output.
 */
#ifndef MOES_TOOL_BENCH_H
#define MOES_TOOL_BENCH_H

#include <stdint.h>
#include <stdio.h>

#include "tool.h"

/* The MoE layer of a real model, as the scatter and gather see it. */
typedef struct bench_preset {
    const char *name;
    const char *model;          /* what it stands for                    */
    int64_t hidden;             /* H                                     */
    int64_t n_experts_global;   /* E_global                              */
    int64_t n_experts;          /* E local (< E_global: expert parallel) */
    int64_t top_k;              /* K                                     */
    int x_dtype;                /* rows scattered                        */
    int64_t scale_block;        /* fp32 scales per this many, 0: none    */
    int y_dtype;                /* expert outputs, gathered              */
    int out_dtype;              /* gather output                         */
} bench_preset;

extern const bench_preset bench_presets[];
extern const int bench_n_presets;

/* The preset called name, or NULL. */
const bench_preset *bench_find_preset(const char *name);
/* "fp8_e4m3", "bf16", ... */
const char *bench_dtype_name(int dtype);

/* One benchmark point: everything that decides what is timed. */
typedef struct bench_config {
    const bench_preset *preset;
    int64_t tokens;
    int layout;                 /* moes_layout                          */
    int64_t alignment;          /* A (contiguous, grouped)              */
    int ue8m0;                  /* pack the scales as UE8M0             */
    int allow_repeats;          /* a token may name an expert twice     */
    int accumulate;             /* gather with MOES_GATHER_ACCUMULATE   */
    int exact_capacity;         /* capacity = the rows the routings use */
    int index_only;             /* the scatter copies no rows           */
    int zero_padding;           /* MOES_SCATTER_ZERO_PADDING            */
    uint64_t seed;
    int64_t iters;              /* timed calls per operation            */
    int64_t warmup;             /* untimed calls before (>= the sets)   */
    int64_t rotate_bytes;       /* the input sets together exceed this  */
} bench_config;

/* The buffers of one input set, on the backend. */
typedef struct bench_set {
    void *ids, *x, *x_scales, *weights, *y;
    void *out, *out_scales, *out_index, *m_indices;
    void *expert_start, *expert_end, *masked_m, *n_dropped;
    void *gather_index, *gather_out;
    void *row_source;           /* index-only: [out_rows]               */
    int64_t placed;             /* rows the scatter places              */
    int64_t tokens_touched;     /* tokens with at least one placed row  */
    double scatter_bytes;       /* the fewest bytes each call moves     */
    double gather_bytes;
} bench_set;

typedef struct bench_workload {
    bench_config cfg;
    int32_t *expert_map;        /* backend memory, NULL without EP      */
    int64_t capacity;           /* args.capacity given to the scatter   */
    int64_t out_rows;           /* rows of out (E * C when masked)      */
    int64_t capacity_bound;     /* moes_scatter_capacity's answer       */
    int64_t rows_used_max;      /* the most rows a set's routing needs  */
    int64_t y_rows;             /* rows of y: the most placed rows      */
    int64_t n_sets;
    bench_set *sets;
    void *arena;                /* one allocation holds every set       */
    int64_t arena_bytes;
} bench_workload;

/* Draws the routings, sizes and fills the input sets on ctx's backend.
 * Returns TOOL_EXIT_OK or prints why not and returns TOOL_EXIT_FAILURE. */
int bench_workload_create(moes_context *ctx, const bench_config *cfg,
                          bench_workload *w);
void bench_workload_destroy(moes_context *ctx, bench_workload *w);

/* Fills the routing and the scatter and gather arguments of set s. */
void bench_scatter_call(const bench_workload *w, const bench_set *s,
                        moes_routing *routing, moes_scatter_args *args);
void bench_gather_call(const bench_workload *w, const bench_set *s,
                       moes_gather_args *args);

/* The times of one operation. */
typedef struct bench_timing {
    double median_ms, min_ms, max_ms;
    double bytes;               /* mean over the sets of the fewest bytes */
} bench_timing;

/* One point's results. */
typedef struct bench_result {
    int64_t tokens;
    bench_timing scatter, gather;
    /* A copy of as many bytes as each call moves, timed the same way
     * behind the same fill: what a call of that size can reach, its
     * ramp and tail included. Only with a fill (has_copies): without
     * one a copy of a few MB finds its bytes in the cache the copy
     * before it left, and says nothing about the call. */
    int has_copies;
    bench_timing scatter_copy, gather_copy;
    int64_t capacity, capacity_bound, rows_used_max, n_sets;
    double sets_bytes;          /* what the sets together move          */
} bench_result;

/* What each timed call is queued behind: a fill of bytes at buf (backend
 * memory), or nothing when bytes is 0 (the call is queued on an idle
 * device, or runs on the CPU, and its figure includes its launch). */
typedef struct bench_clear {
    void *buf;
    int64_t bytes;
} bench_clear;

/* Times scatter and gather on w. Returns TOOL_EXIT_OK or prints the
 * error and returns TOOL_EXIT_FAILURE. */
int bench_measure(moes_context *ctx, const bench_workload *w,
                  const bench_clear *clear, bench_result *r);
/* Times moes_copy_within of bytes; timing.bytes counts read + written. */
int bench_measure_copy(moes_context *ctx, int64_t bytes, int64_t iters,
                       const bench_clear *clear, bench_timing *t);

/* Output. copy_gbps is the copy bandwidth of the same run. */
typedef struct bench_run_info {
    const bench_config *cfg;
    const moes_context_info *ctx_info;
    bench_timing copy;
    int64_t copy_buffer_bytes;
    int64_t clear_bytes;        /* bench_clear.bytes of the run           */
} bench_run_info;

void bench_print_header(FILE *f, const bench_run_info *run);
void bench_print_table(FILE *f, const bench_run_info *run,
                       const bench_result *r);
void bench_print_sweep_row(FILE *f, const bench_run_info *run,
                           const bench_result *r, int first);
void bench_print_json(FILE *f, const bench_run_info *run,
                      const bench_result *results, int64_t n_results);
int bench_write_csv(const char *path, const bench_run_info *run,
                    const bench_result *results, int64_t n_results);
/* Before anything is measured: the CSV and the plot (either may be NULL)
 * can be written, the plot's name ends in .png or .svg, and gnuplot is
 * on PATH. Returns TOOL_EXIT_OK, or says why not. */
int bench_check_outputs(const char *csv_path, const char *plot_path);
/* Plots GB/s against tokens from the CSV at csv_path into path (.png or
 * .svg) with gnuplot. Returns TOOL_EXIT_OK, or says why not. */
int bench_plot(const char *path, const char *csv_path,
               const bench_run_info *run);

/* GB/s of bytes in ms milliseconds. */
double bench_gbps(double bytes, double ms);

#endif /* MOES_TOOL_BENCH_H */
