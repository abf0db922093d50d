/* tools/make_synthetic — writes a small, learnable image-classification dataset as real JPEG
 * files: OUT/train/<class>/NNNNN.jpg and OUT/val/<class>/NNNNN.jpg.
 *
 * Ten classes, each a shape or texture with a class-typical colour (jittered): circle,
 * square, triangle, cross, ring, horizontal stripes, vertical stripes, checker, diagonal
 * stripes, dot grid. The figure is large (radius 30-42% of the shorter side) and roughly
 * centered so it survives a RandomResizedCrop of scale >= 0.35; background colour, noise,
 * image size (40..96 px per side) and aspect vary. Every image is a pure function of
 * (--seed, split, class, index), so reruns give identical files.
 *
 *   make_synthetic --out data/synth --train-per-class 500 --val-per-class 100 --seed 1
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#include "core/clock.h"
#include "core/rng.h"

enum { MAX_CLASSES = 10, MIN_SIDE = 40, MAX_SIDE = 96 };

static const char *const k_names[MAX_CLASSES] = {
    "00_circle", "01_square", "02_triangle", "03_cross", "04_ring",
    "05_hstripes", "06_vstripes", "07_checker", "08_diagonal", "09_dots",
};
static const int k_colour[MAX_CLASSES][3] = {
    {220, 50, 50}, {50, 200, 60}, {60, 90, 230}, {230, 220, 50}, {220, 60, 220},
    {50, 210, 220}, {240, 140, 30}, {140, 70, 200}, {235, 235, 235}, {150, 100, 50},
};

static int clamp255(double v) { return v < 0 ? 0 : v > 255 ? 255 : (int)(v + 0.5); }

/* 1 when (dx, dy) relative to the figure centre is foreground for class c with radius r
 * and texture period p. */
static int inside(int c, double dx, double dy, double r, double p)
{
    double ax = fabs(dx), ay = fabs(dy), d = sqrt(dx * dx + dy * dy);
    int sq = ax < r && ay < r;
    switch (c) {
    case 0: return d < r;
    case 1: return ax < 0.85 * r && ay < 0.85 * r;
    case 2: return dy > -r && dy < r && ax < 0.5 * (dy + r) * 1.05;
    case 3: return (ax < 0.3 * r && ay < r) || (ay < 0.3 * r && ax < r);
    case 4: return d < r && d > 0.55 * r;
    case 5: return sq && ((int)floor((dy + r) / p) % 2 == 0);
    case 6: return sq && ((int)floor((dx + r) / p) % 2 == 0);
    case 7: return sq && (((int)floor((dx + r) / p) + (int)floor((dy + r) / p)) % 2 == 0);
    case 8: return sq && ((int)floor((dx + dy + 4 * r) / p) % 2 == 0);
    case 9: {
        double gx = fmod(dx + 4 * r, p) - p / 2, gy = fmod(dy + 4 * r, p) - p / 2;
        return sq && gx * gx + gy * gy < (0.32 * p) * (0.32 * p);
    }
    }
    return 0;
}

