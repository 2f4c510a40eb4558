/* SPDX-License-Identifier: MIT */
/*
 * check.c - `moescatter check`: random cases from a seed, each run on the
 * chosen backend and on the ground truth (the CPU backend for CUDA, the
 * naive oracle for the CPU), compared bit for bit: every status, every
 * data error message and every byte of every output buffer.
 *
 * Case i of a run with seed S is called S:i; its own 64-bit case seed
 * (tool_check_case_seed) is all that the generator needs, so either form
 * replays it with --replay.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "testkit.h"
#include "tool.h"

enum {
    OPT_CASES = 1, OPT_SEED, OPT_TIME, OPT_BACKEND, OPT_THREADS, OPT_REPLAY,
    OPT_MAX_TOKENS, OPT_MAX_HIDDEN, OPT_MAX_EXPERTS, OPT_JOBS
};

static const tool_option options[] = {
    {"cases", 1, OPT_CASES},
    {"seed", 1, OPT_SEED},
    {"time", 1, OPT_TIME},
    {"backend", 1, OPT_BACKEND},
    {"threads", 1, OPT_THREADS},
    {"replay", 1, OPT_REPLAY},
    {"max-tokens", 1, OPT_MAX_TOKENS},
    {"max-hidden", 1, OPT_MAX_HIDDEN},
    {"max-experts", 1, OPT_MAX_EXPERTS},
    {"jobs", 1, OPT_JOBS},
    {NULL, 0, 0},
};

#define DEFAULT_CASES 1000
#define DEFAULT_SEED 1
/* Differences printed in full; the rest are only counted. */
#define MAX_REPORTED 10

static void usage(void)
{
    printf(
        "Usage: moescatter check [--cases N] [--seed S] [--time SECONDS]\n"
        "                        [--backend auto|cpu|cuda] [--threads N]\n"
        "       moescatter check --replay S:I|CASE_SEED [--backend B]\n"
        "\n"
        "Draws random cases (valid and broken on purpose) from the seed and\n"
        "runs each on the chosen backend and on the ground truth: the CPU\n"
        "backend when the chosen one is CUDA, the naive oracle when it is\n"
        "the CPU. Statuses, data error messages and every output byte must\n"
        "be the same. A difference is printed with its case id, which\n"
        "--replay runs again alone with the details.\n"
        "\n"
        "  --cases N         cases to run (default %d)\n"
        "  --seed S          seed of the run (default %d)\n"
        "  --time SECONDS    stop after this long, even before N cases\n"
        "  --backend B       auto (default), cpu or cuda\n"
        "  --threads N       OpenMP threads of the CPU backend\n"
        "  --jobs J          cases run at the same time, each on contexts\n"
        "                    of its own (default: one per OpenMP thread)\n"
        "  --replay ID       run one case: S:I (case I of seed S) or the\n"
        "                    case seed printed with it\n"
        "  --max-tokens N, --max-hidden N, --max-experts N\n"
        "                    bounds of the drawn sizes (default: the test\n"
        "                    kit's, 400, 1100 and 3000)\n"
        "\n"
        "Exit status: 0 no difference, 1 a difference or an error, 2 bad\n"
        "command line.\n",
        DEFAULT_CASES, DEFAULT_SEED);
}

