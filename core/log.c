/* core/log.c — see log.h. Configuration is read once from the environment. */
#define _GNU_SOURCE
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_level = IH_LEVEL_WARN;
static int g_subsys = IH_LOG_ALL;
static FILE *g_out;
static char g_host[64];
static int g_rank; /* written once at start-up, before threads */

static const struct { const char *name; int bit; } k_subsys[] = {
    {"PIPE", IH_LOG_PIPE}, {"MODEL", IH_LOG_MODEL}, {"OPTIM", IH_LOG_OPTIM},
    {"COMM", IH_LOG_COMM}, {"NET", IH_LOG_NET},     {"BOOT", IH_LOG_BOOT},
    {"CKPT", IH_LOG_CKPT}, {"TRAIN", IH_LOG_TRAIN},
};

static void log_init(void)
{
    const char *lv = getenv("IH_DEBUG");
    if (lv) {
        if (!strcasecmp(lv, "INFO")) g_level = IH_LEVEL_INFO;
        else if (!strcasecmp(lv, "TRACE")) g_level = IH_LEVEL_TRACE;
    }
    const char *ss = getenv("IH_DEBUG_SUBSYS");
    if (ss && *ss) {
        g_subsys = 0;
        for (size_t i = 0; i < sizeof k_subsys / sizeof k_subsys[0]; i++)
            if (strcasestr(ss, k_subsys[i].name)) g_subsys |= k_subsys[i].bit;
    }
    gethostname(g_host, sizeof g_host - 1);
    g_out = stderr;
    const char *f = getenv("IH_DEBUG_FILE");
    if (f && *f) {
        char path[512];
        size_t o = 0;
        for (const char *p = f; *p && o + 32 < sizeof path; p++) {
            if (p[0] == '%' && p[1] == 'h') { o += (size_t)snprintf(path + o, sizeof path - o, "%s", g_host); p++; }
            else if (p[0] == '%' && p[1] == 'p') { o += (size_t)snprintf(path + o, sizeof path - o, "%d", (int)getpid()); p++; }
            else path[o++] = *p;
        }
        path[o] = 0;
        FILE *fp = fopen(path, "a");
        if (fp) g_out = fp;
    }
}

void ih_log_set_rank(int rank) { g_rank = rank; }
int ih_log_rank(void) { return g_rank; }

int ih_log_enabled(int level, int subsys)
{
    pthread_once(&g_once, log_init);
    return level <= g_level && (subsys & g_subsys);
}

static const char *subsys_name(int s)
{
    for (size_t i = 0; i < sizeof k_subsys / sizeof k_subsys[0]; i++)
        if (s == k_subsys[i].bit) return k_subsys[i].name;
    return "ALL";
}

void ih_log_write(int level, int subsys, const char *file, int line, const char *fmt, ...)
{
    pthread_once(&g_once, log_init);
    if (level > g_level) return;
    char msg[2048];
    int o = snprintf(msg, sizeof msg, "%s:%d:%ld r%d %s %s ", g_host, (int)getpid(),
                     (long)syscall(SYS_gettid), g_rank,
                     level == IH_LEVEL_WARN ? "WARN" : level == IH_LEVEL_INFO ? "INFO" : "TRACE",
                     subsys_name(subsys));
    if (level == IH_LEVEL_WARN && o > 0 && (size_t)o < sizeof msg)
        o += snprintf(msg + o, sizeof msg - (size_t)o, "%s:%d ", file, line);
    if (o > 0 && (size_t)o < sizeof msg) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + o, sizeof msg - (size_t)o, fmt, ap);
        va_end(ap);
    }
    fprintf(g_out, "%s\n", msg); /* one fprintf: stdio locks the stream, lines do not interleave */
    fflush(g_out);
}

void ih_print0(const char *fmt, ...)
{
    if (g_rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
}
