#!/usr/bin/python3
"""bf16_error_probe.py -- how far one training step's gradients in bf16 / fp16 / fp32 lie from
float64 ones, per gradient tensor (relative L2 ||g - g64||_2 / ||g64||_2), for the two nets of
tests/model/test_cuda_vs_cpu.c: resnet8 (CIFAR-style, width 16, 16x16, 10 classes, batch 8) and
slim resnet18 (ImageNet stem, width 8, 128x128, 5 classes, batch 4).

Setup as in that test's run(): He-normal conv weights (std sqrt(2/(k*r*s))), fc N(0, 0.01) with
zero bias, BN gammas U(0.5, 1.5) and betas 0.2*N(0,1), all exactly float32; uniform random uint8
images normalised with the ImageNet mean/std; random labels; train-mode BN (batch statistics);
loss = mean cross-entropy. Weights and data are drawn here (numpy), not by the C test's RNG.
The topology is gen_resnet_ref.py's ResNet (same modules and parameter names as ours).

Runs, all from the same float64 weights and batch:
  f64      float64 everywhere (the reference)
  f32      the model in float32
  bf16emu  our CUDA bf16 path emulated tensor by tensor: arithmetic in float64 (stands in for
           fp32 accumulation) with every stored tensor rounded (RNE) to bf16 -- the normalised
           input, conv weights (read copy), every conv / BN(+ReLU) / ADD(+ReLU) / maxpool output,
           and in backward each of those tensors' gradients and the conv weight gradients (bf16
           scratch). BN statistics, BN parameters, pooled features, FC and loss stay exact.
  fp16emu  the same with float16 and a loss scale of 2^10 (gradients carry the scale while in
           fp16, conv weight gradients are unscaled before rounding), as the test's fp16 run.
  autocast PyTorch's own CPU mixed precision: torch.autocast("cpu", dtype=torch.bfloat16) on the
           float32 model (1.13: conv and linear in bf16, and BN/ReLU/add/pool then also run on
           bf16 tensors; parameters and their gradients stay float32; backward outside autocast).
           CPU autocast has no float16 in torch 1.13, hence fp16emu only.
  in-bf16  float64 everywhere, only the normalised input rounded to bf16: the gradients' own
           sensitivity to a 2^-9 relative change of the data, no bf16 arithmetic at all.

Usage: /usr/bin/python3 tests/ref/bf16_error_probe.py [seeds...]   (Debian python3-torch 1.13.1,
CPU; about 2 s for the default seeds 1 2 3). Printed there (max and median over gradient tensors
of the relative L2 error against float64; dloss: relative loss error):

net          seed prec          dloss      max   median  worst tensor
resnet8         1 f32        7.59e-09 9.55e-07 5.41e-07  conv1.weight
resnet8         1 bf16emu    1.54e-05    0.241    0.146  layer2.0.bn1.bias
resnet8         1 fp16emu    9.67e-07   0.0659   0.0278  layer1.0.bn1.weight
resnet8         1 autocast   9.44e-06    0.244    0.148  layer2.0.bn1.bias
resnet8         1 in-bf16    2.77e-06     0.12   0.0778  layer1.0.bn1.bias
resnet8         2 f32        6.54e-08 8.63e-07 5.14e-07  conv1.weight
resnet8         2 bf16emu    6.63e-05    0.284    0.144  bn1.bias
resnet8         2 fp16emu    6.91e-06   0.0911   0.0524  bn1.weight
resnet8         2 autocast   4.12e-05    0.279    0.144  bn1.bias
resnet8         2 in-bf16    1.85e-06    0.127    0.079  layer1.0.bn1.bias
resnet8         3 f32        3.32e-08 9.86e-07 5.44e-07  layer1.0.bn1.bias
resnet8         3 bf16emu    7.32e-05    0.301    0.127  layer1.0.bn1.weight
resnet8         3 fp16emu    1.65e-06   0.0997   0.0532  layer1.0.bn1.bias
resnet8         3 autocast   4.04e-05    0.304    0.127  layer1.0.bn1.weight
resnet8         3 in-bf16    1.54e-05    0.151    0.089  layer1.0.bn1.bias
resnet18_w8     1 f32        9.06e-09 4.92e-06 2.16e-06  layer4.1.bn1.weight
resnet18_w8     1 bf16emu    2.14e-04    0.774    0.339  bn1.weight
resnet18_w8     1 fp16emu    2.58e-05    0.295    0.106  bn1.weight
resnet18_w8     1 autocast   2.62e-04    0.625    0.334  bn1.weight
resnet18_w8     1 in-bf16    1.10e-04     0.49    0.201  bn1.weight
resnet18_w8     2 f32        1.14e-09  3.5e-06 1.92e-06  layer4.1.conv2.weight
resnet18_w8     2 bf16emu    1.40e-04     0.65    0.368  layer2.0.bn1.weight
resnet18_w8     2 fp16emu    3.79e-05    0.193    0.121  layer2.0.downsample.1.bias
resnet18_w8     2 autocast   6.41e-05    0.601    0.374  layer2.0.bn1.weight
resnet18_w8     2 in-bf16    8.19e-06    0.333    0.168  layer1.1.bn1.weight
resnet18_w8     3 f32        2.96e-08  3.6e-06 2.12e-06  layer4.1.conv2.weight
resnet18_w8     3 bf16emu    6.53e-05    0.695     0.34  layer1.1.bn1.weight
resnet18_w8     3 fp16emu    4.25e-05    0.184   0.0897  layer1.1.bn2.weight
resnet18_w8     3 autocast   1.73e-04    0.603    0.327  layer1.1.bn1.weight
resnet18_w8     3 in-bf16    1.06e-04    0.203    0.125  layer2.0.bn2.weight

Seeds 1..10, max over tensors: resnet8 bf16emu 0.19-0.30 (median 0.23), autocast 0.19-0.30,
fp16emu 0.05-0.13; resnet18_w8 bf16emu 0.47-1.58 (median 0.66; seed 5 gives 1.58 at
layer1.0.bn2.bias, an 8-element tensor whose reference norm is half the typical one), autocast
0.49-1.56 (3 of 10 above 0.8), fp16emu 0.18-0.64 (median 0.27), in-bf16 0.20-0.65. f32 stays
at ~1e-6 except resnet18_w8 seed 8 (2.4e-3: a ReLU kink flipped by fp32 rounding).
Rounding only the forward tensors gives the same error as bf16emu; rounding only the backward
tensors gives ~0.01. The worst tensors are the 8/16-element BN gamma/beta gradients of the stem
and stage 1-2.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_resnet_ref import MEAN, STD, Basic, ResNet  # noqa: E402

NETS = [("resnet8", 8, 16, 16, 10, 8), ("resnet18_w8", 18, 8, 128, 5, 4)]


class Round(torch.autograd.Function):
    """Value rounded to dtype dt in forward, gradient rounded to dt in backward."""

    @staticmethod
    def forward(ctx, x, dt):
        ctx.dt = dt
        return x.to(dt).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.dt).to(g.dtype), None


class RoundW(torch.autograd.Function):
    """A conv weight: read copy rounded; its gradient unscaled (1/ls), rounded, rescaled."""

    @staticmethod
    def forward(ctx, w, dt, ls):
        ctx.dt, ctx.ls = dt, ls
        return w.to(dt).to(w.dtype)

    @staticmethod
    def backward(ctx, g):
        return (g / ctx.ls).to(ctx.dt).to(g.dtype) * ctx.ls, None, None


def forward(model, x, dt=None, ls=1.0):
    """model's training forward; dt: the storage type every tensor is rounded to (None: none)."""
    qa = (lambda t: Round.apply(t, dt)) if dt else (lambda t: t)
    qw = (lambda w: RoundW.apply(w, dt, ls)) if dt else (lambda w: w)

    def conv(m, t):
        return qa(F.conv2d(t, qw(m.weight), None, m.stride, m.padding))

    def bn(m, t):
        return F.batch_norm(t, None, None, m.weight, m.bias, True, 0.0, m.eps)

    def block(b, t):
        if isinstance(b, Basic):
            y = qa(F.relu(bn(b.bn1, conv(b.conv1, t))))
            y = qa(bn(b.bn2, conv(b.conv2, y)))
        else:  # bottleneck
            y = qa(F.relu(bn(b.bn1, conv(b.conv1, t))))
            y = qa(F.relu(bn(b.bn2, conv(b.conv2, y))))
            y = qa(bn(b.bn3, conv(b.conv3, y)))
        s = qa(bn(b.downsample[1], conv(b.downsample[0], t))) if b.downsample is not None else t
        return qa(F.relu(y + s))

    x = qa(x)
    x = qa(F.relu(bn(model.bn1, conv(model.conv1, x))))
    if model.pool:
        x = qa(F.max_pool2d(x, 3, 2, 1))
    for s in range(model.nstages):
        for b in getattr(model, "layer%d" % (s + 1)):
            x = block(b, x)
    return model.fc(x.mean(dim=(2, 3)))  # pooled features and FC: fp32 in our path


