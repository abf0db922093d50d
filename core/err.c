/* core/err.c — thread-local last-error message and propagation traces. */
#include "err.h"
#include "log.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char tl_msg[1024];

const char *ih_err_name(ih_err e)
{
    switch (e) {
    case IH_OK: return "IH_OK";
    case IH_E_USAGE: return "IH_E_USAGE";
    case IH_E_DATA: return "IH_E_DATA";
    case IH_E_SYS: return "IH_E_SYS";
    case IH_E_CUDA: return "IH_E_CUDA";
    case IH_E_NET: return "IH_E_NET";
    case IH_E_REMOTE: return "IH_E_REMOTE";
    case IH_E_TIMEOUT: return "IH_E_TIMEOUT";
    case IH_E_INTERNAL: return "IH_E_INTERNAL";
    }
    return "IH_E_?";
}

ih_err ih_fail(ih_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *ih_last_error(void) { return tl_msg; }

void ih_set_last_error(const char *msg)
{
    snprintf(tl_msg, sizeof tl_msg, "%s", msg ? msg : "");
}

void ih_err_trace(ih_err e, const char *file, int line)
{
    IH_TRACE(IH_LOG_ALL, "-> %s at %s:%d", ih_err_name(e), file, line);
}

void ih_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "imagenet-1h: internal error at %s:%d: assertion `%s` failed: %s\n"
                    "  This is a bug in imagenet-1h; please report it with this message.\n",
            file, line, cond, msg);
    fflush(stderr);
    abort();
}
