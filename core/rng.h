/* core/rng.h — counter-based random numbers. Header-only, no state shared between threads.
 *
 * Every random choice in the project comes from a stream keyed by (seed, a, b), e.g.
 * (seed, epoch, sample index): the values depend only on the key, never on which thread
 * draws them or when. The stream is SplitMix64 over a key hashed from the three inputs
 * with distinct odd multipliers; SplitMix64's finalizer passes BigCrush and the keys of
 * different (seed, a, b) are independent for our purposes (shuffles, crops, init).
 */
#ifndef IH_RNG_H
#define IH_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
} ih_rng;

static inline uint64_t ih_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The stream for key (seed, a, b). Different keys give unrelated streams. */
static inline ih_rng ih_rng_make(uint64_t seed, uint64_t a, uint64_t b)
{
    ih_rng r;
    r.state = ih_mix64(ih_mix64(seed ^ 0x9e3779b97f4a7c15ull) + ih_mix64(a * 0xd1b54a32d192ed03ull + 1) +
                       ih_mix64(b * 0x8cb92ba72f3d8dd7ull + 2));
    return r;
}

static inline uint64_t ih_rng_u64(ih_rng *r)
{
    r->state += 0x9e3779b97f4a7c15ull;
    return ih_mix64(r->state);
}

/* Uniform in [0, 1) with 53 bits. */
static inline double ih_rng_uniform(ih_rng *r) { return (double)(ih_rng_u64(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0, without modulo bias (Lemire's method). */
static inline uint64_t ih_rng_below(ih_rng *r, uint64_t n)
{
    for (;;) {
        uint64_t x = ih_rng_u64(r);
        __uint128_t m = (__uint128_t)x * n;
        uint64_t lo = (uint64_t)m;
        if (lo >= n || lo >= (uint64_t)(-n) % n) return (uint64_t)(m >> 64);
    }
}

/* Standard normal (Box-Muller, one value per call). */
static inline double ih_rng_normal(ih_rng *r)
{
    double u1 = ih_rng_uniform(r), u2 = ih_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