/* The case seed of case i of the run with seed s. */
static uint64_t case_seed(uint64_t s, uint64_t i)
{
    uint64_t z = s ^ (i * 0xD1B54A32D192ED03ull);
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "S:I" into its case seed, or a case seed as it is. */
static int parse_replay(const char *text, uint64_t *seed, char *label,
                        size_t label_len)
{
    const char *colon = strchr(text, ':');
    if (colon) {
        char run[32];
        uint64_t s, i;
        size_t n = (size_t)(colon - text);
        if (n == 0 || n >= sizeof run)
            return tool_usage_error("check", "--replay: '%s' is not S:I or "
                                    "a case seed", text);
        memcpy(run, text, n);
        run[n] = '\0';
        if (tool_parse_u64("check", "--replay", run, &s) ||
            tool_parse_u64("check", "--replay", colon + 1, &i))
            return TOOL_EXIT_USAGE;
        *seed = case_seed(s, i);
        snprintf(label, label_len, "%s", text);
    } else {
        if (tool_parse_u64("check", "--replay", text, seed))
            return TOOL_EXIT_USAGE;
        snprintf(label, label_len, "0x%016llx", (unsigned long long)*seed);
    }
    return TOOL_EXIT_OK;
}

/* The reference of ctx: the oracle (NULL) for the CPU, else a CPU
 * context, opened with MOES_BACKEND out of the way since it would
 * override the backend asked for. */
static int open_reference(int backend, int threads, moes_context **ref,
                          const char **ref_name)
{
    char *saved = NULL;
    const char *env;
    moes_context_info info;
    int rc;

    *ref = NULL;
    *ref_name = "oracle";
    if (backend == MOES_BACKEND_CPU)
        return TOOL_EXIT_OK;
    *ref_name = "cpu";
    env = getenv("MOES_BACKEND");
    if (env) {
        saved = strdup(env);
        if (!saved)
            return tool_fail("check", "out of memory");
        unsetenv("MOES_BACKEND");
    }
    rc = tool_open_context("check", MOES_BACKEND_CPU, threads, ref);
    if (saved) {
        setenv("MOES_BACKEND", saved, 1);
        free(saved);
    }
    if (rc != TOOL_EXIT_OK)
        return rc;
    info.struct_size = sizeof info;
    if (moes_context_get_info(*ref, &info) != MOES_OK ||
        info.backend != MOES_BACKEND_CPU) {
        moes_context_destroy(*ref);
        *ref = NULL;
        return tool_fail("check", "cannot open the CPU reference context");
    }
    return TOOL_EXIT_OK;
}

static const char *call_names[MOES_CALL_COUNT_OF] = {"count", "scatter",
                                                     "gather"};

static void print_run(const char *side, const moes_case_result *r)
{
    for (int i = 0; i < MOES_CALL_COUNT_OF; i++) {
        printf("  %-7s %-8s %s", side, call_names[i],
               moes_strerror(r->status[i]));
        if (r->status[i] != MOES_OK && r->message[i][0])
            printf(": %s", r->message[i]);
        printf("\n");
    }
}

/* Runs one case on both sides and prints everything about it. */
static int replay(moes_context *ctx, moes_context *ref, const char *ref_name,
                  const char *backend_name, uint64_t seed, const char *label,
                  const moes_case_limits *limits)
{
    moes_case c;
    moes_case_result want, got;
    char desc[1024], msg[1024];
    int rc = TOOL_EXIT_FAILURE;

    memset(&want, 0, sizeof want);
    memset(&got, 0, sizeof got);
    if (moes_case_generate(&c, seed, -1, limits) != MOES_OK)
        return tool_fail("check", "case %s: cannot generate it", label);
    moes_case_describe(&c, desc, sizeof desc);
    printf("case %s (case seed 0x%016llx = %llu)\n%s\n", label,
           (unsigned long long)seed, (unsigned long long)seed, desc);
    if (moes_case_run(ref, &c, &want, msg, sizeof msg) != MOES_OK) {
        tool_fail("check", "%s run: %s", ref_name, msg);
    } else if (moes_case_run(ctx, &c, &got, msg, sizeof msg) != MOES_OK) {
        tool_fail("check", "%s run: %s", backend_name, msg);
    } else {
        print_run(ref_name, &want);
        print_run(backend_name, &got);
        if (moes_case_compare(&c, &want, &got, msg, sizeof msg)) {
            printf("DIFFERENT: %s\n", msg);
        } else {
            printf("same: every status, message and output byte\n");
            rc = TOOL_EXIT_OK;
        }
    }
    moes_case_result_free(&want);
    moes_case_result_free(&got);
    moes_case_free(&c);
    return rc;
}

typedef struct check_options {
    int64_t cases, threads, jobs;
    uint64_t seed;
    double seconds;           /* 0: no limit */
    int backend;
    const char *replay;
    moes_case_limits limits;
} check_options;

/* Returns -1 to go on, or the exit status. */
static int parse(int argc, char **argv, check_options *o)
{
    tool_parser p;
    const char *v;
    int id, rc = TOOL_EXIT_OK;

    memset(o, 0, sizeof *o);
    o->cases = DEFAULT_CASES;
    o->seed = DEFAULT_SEED;
    o->backend = MOES_BACKEND_AUTO;
    tool_parser_init(&p, "check", options, argc, argv);
    while (rc == TOOL_EXIT_OK &&
           (id = tool_next_option(&p, &v)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_HELP: usage(); return TOOL_EXIT_OK;
        case TOOL_OPT_ERROR: return TOOL_EXIT_USAGE;
        case OPT_CASES:
            rc = tool_parse_i64("check", "--cases", v, 1, INT64_MAX,
                                &o->cases);
            break;
        case OPT_SEED:
            rc = tool_parse_u64("check", "--seed", v, &o->seed);
            break;
        case OPT_TIME:
            rc = tool_parse_seconds("check", "--time", v, &o->seconds);
            break;
        case OPT_BACKEND:
            rc = tool_parse_backend("check", v, &o->backend);
            break;
        case OPT_THREADS:
            rc = tool_parse_i64("check", "--threads", v, 1, 4096, &o->threads);
            break;
        case OPT_REPLAY: o->replay = v; break;
        case OPT_MAX_TOKENS:
            rc = tool_parse_i64("check", "--max-tokens", v, 1, 1 << 20,
                                &o->limits.max_tokens);
            break;
        case OPT_MAX_HIDDEN:
            rc = tool_parse_i64("check", "--max-hidden", v, 1, 1 << 20,
                                &o->limits.max_hidden);
            break;
        case OPT_JOBS:
            rc = tool_parse_i64("check", "--jobs", v, 1, 1024, &o->jobs);
            break;
        case OPT_MAX_EXPERTS:
            rc = tool_parse_i64("check", "--max-experts", v, 1, 1 << 20,
                                &o->limits.max_experts);
            break;
        }
    }
    return rc == TOOL_EXIT_OK ? -1 : rc;
}

/* The contexts of one job: the backend under test and its reference. */
typedef struct check_job {
    moes_context *ctx, *ref;
} check_job;

/* What the jobs share; changed only inside the critical section. */
typedef struct check_totals {
    int64_t done, differences, errors;
    double last_progress;
} check_totals;

static void close_jobs(check_job *jobs, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        moes_context_destroy(jobs[j].ref);
        moes_context_destroy(jobs[j].ctx);
    }
    free(jobs);
}

