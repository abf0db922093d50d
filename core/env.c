/* core/env.c — see env.h. */
#include "env.h"

#include <stdlib.h>

#include "log.h"

long ih_env_long(const char *name, long dflt, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        IH_WARN("ignoring %s='%s': not an integer in [%ld, %ld]; using %ld", name, v, lo, hi, dflt);
        return dflt;
    }
    return x;
}

double ih_env_pos_double(const char *name, double dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = NULL;
    double x = strtod(v, &end);
    if (*end || !(x > 0)) {
        IH_WARN("ignoring %s='%s': not a positive number; using %g", name, v, dflt);
        return dflt;
    }
    return x;
}
