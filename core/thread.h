/* core/thread.h — named long-lived threads. */
#ifndef IH_THREAD_H
#define IH_THREAD_H

#include <pthread.h>

#include "err.h"

/* Starts `fn(arg)` on a new thread named `name` (at most 15 chars shown, e.g. "ih-decode-07").
 * IH_E_SYS if the thread cannot be created. Any thread may call it. */
ih_err ih_thread_start(pthread_t *out, const char *name, void *(*fn)(void *), void *arg);

#endif
