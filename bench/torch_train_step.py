#!/usr/bin/env python3
"""bench/torch_train_step.py: the same-run baseline for bench_train_step, torchvision's
resnet50 under PyTorch with bf16 autocast and channels-last (cudnn.benchmark on), on
synthetic input already on the GPU. One step is forward + cross-entropy + backward with
zero_grad(set_to_none=True), no optimiser, as bench_train_step times ours.
img/s = batch * iters / seconds; median and p10/p90 over --repeats runs.

    python3 bench/torch_train_step.py --batch 32 [--iters 20 --repeats 5 --warmup 10]

Last line: "BENCH torch arch=resnet50 n=.. prec=bf16 img_s=<median> ok=<0|1>".
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = torchvision.models.resnet50(num_classes=a.classes).to(dev)
    model = model.to(memory_format=torch.channels_last).train()
    g = torch.Generator(device="cpu").manual_seed(3)
    x = torch.randn(a.batch, 3, a.image_size, a.image_size, generator=g).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,), generator=g).to(dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    loss = step().item()
    ok = math.isfinite(loss) and abs(loss - math.log(a.classes)) < 1.5
    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    ips = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        for _ in range(a.iters):
            step()
        torch.cuda.synchronize()
        ips.append(a.batch * a.iters / (time.perf_counter() - t))
    ips.sort()
    r = len(ips)
    med, p10, p90 = ips[r // 2], ips[r // 10], ips[r - 1 - r // 10]
    print(f"# {'arch':9} {'dev':5} {'prec':6} {'n':>5} {'median(i/s)':>11} {'p10(i/s)':>10} "
          f"{'p90(i/s)':>10} {'verify':>7}")
    print(f"  {'resnet50':9} {'torch':5} {'bf16':6} {a.batch:5d} {med:11.1f} {p10:10.1f} "
          f"{p90:10.1f} {'ok' if ok else 'WRONG':>7}")
    print(f"BENCH torch arch=resnet50 n={a.batch} prec=bf16 img_s={med:.1f} ok={int(ok)}")


if __name__ == "__main__":
    main()
