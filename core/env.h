/* core/env.h — tuning knobs from the environment (IH_COMM_CHUNK_KB, IH_IB_SLOTS, ...): unset or
 * empty gives the default; a value that does not parse or is out of range is ignored with a
 * warning naming the variable, the value, the range and the default used instead. */
#ifndef CORE_ENV_H
#define CORE_ENV_H

/* A decimal integer in [lo, hi], else dflt. */
long ih_env_long(const char *name, long dflt, long lo, long hi);
/* A number > 0, else dflt. */
double ih_env_pos_double(const char *name, double dflt);

#endif
