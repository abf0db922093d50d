/* test_softmax_ce_grad_fd — softmax cross-entropy (double build): the loss sum against a
 * naive log-sum-exp written here, top-1 hits (first maximum wins ties), stability for huge
 * logits, and dlogits = scale * dCE/dlogits against central finite differences. */
#include "model/cpu/layers.h"
#include "tests/model/fd_check.h"

enum { N = 4, K = 5 };

typedef struct {
    double z[N * K], dz[N * K];
    int32_t lab[N];
} ctx;

static double loss(void *p)
{
    ctx *c = p;
    double l;
    model_softmax_ce_f64(N, K, c->z, c->lab, 1.0, c->dz, &l, NULL);
    return l;
}

int main(void)
{
    static ctx t;
    fill_normal(t.z, N * K, 5, 0, 2);
    int32_t lab[N] = {0, 3, 4, 2};
    for (int i = 0; i < N; i++) t.lab[i] = lab[i];
    double ref = 0;
    int hits = 0;
    for (int n = 0; n < N; n++) {
        double s = 0;
        int best = 0;
        for (int k = 0; k < K; k++) {
            s += exp(t.z[n * K + k]);
            if (t.z[n * K + k] > t.z[n * K + best]) best = k;
        }
        ref += log(s) - t.z[n * K + lab[n]];
        hits += best == lab[n];
    }
    double l, dz[N * K], fz[N * K];
    int correct = -1;
    model_softmax_ce_f64(N, K, t.z, t.lab, 0.25, dz, &l, &correct);
    CHECK(fabs(l - ref) < 1e-12, "loss %.15g vs naive %.15g", l, ref);
    CHECK(correct == hits, "correct %d vs %d", correct, hits);
    fd_grad(loss, &t, t.z, N * K, 1e-5, fz);
    for (int i = 0; i < N * K; i++) fz[i] *= 0.25;
    compare_arrays("softmax-ce dlogits (scale 0.25)", dz, fz, N * K, 1e-9, 1e-6);

    /* ties: first maximum wins; huge logits stay finite */
    double z2[2 * 3] = {1, 1, 0, 1000, -1000, 999};
    int32_t l2[2] = {1, 0};
    double d2[6];
    model_softmax_ce_f64(2, 3, z2, l2, 1.0, d2, &l, &correct);
    CHECK(correct == 1, "tie goes to the first maximum: correct %d", correct);
    CHECK(isfinite(l) && fabs(l - (log(2 + exp(-1.0)) + log(1 + exp(-1.0)))) < 1e-9,
          "stable loss %g", l);
    return ih_test_result();
}
