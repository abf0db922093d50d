/* core/thread.c — see thread.h. */
#define _GNU_SOURCE
#include "thread.h"

#include <string.h>

ih_err ih_thread_start(pthread_t *out, const char *name, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(out, NULL, fn, arg);
    if (rc) return ih_fail(IH_E_SYS, "pthread_create(%s): %s", name, strerror(rc));
    char nm[16];
    strncpy(nm, name, sizeof nm - 1);
    nm[15] = 0;
    pthread_setname_np(*out, nm);
    return IH_OK;
}
