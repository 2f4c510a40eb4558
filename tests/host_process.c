/* SPDX-License-Identifier: MIT */
/*
 * host_process.c - the library inside a real host process, where a unit
 * test framework cannot reach: after fork(), on a small thread stack, and
 * with the thread count the environment (OMP_NUM_THREADS) asks for.
 *
 *   host_process fork          a context used with several threads, then
 *                              fork(): the child's calls must work
 *   host_process small-stack   count, scatter and gather from a thread
 *                              with a 20 KiB stack
 *   host_process threads       a context with the default thread count
 *                              (OMP_NUM_THREADS, set by host_process.test)
 *   host_process output        nothing printed unless MOES_LOG asks, then
 *                              one line a context saying its backend
 *
 * Each runs count, scatter and gather and checks their results; it exits 0
 * when they are right, 1 when not, and a call that never returns is ended
 * by an alarm (exit status 2).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moescatter.h"

enum { N = 64, K = 2, E = 8, H = 5000 }; /* H > one gather chunk */

static int fail(const char *what, moes_context *ctx)
{
    fprintf(stderr, "host_process: %s%s%s\n", what, ctx ? ": " : "",
            ctx ? moes_last_error(ctx) : "");
    return 1;
}

/* count, scatter (contiguous) and gather on ctx; 0 when every result is
 * the expected one. Buffers live on the heap: the caller's stack may be
 * small. */
static int exercise(moes_context *ctx)
{
    int32_t *ids = malloc(N * K * sizeof *ids);
    int32_t *counts = malloc(E * sizeof *counts);
    int32_t *index = malloc(N * K * sizeof *index);
    int32_t *m = malloc(N * K * sizeof *m);
    float *x = malloc((size_t)N * H * sizeof *x);
    float *out = malloc((size_t)N * K * H * sizeof *out);
    float *back = malloc((size_t)N * H * sizeof *back);
    moes_routing r;
    moes_scatter_args a;
    moes_gather_args g;
    int bad = 0;
    if (!ids || !counts || !index || !m || !x || !out || !back)
        return fail("out of memory", NULL);
    for (int i = 0; i < N * K; i++)
        ids[i] = i % E;
    for (int i = 0; i < N * H; i++)
        x[i] = (float)(i % 1000);
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.n_experts = E;
    r.ids = ids;
    if (moes_count(ctx, &r, counts, MOES_DTYPE_INT32) != MOES_OK)
        return fail("moes_count", ctx);
    for (int e = 0; e < E; e++)
        bad |= counts[e] != N * K / E;
    moes_scatter_args_init(&a);
    a.alignment = 1;
    a.capacity = N * K;
    a.x = x;
    a.x_dtype = MOES_DTYPE_FP32;
    a.hidden = H;
    a.out = out;
    a.out_index = index;
    a.m_indices = m;
    if (moes_scatter(ctx, &r, &a) != MOES_OK)
        return fail("moes_scatter", ctx);
    moes_gather_args_init(&g);
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = out;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = N * K;
    g.out_index = index;
    g.out = back;
    g.out_dtype = MOES_DTYPE_FP32;
    if (moes_gather(ctx, &g) != MOES_OK)
        return fail("moes_gather", ctx);
    /* Each token's row came back K times: K * x exactly. */
    for (int i = 0; i < N * H; i++)
        bad |= back[i] != (float)K * x[i];
    free(ids);
    free(counts);
    free(index);
    free(m);
    free(x);
    free(out);
    free(back);
    return bad ? fail("wrong results", NULL) : 0;
}

static moes_context *open_cpu(int threads)
{
    moes_context *ctx = NULL;
    moes_context_options o;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CPU;
    o.cpu_threads = threads;
    if (moes_context_create(&ctx, &o) != MOES_OK) {
        fprintf(stderr, "host_process: %s\n", moes_last_error(NULL));
        exit(1);
    }
    return ctx;
}

static int run_fork(void)
{
    moes_context *ctx = open_cpu(4);
    int status;
    pid_t child;
    if (exercise(ctx) != 0)
        return 1;
    fflush(NULL);
    child = fork();
    if (child < 0)
        return fail("fork", NULL);
    if (child == 0) {
        alarm(60);
        /* The same context, then a new one: both must work. */
        if (exercise(ctx) != 0)
            _exit(1);
        moes_context_destroy(ctx);
        ctx = open_cpu(4);
        status = exercise(ctx) != 0;
        moes_context_destroy(ctx);
        _exit(status);
    }
    if (waitpid(child, &status, 0) != child)
        return fail("waitpid", NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "host_process: the child %s %d\n",
                WIFSIGNALED(status) ? "was killed by signal" : "exited with",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        return 1;
    }
    /* And the parent goes on with its threads. */
    if (exercise(ctx) != 0)
        return 1;
    moes_context_destroy(ctx);
    return 0;
}

static moes_context *stack_ctx;
static int stack_result;

static void *on_small_stack(void *arg)
{
    (void)arg;
    stack_result = exercise(stack_ctx);
    return NULL;
}

static int run_small_stack(void)
{
    pthread_attr_t attr;
    pthread_t thread;
    size_t size = 20 * 1024;
    const char *env = getenv("MOES_TEST_STACK_BYTES");
    if (env && *env)
        size = (size_t)strtoul(env, NULL, 10);
    stack_ctx = open_cpu(2);
    if (pthread_attr_init(&attr) != 0 ||
        pthread_attr_setstacksize(&attr, size) != 0)
        return fail("a thread attribute of that stack size", NULL);
    if (pthread_create(&thread, &attr, on_small_stack, NULL) != 0)
        return fail("pthread_create", NULL);
    pthread_join(thread, NULL);
    pthread_attr_destroy(&attr);
    moes_context_destroy(stack_ctx);
    return stack_result;
}

