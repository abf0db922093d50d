/* test_cuda_probe — the first CUDA piece: the device/cuDNN query and the input
 * normalisation kernel against the CPU formula (float build of model/input_norm.h).
 * Exits 77 ("SKIP: no CUDA device") when the runtime cannot count devices or finds none. */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "model/cuda/probe.h"
#include "model/input_norm.h"
#include "tests/check.h"

int main(void)
{
    model_cuda_info info;
    ih_err e = model_cuda_probe(&info);
    if (e != IH_OK) SKIP("no CUDA device (%s)", ih_last_error());
    if (info.device_count == 0) SKIP("no CUDA device (cudaGetDeviceCount = 0)");
    printf("CUDA runtime %d, cuDNN %zu, %d device(s)\n", info.runtime_version, info.cudnn_version,
           info.device_count);
    CHECK(info.cudnn_version >= 8000, "cuDNN version %zu", info.cudnn_version);

    enum { NPIX = 3 * 37 * 41 + 5 }; /* not a multiple of the block size */
    static uint8_t in[NPIX * 3];
    static float out[NPIX * 3];
    ih_rng r = ih_rng_make(1, 2, 3);
    for (int i = 0; i < NPIX * 3; i++) in[i] = (uint8_t)ih_rng_below(&r, 256);
    e = model_cuda_input_normalize_host(in, out, NPIX);
    CHECK(e == IH_OK, "kernel: %s", ih_last_error());
    const double mean[3] = {MODEL_MEAN_R, MODEL_MEAN_G, MODEL_MEAN_B},
                 std[3] = {MODEL_STD_R, MODEL_STD_G, MODEL_STD_B};
    int bad = 0;
    for (int i = 0; i < NPIX * 3; i++) {
        double ref = (in[i] - 255 * mean[i % 3]) / (255 * std[i % 3]);
        if (!ih_close(out[i], ref, 1e-6, 1e-6)) {
            if (bad < 5) fprintf(stderr, "  pixel %d ch %d: ref %.8g got %.8g\n", i / 3, i % 3, ref, out[i]);
            bad++;
        }
    }
    CHECK(bad == 0, "normalize: %d of %d values differ", bad, NPIX * 3);
    return ih_test_result();
}
