/* SPDX-License-Identifier: MIT */
/*
 * fuzz_replay.c - runs a fuzz target's LLVMFuzzerTestOneInput on files,
 * without libFuzzer, so the seed corpus and the regressions are a plain
 * test built by any compiler.
 *
 * Usage: PROGRAM [FILE | DIRECTORY]...
 * A directory stands for every regular file in it, in name order. With no
 * argument, the directories named by FUZZ_REPLAY_DIRS (compiled in, and
 * separated by ':') are used. A finding aborts, as under libFuzzer; the
 * name of the file being run is printed first so the failing input is
 * known. Prints how many files ran.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long files_run;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, n;
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    for (;;) {
        if (len == cap) {
            uint8_t *p = realloc(buf, cap ? 2 * cap : 4096);
            if (!p) {
                fclose(f);
                free(buf);
                fprintf(stderr, "%s: out of memory\n", path);
                return 1;
            }
            buf = p;
            cap = cap ? 2 * cap : 4096;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    fprintf(stderr, "running %s (%zu bytes)\n", path, len);
    /* An exact-size copy, so that a read past the input is caught. */
    {
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
            free(buf);
            return 1;
        }
        memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    files_run++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_path(const char *path)
{
    struct stat st;
    DIR *dir;
    struct dirent *ent;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int failed = 0;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    if (!(dir = opendir(path))) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    while ((ent = readdir(dir)) != NULL) {
        char *full;
        struct stat fst;
        if (ent->d_name[0] == '.')
            continue;
        full = malloc(strlen(path) + strlen(ent->d_name) + 2);
        if (!full)
            break;
        sprintf(full, "%s/%s", path, ent->d_name);
        if (stat(full, &fst) != 0 || !S_ISREG(fst.st_mode)) {
            free(full);
            continue;
        }
        if (n == cap) {
            char **p = realloc(names, (cap ? 2 * cap : 64) * sizeof *p);
            if (!p) {
                free(full);
                break;
            }
            names = p;
            cap = cap ? 2 * cap : 64;
        }
        names[n++] = full;
    }
    closedir(dir);
    if (n)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        failed |= run_file(names[i]);
        free(names[i]);
    }
    free(names);
    return failed;
}

int main(int argc, char **argv)
{
    int failed = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            failed |= run_path(argv[i]);
    } else {
#ifdef FUZZ_REPLAY_DIRS
        char *dirs = strdup(FUZZ_REPLAY_DIRS), *save = NULL, *d;
        for (d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save))
            failed |= run_path(d);
        free(dirs);
#else
        fprintf(stderr, "usage: %s FILE|DIRECTORY...\n", argv[0]);
        return 2;
#endif
    }
    printf("%s: %ld files run, %s\n", argv[0], files_run,
           failed ? "some could not be read" : "no finding");
    return failed;
}