static int run_threads(void)
{
    moes_context *ctx = open_cpu(0);
    moes_context_info info;
    int st;
    info.struct_size = sizeof info;
    if (moes_context_get_info(ctx, &info) != MOES_OK)
        return fail("moes_context_get_info", ctx);
    printf("OMP_NUM_THREADS=%s: %d threads\n",
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "(unset)",
           info.cpu_threads);
    st = exercise(ctx);
    moes_context_destroy(ctx);
    return st;
}

/* What the library writes to standard output and error while f runs
 * (both sent to one temporary file), into buf; returns f's result, or -1
 * when the output could not be caught. */
static int caught_output(int (*f)(void), char *buf, size_t cap)
{
    FILE *tmp = tmpfile();
    int saved_out, saved_err, result;
    size_t n;
    if (!tmp)
        return -1;
    fflush(NULL);
    saved_out = dup(1);
    saved_err = dup(2);
    if (saved_out < 0 || saved_err < 0 || dup2(fileno(tmp), 1) < 0 ||
        dup2(fileno(tmp), 2) < 0)
        return -1;
    result = f();
    fflush(NULL);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    rewind(tmp);
    n = fread(buf, 1, cap - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return result;
}

static int backend_of(moes_context *ctx)
{
    moes_context_info info;
    info.struct_size = sizeof info;
    return moes_context_get_info(ctx, &info) == MOES_OK ? info.backend : -1;
}

static moes_context *open_auto(void)
{
    moes_context *ctx = NULL;
    moes_context_options o;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_AUTO;
    o.cpu_threads = 2;
    if (moes_context_create(&ctx, &o) != MOES_OK)
        return NULL;
    return ctx;
}

/* An AUTO context and a CPU one, each used for good calls, a call with a
 * bad argument and one with a bad id; 0 when each did what it should. */
static int two_contexts(void)
{
    moes_context *ctxs[2] = {open_auto(), open_cpu(2)};
    const int32_t bad_ids[2] = {0, 99};
    int32_t counts[E];
    moes_routing r;
    int bad = 0;
    if (!ctxs[0])
        return 1;
    for (int i = 0; i < 2; i++) {
        moes_context *ctx = ctxs[i];
        /* The buffers here are host memory: a CUDA context (AUTO on a
         * machine with a GPU) gets the NULL routing only. */
        const int on_cpu = backend_of(ctx) == MOES_BACKEND_CPU;
        if (on_cpu && exercise(ctx) != 0)
            bad = 1;
        bad |= moes_count(ctx, NULL, counts, MOES_DTYPE_INT32) !=
               MOES_ERR_NULL_POINTER;
        moes_routing_init(&r);
        r.n_tokens = 1;
        r.top_k = 2;
        r.n_experts = E;
        r.ids = bad_ids;
        if (on_cpu)
            bad |= moes_count(ctx, &r, counts, MOES_DTYPE_INT32) !=
                   MOES_ERR_INVALID_ID;
        moes_context_destroy(ctx);
    }
    return bad;
}

static int run_output(void)
{
    static const char prefix[] = "moescatter: backend ";
    static char out[4096];
    int lines = 0;
    const char *settings[] = {NULL, "", "0"};
    for (int i = 0; i < 3; i++) {
        if (settings[i])
            setenv("MOES_LOG", settings[i], 1);
        else
            unsetenv("MOES_LOG");
        if (caught_output(two_contexts, out, sizeof out) != 0)
            return fail("calls without MOES_LOG", NULL);
        if (out[0]) {
            fprintf(stderr, "host_process: printed with MOES_LOG=%s:\n%s",
                    settings[i] ? settings[i] : "(unset)", out);
            return 1;
        }
    }
    setenv("MOES_LOG", "1", 1);
    if (caught_output(two_contexts, out, sizeof out) != 0)
        return fail("calls with MOES_LOG=1", NULL);
    unsetenv("MOES_LOG");
    printf("MOES_LOG=1:\n%s", out);
    for (const char *line = out; *line; lines++) {
        const char *end = strchr(line, '\n');
        if (!end || strncmp(line, prefix, sizeof prefix - 1) != 0)
            return fail("MOES_LOG=1 printed a line that is not a backend's",
                        NULL);
        line = end + 1;
    }
    if (lines != 2)
        return fail("MOES_LOG=1 did not print one line a context", NULL);
    return 0;
}

static void on_alarm(int sig)
{
    static const char msg[] = "host_process: a call did not return\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to say */
    }
    _exit(2);
}

int main(int argc, char **argv)
{
    signal(SIGALRM, on_alarm);
    alarm(120);
    if (argc == 2 && strcmp(argv[1], "fork") == 0)
        return run_fork();
    if (argc == 2 && strcmp(argv[1], "small-stack") == 0)
        return run_small_stack();
    if (argc == 2 && strcmp(argv[1], "threads") == 0)
        return run_threads();
    if (argc == 2 && strcmp(argv[1], "output") == 0)
        return run_output();
    fprintf(stderr,
            "usage: host_process fork | small-stack | threads | output\n");
    return 2;
}