/* Opens n jobs' contexts; backend and ref_name say what they are. */
static int open_jobs(const check_options *o, int64_t n, check_job **out,
                     int *backend, const char **ref_name)
{
    check_job *jobs = calloc((size_t)n, sizeof *jobs);
    moes_context_info info;
    int st;
    *out = NULL;
    if (!jobs)
        return tool_fail("check", "out of memory");
    for (int64_t j = 0; j < n; j++) {
        if (tool_open_context("check", o->backend, (int)o->threads,
                              &jobs[j].ctx)) {
            close_jobs(jobs, j);
            return TOOL_EXIT_FAILURE;
        }
        info.struct_size = sizeof info;
        st = moes_context_get_info(jobs[j].ctx, &info);
        if (st != MOES_OK) {
            tool_library_error("check", jobs[j].ctx, "moes_context_get_info",
                               st);
            close_jobs(jobs, j + 1);
            return TOOL_EXIT_FAILURE;
        }
        *backend = info.backend;
        if (open_reference(info.backend, (int)o->threads, &jobs[j].ref,
                           ref_name)) {
            close_jobs(jobs, j + 1);
            return TOOL_EXIT_FAILURE;
        }
    }
    *out = jobs;
    return TOOL_EXIT_OK;
}

/* Counts one case's verdict, prints a difference and the progress line. */
static void record(const check_options *o, check_totals *totals,
                   int64_t index, int verdict, const char *msg,
                   const char *name, int progress, double start)
{
    double t;
    totals->done++;
    if (verdict == MOES_CHECK_DIFFERENT)
        totals->differences++;
    else if (verdict != MOES_CHECK_SAME)
        totals->errors++;
    if (verdict != MOES_CHECK_SAME &&
        totals->differences + totals->errors <= MAX_REPORTED) {
        if (progress)
            fprintf(stderr, "\r\033[K");
        /* A case is drawn from its seed and index within the run's
         * bounds: the replay needs the same ones. */
        char bounds[96] = "";
        const moes_case_limits *l = &o->limits;
        int at = 0;
        if (l->max_tokens)
            at += snprintf(bounds + at, sizeof bounds - (size_t)at,
                           " --max-tokens %lld", (long long)l->max_tokens);
        if (l->max_hidden)
            at += snprintf(bounds + at, sizeof bounds - (size_t)at,
                           " --max-hidden %lld", (long long)l->max_hidden);
        if (l->max_experts)
            snprintf(bounds + at, sizeof bounds - (size_t)at,
                     " --max-experts %lld", (long long)l->max_experts);
        printf("case %llu:%lld %s: %s\n  replay: moescatter check "
               "--replay %llu:%lld --backend %s%s\n",
               (unsigned long long)o->seed, (long long)index,
               verdict == MOES_CHECK_DIFFERENT ? "differs" : "could not run",
               msg, (unsigned long long)o->seed, (long long)index, name,
               bounds);
        fflush(stdout);
    }
    if (!progress)
        return;
    t = now_seconds();
    if (t - totals->last_progress >= 0.25) {
        fprintf(stderr, "\rcheck: %lld/%lld cases, %lld differences, %.1f s",
                (long long)totals->done, (long long)o->cases,
                (long long)(totals->differences + totals->errors), t - start);
        totals->last_progress = t;
    }
}

