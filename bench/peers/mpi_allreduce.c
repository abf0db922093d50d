/* bench/peers/mpi_allreduce.c — MPI_Allreduce(MPI_IN_PLACE, float, SUM) timed exactly like
 * bench_allreduce (verify once with integer-valued floats, warm up, barrier before every
 * repeat, slowest rank's time, median of R), for side-by-side runs (bench/README.md):
 *
 *   mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl tcp,self \
 *     --mca btl_tcp_if_include lo --mca pml ob1 \
 *     [--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm A] \
 *     build-comm/bench/bench_mpi_allreduce 100M [R]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int r, k;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &k);
    double mb = argc > 1 ? atof(argv[1]) : 100;
    const char *suf = argc > 1 ? argv[1] + strspn(argv[1], "0123456789.") : "M";
    /* "32M", "4K", or a bare byte count as bench_allreduce takes it. */
    const double unit = *suf == 'K' || *suf == 'k' ? 1024.0 : *suf == 'M' || *suf == 'm' ? 1048576.0
                        : *suf == 'G' || *suf == 'g' ? 1073741824.0 : 1.0;
    size_t bytes = (size_t)(mb * unit) / 4 * 4;
    size_t n = bytes / 4;
    int R = argc > 2 ? atoi(argv[2]) : 20;
    if (R > 200) R = 200;
    float *buf = malloc(bytes ? bytes : 4);
    if (!buf) {
        fprintf(stderr, "mpi_allreduce: cannot allocate %zu bytes\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (size_t i = 0; i < n; i++) buf[i] = (float)((int)((r * 7u + i * 13u) % 17u) - 8);
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    long wrong = 0;
    for (size_t i = 0; i < n; i++) {
        float s = 0;
        for (int q = 0; q < k; q++) s += (float)((int)((q * 7u + i * 13u) % 17u) - 8);
        wrong += buf[i] != s;
    }
    for (int w = 0; w < 3; w++) MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double t[200], tm[200];
    for (int it = 0; it < R; it++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        t[it] = MPI_Wtime() - t0;
    }
    MPI_Reduce(t, tm, R, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    long wr = 0;
    MPI_Reduce(&wrong, &wr, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (r == 0) {
        qsort(tm, (size_t)R, sizeof tm[0], cmp);
        double med = tm[R / 2], algbw = (double)bytes / med / 1e9, busbw = algbw * 2.0 * (k - 1) / k;
        printf("# MPI_Allreduce: size(B) R time(us) algbw(GB/s) busbw(GB/s) #wrong; busbw = algbw*2(k-1)/k\n");
        printf("  %zu %d %.1f %.3f %.3f %ld\n", bytes, R, med * 1e6, algbw, busbw, wr);
        printf("RESULT peer=mpi ranks=%d bytes=%zu busbw_GBps=%.3f\n", k, bytes, busbw);
    }
    free(buf);
    MPI_Finalize();
    return wr != 0;
}
