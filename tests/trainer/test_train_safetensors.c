/* test_train_safetensors — the model.safetensors that ./train writes next to each checkpoint
 * holds exactly the checkpoint's weights in PyTorch's names and layouts: parsed here by an
 * independent reader (header length, JSON entries, data offsets) and compared value by value
 * (conv weights OIHW vs our KRSC, BN gamma/beta as weight/bias, FC). When PyTorch is importable,
 * tests/trainer/check_safetensors_torch.py also loads the file into the reference ResNet of
 * tests/ref/gen_resnet_ref.py and must reproduce our eval logits on the same images. */
#include <stdint.h>

#include "core/rng.h"
#include "model/model.h"
#include "tests/trainer/tiny_data.h"
#include "trainer/checkpoint.h"

static char out[1 << 18];


/* Finds tensor `name` in the JSON header; fills its shape and data pointer. 0 if found. */
static int find_tensor(const char *hdr, const unsigned char *data, const char *name, long dims[4], int *nd,
                       const float **vals, size_t *count)
{
    char key[256];
    snprintf(key, sizeof key, "\"%s\":{", name);
    const char *p = strstr(hdr, key);
    if (!p) return 1;
    const char *sh = strstr(p, "\"shape\":["), *of = strstr(p, "\"data_offsets\":[");
    if (!sh || !of || !strstr(p, "\"dtype\":\"F32\"")) return 1;
    sh += 9;
    *nd = 0;
    while (*sh != ']' && *nd < 4) {
        dims[(*nd)++] = strtol(sh, (char **)&sh, 10);
        if (*sh == ',') sh++;
    }
    unsigned long b, e;
    if (sscanf(of + 16, "%lu,%lu", &b, &e) != 2 || e < b || (e - b) % 4) return 1;
    *vals = (const float *)(data + b);
    *count = (e - b) / 4;
    return 0;
}

