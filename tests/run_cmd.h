/* tests/run_cmd.h — run a shell command from a test, capture its output, get its exit code
 * (header-only). Paths of built programs come from IH_BINARY_DIR, set by ctest. */
#ifndef IH_TESTS_RUN_CMD_H
#define IH_TESTS_RUN_CMD_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs `sh -c CMD 2>&1`, stores up to cap-1 bytes of output in out (NUL-terminated) and
 * returns the exit status (128+signal if killed, -1 if it could not run). */
static inline int run_cmd(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 8, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd - 8) return -1;
    strcat(cmd, " 2>&1");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = 0;
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
        if (out && len + 1 < cap) {
            size_t k = r < cap - 1 - len ? r : cap - 1 - len;
            memcpy(out + len, buf, k);
            len += k;
        }
    }
    if (out && cap) out[len] = 0;
    int st = pclose(p);
    if (st == -1) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

/* Reads a whole file into a malloc'd buffer (*buf, owned by the caller; NUL-terminated one
 * byte past the end). Returns its size, or -1 if it cannot be read. */
static inline long read_file(const char *path, unsigned char **buf)
{
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!*buf || fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        free(*buf);
        *buf = NULL;
        n = -1;
    } else {
        (*buf)[n] = 0;
    }
    fclose(f);
    return n;
}

/* A TCP port for a test's rendezvous store: below the kernel's ephemeral range (read from
 * /proc; 32768+ by default: outgoing connections of parallel tests take their local ports
 * there), spread by pid
 * and attempt, and bindable on 127.0.0.1 right now. A later bind can still lose a race, so a
 * test that starts a store on it retries with attempt+1 when it sees "Address already in use". */
static inline int free_port(int attempt)
{
    int eph = 32768; /* the kernel's default ephemeral range starts here */
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d", &eph) != 1) eph = 32768;
        fclose(f);
    }
    const unsigned lo = eph > 12000 ? 10000u : 1100u, span = (unsigned)eph > lo + 1000 ? (unsigned)eph - lo : 1000u;
    for (int i = 0; i < 64; i++) {
        int port = (int)(lo + ((unsigned)getpid() * 7919u + (unsigned)(attempt * 64 + i) * 104729u) % span);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) return port;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)port);
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return port;
    }
    return (int)(lo + (unsigned)getpid() % span);
}

static inline const char *bin_dir(void)
{
    const char *b = getenv("IH_BINARY_DIR");
    return b && *b ? b : ".";
}

#endif
