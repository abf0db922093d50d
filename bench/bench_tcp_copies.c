/* bench/bench_tcp_copies.c — can a loopback TCP transfer copy less than send()/recv()?
 *
 * Two processes joined by one TCP connection over 127.0.0.1 each send S bytes and receive S
 * bytes at the same time (full duplex, one thread each, poll-driven like a fabric rank: the
 * shape of a 2-rank allreduce's traffic). Two ways to send, timed in the same run:
 *   send    plain send(): the kernel copies the bytes into the socket, the receiver copies
 *           them out again (two copies per byte);
 *   splice  vmsplice() of the user pages into a pipe, then splice() into the socket: the
 *           socket holds references to the sender's pages and only the receiver copies (one
 *           copy per byte). The source must then stay unchanged until the peer has read it.
 * Rounds alternate the two modes (so load hurts both alike); the table has medians over R
 * and the ratio splice / send. This is the experiment behind bench/README.md ("Why 2 ranks
 * at 32 MiB cannot reach 1.3x here").
 *
 *   bench_tcp_copies [--mib S] [--iters R] [--pipe-kib P]      (defaults 32, 21, 1024)
 * Last line: RESULT bytes=... send_GBps=... splice_GBps=... ratio=...
 * (GB/s = bytes moved in one direction / time / 1e9.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MODE_SEND = 0, MODE_SPLICE = 1 };

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_tcp_copies: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int again(ssize_t n) { return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR); }

/* Sends sb[0..S) and receives S bytes into rb at the same time. */
static void duplex(int fd, const int pipefd[2], size_t pipe_bytes, char *sb, char *rb, size_t S, int mode)
{
    size_t sent = 0, inpipe = 0, recvd = 0;
    while (sent < S || recvd < S) {
        struct pollfd pf = {.fd = fd, .events = (short)((sent < S ? POLLOUT : 0) | (recvd < S ? POLLIN : 0))};
        if (poll(&pf, 1, 60000) <= 0) die("poll (no progress for 60 s)");
        if (recvd < S) {
            ssize_t n = recv(fd, rb + recvd, S - recvd, MSG_DONTWAIT);
            if (n == 0) { fprintf(stderr, "bench_tcp_copies: peer closed\n"); exit(1); }
            if (n > 0) recvd += (size_t)n;
            else if (!again(n)) die("recv");
        }
        if (sent >= S) continue;
        if (mode == MODE_SEND) {
            ssize_t n = send(fd, sb + sent, S - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) sent += (size_t)n;
            else if (!again(n)) die("send");
            continue;
        }
        size_t off = sent + inpipe;
        if (off < S && inpipe < pipe_bytes) {
            size_t want = pipe_bytes - inpipe < S - off ? pipe_bytes - inpipe : S - off;
            struct iovec iv = {.iov_base = sb + off, .iov_len = want};
            ssize_t n = vmsplice(pipefd[1], &iv, 1, SPLICE_F_NONBLOCK);
            if (n > 0) inpipe += (size_t)n;
            else if (!again(n)) die("vmsplice");
        }
        if (inpipe) {
            ssize_t n = splice(pipefd[0], NULL, fd, NULL, inpipe, SPLICE_F_NONBLOCK | SPLICE_F_MORE);
            if (n > 0) { inpipe -= (size_t)n; sent += (size_t)n; }
            else if (!again(n)) die("splice");
        }
    }
}

int main(int argc, char **argv)
{
    size_t mib = 32, pipe_kib = 1024;
    int iters = 21;
    static const struct option lo[] = {{"mib", required_argument, 0, 'm'}, {"iters", required_argument, 0, 'r'},
                                       {"pipe-kib", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    for (int ch; (ch = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        if (ch == 'm') mib = strtoul(optarg, NULL, 10);
        else if (ch == 'r') iters = atoi(optarg);
        else if (ch == 'p') pipe_kib = strtoul(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: bench_tcp_copies [--mib S] [--iters R] [--pipe-kib P]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (mib < 1 || mib > 4096 || iters < 1 || iters > 1000 || pipe_kib < 4) {
        fprintf(stderr, "bench_tcp_copies: --mib 1..4096, --iters 1..1000, --pipe-kib >= 4\n");
        return 2;
    }
    size_t S = mib << 20;

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&a, &al))
        die("listen on 127.0.0.1");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    int fd;
    if (pid == 0) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) die("connect");
    } else if ((fd = accept(ls, NULL, NULL)) < 0) {
        die("accept");
    }
    close(ls);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int pipefd[2];
    if (pipe(pipefd)) die("pipe");
    int got = fcntl(pipefd[0], F_SETPIPE_SZ, (int)(pipe_kib << 10));
    size_t pipe_bytes = got > 0 ? (size_t)got : 65536;
    char *sb = aligned_alloc(4096, S), *rb = aligned_alloc(4096, S);
    double *t = malloc(sizeof(double) * 2 * (size_t)iters);
    if (!sb || !rb || !t) die("out of memory");
    memset(sb, 1, S);
    memset(rb, 0, S);
    if (fcntl(fd, F_SETFL, O_NONBLOCK)) die("fcntl");

    for (int r = 0; r < 2 * iters; r++) {
        /* start together: a one-byte token both ways */
        char c = 1;
        duplex(fd, pipefd, pipe_bytes, &c, &c, 1, MODE_SEND);
        double t0 = now_s();
        duplex(fd, pipefd, pipe_bytes, sb, rb, S, r % 2 ? MODE_SPLICE : MODE_SEND);
        t[(r % 2) * iters + r / 2] = now_s() - t0;
        /* the splice source must not change before the peer read it: it never changes here */
    }
    if (pid == 0) return 0;
    int st = 0;
    waitpid(pid, &st, 0);
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    qsort(t + iters, (size_t)iters, sizeof(double), cmp_double);
    double ms[2] = {t[iters / 2] * 1e3, t[iters + iters / 2] * 1e3};
    double gbps[2] = {(double)S / (ms[0] * 1e-3) / 1e9, (double)S / (ms[1] * 1e-3) / 1e9};
    printf("# bench_tcp_copies: 2 processes, one TCP connection on 127.0.0.1, both send and receive %zu MiB at once;\n"
           "# median of %d rounds per mode, modes interleaved; GB/s per direction; pipe %zu KiB\n",
           mib, iters, pipe_bytes >> 10);
    printf("%-8s %12s %12s %10s\n", "mode", "time(ms)", "GB/s/dir", "vs send");
    printf("%-8s %12.2f %12.3f %10.2f\n", "send", ms[0], gbps[0], 1.0);
    printf("%-8s %12.2f %12.3f %10.2f\n", "splice", ms[1], gbps[1], gbps[1] / gbps[0]);
    printf("RESULT bytes=%zu send_GBps=%.3f splice_GBps=%.3f ratio=%.3f\n", S, gbps[0], gbps[1], gbps[1] / gbps[0]);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
