/* test_model_host_alloc — model_host_alloc / model_host_free, the input batches' memory
 * (session.c gives it to the pipeline): every size, 0 and odd ones included, comes back
 * aligned to 64 bytes and fully writable (ASan checks the bounds in `make sanitize`), and is
 * freed by model_host_free; on CUDA (when a device is usable) the memory is page-locked, which
 * is what lets the step copy a batch without staging: cudaPointerGetAttributes must say
 * "host" for it (and for a pointer inside it, as the sub-batches of --accumulate are). */
#include <stdint.h>
#include <string.h>

#include "ih_config.h"
#include "model/model.h"
#include "tests/check.h"
#if IH_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

static void sizes(model_backend b, const char *name)
{
    const size_t n[] = {0, 1, 63, 64, 65, 4097, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) {
        unsigned char *p = model_host_alloc(b, n[i]);
        CHECK(p != NULL, "%s: %zu bytes: NULL", name, n[i]);
        if (!p) continue;
        CHECK((uintptr_t)p % 64 == 0, "%s: %zu bytes at %p: not 64-byte aligned", name, n[i], (void *)p);
        memset(p, 0xa5, n[i]);
        size_t bad = 0;
        for (size_t j = 0; j < n[i]; j++) bad += p[j] != 0xa5;
        CHECK(bad == 0, "%s: %zu bytes: %zu not kept", name, n[i], bad);
#if IH_WITH_CUDA
        if (b == MODEL_BACKEND_CUDA && n[i] > 64) {
            struct cudaPointerAttributes pa;
            int pinned = cudaPointerGetAttributes(&pa, p + 64) == cudaSuccess && pa.type == cudaMemoryTypeHost;
            CHECK(pinned, "%s: %zu bytes: not page-locked", name, n[i]);
        }
#endif
        model_host_free(b, p);
    }
    model_host_free(b, NULL); /* a no-op */
}

int main(void)
{
    sizes(MODEL_BACKEND_CPU, "cpu");
    char why[200];
    if (model_backend_available(MODEL_BACKEND_CUDA, why, sizeof why) &&
        model_select_device(MODEL_BACKEND_CUDA, 0) == IH_OK)
        sizes(MODEL_BACKEND_CUDA, "cuda");
    else
        printf("cuda part skipped: %s\n", why);
    return ih_test_result();
}