int main(void)
{
    char tmp[] = "/tmp/ih_safet_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    if (make_tiny_data(tmp, 3, 16, 2)) { CHECK(0, "could not build the tiny dataset"); return ih_test_result(); }
    int rc = run_cmd(out, sizeof out,
                     "%s/bin/train --train %s/train.lmdb -o %s/run --arch resnet8 --image-size 16 -b 8 "
                     "--epochs 1 --base-lr 3.2 --warmup-epochs 0 --log-every 1000 --no-progress",
                     bin_dir(), tmp, tmp);
    CHECK(rc == 0, "train exit %d:\n%s", rc, out);

    char path[1024];
    snprintf(path, sizeof path, "%s/run/checkpoint.bin", tmp);
    ckpt_meta cm;
    CHECK(ckpt_read_meta(path, &cm) == IH_OK, "%s", ih_last_error());
    model_cfg mc = {.arch = "resnet8", .num_classes = cm.num_classes, .image_size = 16, .max_batch = 4,
                    .backend = MODEL_BACKEND_CPU, .bn_momentum = 0.1f, .bn_eps = 1e-5f};
    model_net *m = NULL;
    CHECK(model_net_create(&m, &mc) == IH_OK, "%s", ih_last_error());
    if (!m) return ih_test_result();
    CHECK(ckpt_load(path, &cm, model_params(m), model_state(m), NULL) == IH_OK, "%s", ih_last_error());

    snprintf(path, sizeof path, "%s/run/model.safetensors", tmp);
    unsigned char *blob = NULL;
    long n = read_file(path, &blob);
    CHECK(blob && n > 16, "cannot read %s", path);
    if (!blob) return ih_test_result();
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)blob[i] << (8 * i);
    CHECK(hl % 8 == 0 && 8 + hl < (uint64_t)n, "header length %llu of %ld bytes", (unsigned long long)hl, n);
    char *hdr = malloc(hl + 1);
    memcpy(hdr, blob + 8, hl);
    hdr[hl] = 0;
    const unsigned char *data = blob + 8 + hl;
    /* Copy the data section so float reads are aligned (the format only promises 8-byte
     * alignment of the section start, which malloc + 8 + hl%8==0 gives; be explicit anyway). */
    unsigned char *al = malloc((size_t)(n - 8 - (long)hl));
    memcpy(al, data, (size_t)(n - 8 - (long)hl));

    const model_param_seg *segs;
    size_t nseg = model_param_segments(m, &segs);
    const float *p = model_params(m);
    size_t checked = 0, bad = 0;
    for (size_t i = 0; i < nseg; i++) {
        char name[192];
        const char *nm = segs[i].name;
        size_t L = strlen(nm);
        if (L > 6 && !strcmp(nm + L - 6, ".gamma")) snprintf(name, sizeof name, "%.*s.weight", (int)(L - 6), nm);
        else if (L > 5 && !strcmp(nm + L - 5, ".beta")) snprintf(name, sizeof name, "%.*s.bias", (int)(L - 5), nm);
        else snprintf(name, sizeof name, "%s", nm);
        long dims[4] = {0};
        int nd = 0;
        const float *v;
        size_t cnt;
        if (find_tensor(hdr, al, name, dims, &nd, &v, &cnt)) { CHECK(0, "tensor %s (segment %s) not in the file", name, nm); continue; }
        CHECK(cnt == segs[i].count, "%s: %zu values, segment has %zu", name, cnt, segs[i].count);
        if (cnt != segs[i].count) continue;
        const float *ours = p + segs[i].offset;
        if (segs[i].kind == MODEL_PARAM_CONV_W) {
            CHECK(nd == 4, "%s: conv weight must be 4-D (OIHW), got %d-D", name, nd);
            if (nd != 4) continue;
            long K = dims[0], C = dims[1], R = dims[2], S = dims[3];
            for (long k = 0; k < K; k++)
                for (long c = 0; c < C; c++)
                    for (long r = 0; r < R; r++)
                        for (long s = 0; s < S; s++) {
                            float a = v[((k * C + c) * R + r) * S + s], b = ours[((k * R + r) * S + s) * C + c];
                            bad += memcmp(&a, &b, 4) != 0;
                            checked++;
                        }
        } else {
            for (size_t j = 0; j < cnt; j++) { bad += memcmp(&v[j], &ours[j], 4) != 0; checked++; }
        }
    }
    CHECK(checked == model_num_params(m), "checked %zu of %zu parameters", checked, model_num_params(m));
    CHECK(bad == 0, "%zu values differ from the checkpoint", bad);
    CHECK(strstr(hdr, "running_mean") && strstr(hdr, "running_var"), "BN running statistics missing");

    /* Our eval logits on fixed images, for the PyTorch side. */
    enum { B = 4, SZ = 16 };
    static uint8_t img[B * SZ * SZ * 3];
    ih_rng r = ih_rng_make(11, 0, 0);
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)ih_rng_below(&r, 256);
    float *logits = malloc((size_t)B * (size_t)cm.num_classes * sizeof(float));
    CHECK(model_eval_logits(m, img, B, logits) == IH_OK, "%s", ih_last_error());
    char inp[1024];
    snprintf(inp, sizeof inp, "%s/eval_input.bin", tmp);
    FILE *f = fopen(inp, "wb");
    int32_t hdr5[5] = {8, 16, cm.num_classes, B, SZ};
    fwrite(hdr5, sizeof hdr5, 1, f);
    fwrite(img, sizeof img, 1, f);
    fwrite(logits, sizeof(float), (size_t)B * (size_t)cm.num_classes, f);
    fclose(f);
    const char *src = getenv("IH_SOURCE_DIR");
    const char *py = NULL;
    if (run_cmd(NULL, 0, "python3 -c 'import torch, numpy'") == 0) py = "python3";
    else if (run_cmd(NULL, 0, "/usr/bin/python3 -c 'import torch, numpy'") == 0) py = "/usr/bin/python3";
    if (!py || !src) {
        printf("note: PyTorch not importable; skipped loading the file into PyTorch (C checks ran)\n");
    } else {
        rc = run_cmd(out, sizeof out, "%s %s/tests/trainer/check_safetensors_torch.py %s %s", py, src, path, inp);
        CHECK(rc == 0, "PyTorch check failed (exit %d):\n%s", rc, out);
        printf("%s", out);
    }
    free(logits);
    free(al);
    free(hdr);
    free(blob);
    model_net_destroy(m);
    run_cmd(out, sizeof out, "rm -rf %s", tmp);
    return ih_test_result();
}
