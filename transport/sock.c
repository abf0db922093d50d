/* transport/sock.c — see sock.h. Plain BSD sockets; every blocking step goes through poll()
 * with the remaining time to the caller's deadline. */
#define _GNU_SOURCE
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

static int remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = ih_now_ns();
    if (now >= deadline_ns) return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > 1000000 ? 1000000 : (int)ms;
}

ih_err comm_sock_set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return ih_fail(IH_E_NET, "fcntl(F_GETFL): %s", strerror(errno));
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, fl) < 0) return ih_fail(IH_E_NET, "fcntl(F_SETFL): %s", strerror(errno));
    return IH_OK;
}

void comm_sock_tune(int fd, int bufbytes)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bufbytes > 0) {
        /* SO_*BUFFORCE passes net.core.[rw]mem_max when we have CAP_NET_ADMIN; else the
         * plain option is capped by the sysctl, which is still better than the default. */
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufbytes, sizeof bufbytes) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufbytes, sizeof bufbytes);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufbytes, sizeof bufbytes) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufbytes, sizeof bufbytes);
    }
}

static ih_err resolve(const char *host, int port, int passive, struct addrinfo **out)
{
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, ps, &hints, out);
    if (rc) return ih_fail(IH_E_NET, "cannot resolve host '%s': %s", host ? host : "", gai_strerror(rc));
    return IH_OK;
}

ih_err comm_sock_listen(int *fd, const char *host, int port, int backlog, int bufbytes,
                        int *bound_port)
{
    struct addrinfo *ai = NULL;
    IH_TRY(resolve(host, port, 1, &ai));
    int s = -1, err = 0;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        s = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
        if (s < 0) { err = errno; continue; }
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        comm_sock_tune(s, bufbytes);
        if (bind(s, p->ai_addr, p->ai_addrlen) == 0 && listen(s, backlog) == 0) break;
        err = errno;
        close(s);
        s = -1;
    }
    freeaddrinfo(ai);
    if (s < 0)
        return ih_fail(IH_E_NET, "cannot listen on %s:%d: %s (port in use? pick another MASTER_PORT)",
                       host && *host ? host : "*", port, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(s, (struct sockaddr *)&ss, &sl);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *fd = s;
    return IH_OK;
}

ih_err comm_sock_connect(int *fd, const char *host, int port, int bufbytes, uint64_t deadline_ns,
                         const char *what)
{
    int err = 0;
    for (;;) {
        struct addrinfo *ai = NULL;
        IH_TRY(resolve(host, port, 0, &ai));
        for (struct addrinfo *p = ai; p; p = p->ai_next) {
            int s = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
            if (s < 0) { err = errno; continue; }
            comm_sock_tune(s, bufbytes);
            if (connect(s, p->ai_addr, p->ai_addrlen) == 0) {
                freeaddrinfo(ai);
                *fd = s;
                return IH_OK;
            }
            err = errno;
            close(s);
        }
        freeaddrinfo(ai);
        if (ih_now_ns() >= deadline_ns) break;
        struct timespec ts = {0, 20 * 1000000L}; /* the listener may not be up yet */
        nanosleep(&ts, NULL);
    }
    return ih_fail(IH_E_TIMEOUT, "cannot connect to %s at %s:%d before the timeout: %s "
                   "(is it running? check MASTER_ADDR/MASTER_PORT and IH_COMM_TIMEOUT_S)",
                   what, host, port, strerror(err));
}

ih_err comm_sock_accept(int lfd, int *fd, uint64_t deadline_ns, const char *what)
{
    for (;;) {
        struct pollfd pf = {.fd = lfd, .events = POLLIN};
        int ms = remaining_ms(deadline_ns);
        int rc = poll(&pf, 1, ms);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return ih_fail(IH_E_NET, "poll(accept %s): %s", what, strerror(errno));
        if (rc == 0) return ih_fail(IH_E_TIMEOUT, "timed out waiting for %s to connect", what);
        int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (s >= 0) { *fd = s; return IH_OK; }
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            return ih_fail(IH_E_NET, "accept(%s): %s", what, strerror(errno));
    }
}

ih_err comm_sock_write_all(int fd, const void *buf, size_t len, uint64_t deadline_ns, const char *what)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) { p += n; len -= (size_t)n; continue; }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return ih_fail(errno == EPIPE || errno == ECONNRESET ? IH_E_REMOTE : IH_E_NET,
                           "sending to %s: %s", what, strerror(errno));
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int rc = poll(&pf, 1, remaining_ms(deadline_ns));
        if (rc == 0) return ih_fail(IH_E_TIMEOUT, "timed out sending to %s", what);
    }
    return IH_OK;
}

ih_err comm_sock_read_all(int fd, void *buf, size_t len, uint64_t deadline_ns, const char *what)
{
    char *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
        if (n > 0) { p += n; len -= (size_t)n; continue; }
        if (n == 0) return ih_fail(IH_E_REMOTE, "%s closed the connection", what);
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return ih_fail(errno == ECONNRESET ? IH_E_REMOTE : IH_E_NET, "receiving from %s: %s",
                           what, strerror(errno));
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int rc = poll(&pf, 1, remaining_ms(deadline_ns));
        if (rc == 0) return ih_fail(IH_E_TIMEOUT, "timed out waiting for %s", what);
    }
    return IH_OK;
}

void comm_sock_local_addr(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    snprintf(out, cap, "127.0.0.1");
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)cap);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)cap);
}