/* Runs case i on job's contexts and records the verdict. */
static void run_case(const check_options *o, const check_job *job,
                     check_totals *totals, int64_t i, const char *name,
                     int progress, double start)
{
    char msg[2048];
    int verdict = moes_case_check(job->ctx, job->ref,
                                  case_seed(o->seed, (uint64_t)i), -1,
                                  &o->limits, msg, sizeof msg);
#ifdef _OPENMP
#pragma omp critical(check_record)
#endif
    record(o, totals, i, verdict, msg, name, progress, start);
}

/* Whether --time, when given, has run out since start. */
static int time_is_up(const check_options *o, double start)
{
    return o->seconds > 0.0 && now_seconds() - start >= o->seconds;
}

int tool_check(int argc, char **argv)
{
    check_options o;
    check_job *jobs = NULL;
    check_totals totals = {0, 0, 0, 0.0};
    const char *ref_name = "oracle", *name;
    double start, elapsed;
    int backend = MOES_BACKEND_CPU;
    int rc, progress;

    rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (o.replay) {
        uint64_t seed;
        char label[64];
        rc = parse_replay(o.replay, &seed, label, sizeof label);
        if (rc != TOOL_EXIT_OK)
            return rc;
        rc = open_jobs(&o, 1, &jobs, &backend, &ref_name);
        if (rc == TOOL_EXIT_OK)
            rc = replay(jobs[0].ctx, jobs[0].ref, ref_name,
                        tool_backend_name(backend), seed, label, &o.limits);
        if (jobs)
            close_jobs(jobs, 1);
        return rc;
    }
    if (!o.jobs) {
#ifdef _OPENMP
        o.jobs = omp_get_max_threads();
#else
        o.jobs = 1;
#endif
    }
    if (o.jobs > o.cases)
        o.jobs = o.cases;
    rc = open_jobs(&o, o.jobs, &jobs, &backend, &ref_name);
    if (rc != TOOL_EXIT_OK)
        return rc;
    name = tool_backend_name(backend);

    /* Each job runs whole cases on its own contexts. A CPU context keeps
     * the thread count it was opened with, so it cuts the tokens into
     * the same parts as a lone run would, even when it runs inside a job
     * (where its own parallel regions get one thread). A single job runs
     * outside any parallel region, so that the backend's own threads
     * work as they do in a program. */
    progress = isatty(fileno(stderr));
    start = now_seconds();
    if (o.jobs == 1) {
        for (int64_t i = 0; i < o.cases; i++) {
            if (time_is_up(&o, start))
                break;
            run_case(&o, &jobs[0], &totals, i, name, progress, start);
        }
    } else {
        /* Cases are handed out one at a time from a shared counter, and
         * the first job to see the time run out stops them all: a loop
         * over all --cases would still walk every index after that. */
        int64_t next = 0;
        int stop = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads((int)o.jobs)
#endif
        {
            int job = 0;
#ifdef _OPENMP
            job = omp_get_thread_num();
#endif
            for (;;) {
                int64_t i;
                int stopped;
#ifdef _OPENMP
#pragma omp atomic read
#endif
                stopped = stop;
                if (stopped)
                    break;
#ifdef _OPENMP
#pragma omp atomic capture
#endif
                i = next++;
                if (i >= o.cases)
                    break;
                if (time_is_up(&o, start)) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                    stop = 1;
                    break;
                }
                run_case(&o, &jobs[job], &totals, i, name, progress, start);
            }
        }
    }
    elapsed = now_seconds() - start;
    if (progress)
        fprintf(stderr, "\r\033[K");
    printf("check: %lld cases, %lld differences", (long long)totals.done,
           (long long)totals.differences);
    if (totals.errors)
        printf(", %lld cases that could not run", (long long)totals.errors);
    printf(", backend %s vs %s, seed %llu, %.1f s\n", name, ref_name,
           (unsigned long long)o.seed, elapsed);
    close_jobs(jobs, o.jobs);
    return totals.differences + totals.errors ? TOOL_EXIT_FAILURE
                                              : TOOL_EXIT_OK;
}
