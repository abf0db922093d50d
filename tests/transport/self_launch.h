/* tests/transport/self_launch.h — for tests that run themselves through the local launcher
 * (without RANK in the environment the program is the launcher, with RANK a rank; the mode and
 * an output folder come in IH_TEST_MODE / IH_TEST_OUT): the rank that is to die, and each
 * rank's final word in OUT/rankN.txt ("ok" or its error message). Header-only. */
#ifndef IH_TESTS_TRANSPORT_SELF_LAUNCH_H
#define IH_TESTS_TRANSPORT_SELF_LAUNCH_H

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

/* Thread body: SIGKILLs this process 400 ms after it starts (mid-collective). */
static void *sl_killer(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 400000000L};
    nanosleep(&ts, NULL);
    raise(SIGKILL);
    return NULL;
}

/* Rank side: OUT/rankN.txt := "ok", or the last error's message when e != IH_OK. */
static void sl_write_result(const char *out, int rank, ih_err e)
{
    char path[512];
    snprintf(path, sizeof path, "%s/rank%d.txt", out, rank);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%s", e ? ih_last_error() : "ok");
        fclose(f);
    }
}

/* Launcher side: rank r's result into buf ("" when it wrote none), and the file removed. */
static void sl_read_result(const char *dir, int r, char *buf, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/rank%d.txt", dir, r);
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(path);
}

#endif
