#!/usr/bin/env python3
"""check_safetensors_torch.py ST INPUT_BIN — loads our model.safetensors into the PyTorch
reference ResNet of tests/ref/gen_resnet_ref.py (plain Python parser: torch 1.13 has no
safetensors reader), runs eval-mode forward on the uint8 NHWC images in INPUT_BIN and checks the
logits against the ones our C model computed for the same images.

INPUT_BIN: int32 depth, width, classes, batch, size; uint8 images[batch*size*size*3] (NHWC);
float32 logits[batch*classes]. Exit 0 ok, 1 mismatch, 77 no torch."""
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print("SKIP: PyTorch/numpy not importable (%s)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from gen_resnet_ref import MEAN, STD, ResNet  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", name
        b, e = t["data_offsets"]
        arr = np.frombuffer(blob[base + b:base + e], dtype="<f4").reshape(t["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def main():
    st, inp = sys.argv[1], sys.argv[2]
    with open(inp, "rb") as f:
        blob = f.read()
    depth, width, classes, batch, size = struct.unpack("<5i", blob[:20])
    nimg = batch * size * size * 3
    images = np.frombuffer(blob[20:20 + nimg], dtype=np.uint8).reshape(batch, size, size, 3)
    ours = np.frombuffer(blob[20 + nimg:], dtype="<f4").reshape(batch, classes)

    model = ResNet(depth, width, classes)
    res = model.load_state_dict(read_safetensors(st), strict=False)
    bad_missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
    if bad_missing or res.unexpected_keys:
        print("FAIL: missing %s unexpected %s" % (bad_missing, res.unexpected_keys))
        return 1
    model.eval()
    x = torch.from_numpy(images.astype(np.float64)).permute(0, 3, 1, 2)
    x = (x / 255.0 - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.double()(x).numpy()
    err = np.abs(ref - ours).max()
    scale = np.abs(ref).max()
    print("max |torch - ours| = %.3g (max |logit| %.3g)" % (err, scale))
    if not err <= 1e-4 * max(scale, 1.0):
        print("FAIL: logits differ")
        return 1
    print("ok: PyTorch loads model.safetensors and reproduces our eval logits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