static void render(uint64_t seed, int split, int c, int idx, uint8_t *img, int *wp, int *hp)
{
    ih_rng r = ih_rng_make(seed, (uint64_t)(split * 1000 + c), (uint64_t)idx);
    int W = MIN_SIDE + (int)ih_rng_below(&r, MAX_SIDE - MIN_SIDE + 1);
    int H = MIN_SIDE + (int)ih_rng_below(&r, MAX_SIDE - MIN_SIDE + 1);
    int s = W < H ? W : H;
    double bg[3], fg[3], grad[2];
    for (int k = 0; k < 3; k++) bg[k] = 25 + 90 * ih_rng_uniform(&r);
    for (int k = 0; k < 3; k++) fg[k] = k_colour[c][k] + 60 * (ih_rng_uniform(&r) - 0.5);
    grad[0] = 30 * (ih_rng_uniform(&r) - 0.5);
    grad[1] = 30 * (ih_rng_uniform(&r) - 0.5);
    double rad = s * (0.30 + 0.12 * ih_rng_uniform(&r));
    double cx = W / 2.0 + (W - 2 * rad) * 0.45 * (ih_rng_uniform(&r) - 0.5);
    double cy = H / 2.0 + (H - 2 * rad) * 0.45 * (ih_rng_uniform(&r) - 0.5);
    double period = rad * (0.38 + 0.2 * ih_rng_uniform(&r));
    double noise = 6 + 10 * ih_rng_uniform(&r);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            /* 2x2 supersampling for soft edges */
            int hits = 0;
            for (int sy = 0; sy < 2; sy++)
                for (int sx = 0; sx < 2; sx++)
                    hits += inside(c, x + 0.25 + 0.5 * sx - cx, y + 0.25 + 0.5 * sy - cy, rad, period);
            double a = hits / 4.0;
            double g = grad[0] * (x / (double)W - 0.5) + grad[1] * (y / (double)H - 0.5);
            /* Noise: per channel a triangular variate (sum of two 8-bit uniforms, sd 1) from
             * one 64-bit draw per pixel; a Gaussian per channel costs 3x the whole render. */
            uint64_t u = ih_rng_u64(&r);
            for (int k = 0; k < 3; k++) {
                double tri = ((double)((u >> (16 * k)) & 255) + (double)((u >> (16 * k + 8)) & 255) - 255.0) / 104.4;
                double v = (1 - a) * (bg[k] + g) + a * fg[k] + noise * tri;
                img[(y * W + x) * 3 + k] = (uint8_t)clamp255(v);
            }
        }
    *wp = W;
    *hp = H;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0775) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0775) && errno != EEXIST) return -1;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: make_synthetic --out DIR [options]\n"
            "Writes DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (procedural shapes/textures).\n"
            "  --out DIR               output folder (created)\n"
            "  --train-per-class N     training images per class (default 500)\n"
            "  --val-per-class M       validation images per class (default 100)\n"
            "  --classes C             number of classes, 1..10 (default 10)\n"
            "  --seed S                dataset seed (default 1)\n"
            "  --quality Q             JPEG quality 1..100 (default 90)\n"
            "  --help                  this text\n");
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    long ntrain = 500, nval = 100, nclasses = 10, quality = 90;
    unsigned long long seed = 1;
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},        {"train-per-class", required_argument, 0, 't'},
        {"val-per-class", required_argument, 0, 'v'}, {"classes", required_argument, 0, 'c'},
        {"seed", required_argument, 0, 's'},       {"quality", required_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    int o;
    char *end;
    while ((o = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        errno = 0;
        end = NULL;
        switch (o) {
        case 'o': out = optarg; break;
        case 't': ntrain = strtol(optarg, &end, 10); break;
        case 'v': nval = strtol(optarg, &end, 10); break;
        case 'c': nclasses = strtol(optarg, &end, 10); break;
        case 's': seed = strtoull(optarg, &end, 10); break;
        case 'q': quality = strtol(optarg, &end, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (end && (*end || errno)) {
            fprintf(stderr, "make_synthetic: bad number '%s'\n", optarg);
            return 2;
        }
    }
    if (!out || optind != argc) {
        fprintf(stderr, "make_synthetic: %s\n", out ? "unexpected argument" : "--out DIR is required");
        usage(stderr);
        return 2;
    }
    if (ntrain < 0 || nval < 0 || nclasses < 1 || nclasses > MAX_CLASSES || quality < 1 || quality > 100) {
        fprintf(stderr, "make_synthetic: need counts >= 0, 1 <= --classes <= %d, 1 <= --quality <= 100\n", MAX_CLASSES);
        return 2;
    }
    tjhandle tj = tjInitCompress();
    if (!tj) {
        fprintf(stderr, "make_synthetic: tjInitCompress: %s\n", tjGetErrorStr2(NULL));
        return 1;
    }
    uint8_t *img = malloc(MAX_SIDE * MAX_SIDE * 3);
    unsigned char *jpg = NULL;
    unsigned long jsize = 0;
    double t0 = ih_now_s();
    long written = 0;
    unsigned long long bytes = 0;
    int rc = 0;
    static const char *const splits[2] = {"train", "val"};
    for (int sp = 0; sp < 2 && !rc; sp++) {
        long n = sp == 0 ? ntrain : nval;
        for (int c = 0; c < nclasses && !rc; c++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/%s/%s", out, splits[sp], k_names[c]);
            if (n > 0 && mkdir_p(dir)) {
                fprintf(stderr, "make_synthetic: cannot create %s: %s\n", dir, strerror(errno));
                rc = 1;
                break;
            }
            for (long i = 0; i < n; i++) {
                int W, H;
                render(seed, sp, c, (int)i, img, &W, &H);
                if (tjCompress2(tj, img, W, 0, H, TJPF_RGB, &jpg, &jsize, TJSAMP_420, (int)quality, 0)) {
                    fprintf(stderr, "make_synthetic: tjCompress2: %s\n", tjGetErrorStr2(tj));
                    rc = 1;
                    break;
                }
                char path[4200];
                snprintf(path, sizeof path, "%s/%05ld.jpg", dir, i);
                FILE *f = fopen(path, "wb");
                if (!f || fwrite(jpg, 1, jsize, f) != jsize || fclose(f)) {
                    fprintf(stderr, "make_synthetic: cannot write %s: %s\n", path, strerror(errno));
                    rc = 1;
                    break;
                }
                written++;
                bytes += jsize;
            }
        }
    }
    tjFree(jpg);
    tjDestroy(tj);
    free(img);
    if (!rc)
        printf("make_synthetic: wrote %ld images (%.1f MB) of %ld classes to %s in %.2f s\n", written, bytes / 1e6,
               nclasses, out, ih_now_s() - t0);
    return rc;
}
