/* model/cpu/loss.c — softmax cross-entropy with a loss scale (the paper's 1/(k*n) loss
 * normalisation is applied by the caller through `scale`), computed stably with the max
 * subtracted, in double. */
#include <math.h>

#include "model/cpu/layers.h"

void MODEL_FN(model_softmax_ce)(int n, int k, const real *logits, const int32_t *labels,
                                double scale, real *dlogits, double *loss_sum, int *correct)
{
    double loss = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const real *z = logits + (size_t)i * k;
        real *dz = dlogits + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > z[best]) best = j;
        double mx = z[best], sum = 0;
        for (int j = 0; j < k; j++) sum += exp((double)z[j] - mx);
        double lse = mx + log(sum);
        loss += lse - (double)z[labels[i]];
        hits += best == labels[i];
        for (int j = 0; j < k; j++) {
            double p = exp((double)z[j] - lse) - (j == labels[i]);
            dz[j] = (real)(scale * p);
        }
    }
    if (loss_sum) *loss_sum = loss;
    if (correct) *correct = hits;
}