def build(depth, width, size, classes, batch, seed):
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    model = ResNet(depth, width, classes).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod = model.get_submodule(name.rsplit(".", 1)[0])
            if p.dim() == 4:
                v = rng.normal(0, np.sqrt(2.0 / (p.shape[0] * p.shape[2] * p.shape[3])), p.shape)
            elif isinstance(mod, nn.Linear):
                v = rng.normal(0, 0.01, p.shape) if p.dim() == 2 else np.zeros(p.shape)
            elif name.endswith("weight"):  # BN gamma
                v = rng.uniform(0.5, 1.5, p.shape)
            else:  # BN beta
                v = 0.2 * rng.normal(0, 1, p.shape)
            p.copy_(torch.from_numpy(v).float().double())
    img = rng.randint(0, 256, size=(batch, size, size, 3)).astype(np.float64)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()
    x = (x / 255.0 - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    y = torch.from_numpy(rng.randint(0, classes, size=batch)).long()
    return model, x, y


def grads(model, x, y, mode):
    if mode == "in-bf16":
        x = x.to(torch.bfloat16).double()
    if mode == "f32":
        model = model.float()
        x = x.float()
    for p in model.parameters():
        p.grad = None
    ls = 1024.0 if mode == "fp16emu" else 1.0
    if mode == "autocast":
        model = model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = forward(model, x.float())
            loss = F.cross_entropy(logits.float(), y)
    else:
        dt = {"bf16emu": torch.bfloat16, "fp16emu": torch.float16}.get(mode)
        logits = forward(model, x, dt, ls)
        loss = F.cross_entropy(logits, y)
    (loss * ls).backward()
    out = [(n, p.grad.double() / ls) for n, p in model.named_parameters()]
    model.double()
    return float(loss), out


def main():
    seeds = [int(s) for s in sys.argv[1:]] or [1, 2, 3]
    modes = ["f32", "bf16emu", "fp16emu", "autocast", "in-bf16"]
    print("%-12s %4s %-9s %9s %8s %8s  %s" % ("net", "seed", "prec", "dloss", "max", "median",
                                             "worst tensor"))
    for net, depth, width, size, classes, batch in NETS:
        for seed in seeds:
            model, x, y = build(depth, width, size, classes, batch, seed)
            l64, g64 = grads(model, x, y, "f64")
            for mode in modes:
                l, g = grads(model, x, y, mode)
                rel = []
                for (n, a), (_, r) in zip(g, g64):
                    den = r.norm().item()
                    rel.append(((a - r).norm().item() / (den if den > 0 else 1.0), n))
                worst = max(rel)
                med = float(np.median([v for v, _ in rel]))
                print("%-12s %4d %-9s %9.2e %8.3g %8.3g  %s" % (net, seed, mode, abs(l - l64) / l64,
                                                               worst[0], med, worst[1]))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
