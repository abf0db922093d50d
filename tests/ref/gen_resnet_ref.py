#!/usr/bin/python3
"""tests/ref/gen_resnet_ref.py — PyTorch references for tests/model/test_resnet_vs_pytorch.c.

Builds small ResNets in PyTorch with the same topology, parameter order and init-free random
weights as model/resnet.c, runs ONE training-mode forward + backward in float64 on uint8
images normalised with the ImageNet mean/std, loss = loss_scale * sum of cross-entropies,
and writes, per network, tests/ref/<name>.bin (format below; little-endian):

  char magic[8] "IH1HREF\\0"; u32 version (=1)
  char arch[16]; i32 base_width, image_size, num_classes, batch
  f64 loss_scale, bn_momentum, bn_eps
  u64 nparams, nstate; u32 nsegs; nsegs x {char name[48]; u64 offset, count}
  u8 images[batch*H*W*3] (NHWC); i32 labels[batch]
  f32 params[nparams] (our flat order, KRSC convs); f32 state_in[nstate] (per BN: mean, var)
  f64 train_logits[batch*classes]; f64 loss_sum; i32 correct
  f32 grads[nparams]; f32 state_out[nstate]; f64 eval_logits[batch*classes] (after the step)

Regenerate (Debian's python3-torch 1.13):  /usr/bin/python3 tests/ref/gen_resnet_ref.py
"""
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VERSION = 1
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class Basic(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, 0, bias=False),
                                            nn.BatchNorm2d(planes))
        self.cout = planes

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    """fb.resnet.torch / Goyal et al.: stride on the 3x3 conv (conv2)."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, stride, 0, bias=False),
                                            nn.BatchNorm2d(4 * planes))
        self.cout = 4 * planes

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    def __init__(self, depth, width, classes):
        super().__init__()
        imagenet = {18: (Basic, [2, 2, 2, 2]), 34: (Basic, [3, 4, 6, 3]),
                    50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3])}
        if depth in imagenet:
            block, stages = imagenet[depth]
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.pool = True
        else:
            block, stages = Basic, [(depth - 2) // 6] * 3
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.pool = False
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for s, nblocks in enumerate(stages):
            blocks = []
            for i in range(nblocks):
                b = block(cin, width << s, 2 if (s > 0 and i == 0) else 1)
                cin = b.cout
                blocks.append(b)
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*blocks))
        self.nstages = len(stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(self.nstages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return self.fc(x.mean(dim=(2, 3)))


def our_params(model):
    """(our name, tensor) in our flat order: registration order, BN weight/bias -> gamma/beta."""
    bn_names = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    out = []
    for name, p in model.named_parameters():
        mod, leaf = name.rsplit(".", 1)
        if mod in bn_names:
            leaf = {"weight": "gamma", "bias": "beta"}[leaf]
        out.append(("%s.%s" % (mod, leaf), p))
    return out


def to_ours(t):
    """OIHW -> KRSC for conv weights; everything else is already in our layout."""
    t = t.detach()
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return t.reshape(-1)


def generate(path, depth, width, size, classes, batch, seed):
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    model = ResNet(depth, width, classes).double()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, p in our_params(model):
            if p.dim() == 4:
                fan_out = p.shape[0] * p.shape[2] * p.shape[3]
                p.copy_(torch.from_numpy(rng.normal(0, np.sqrt(2.0 / fan_out), p.shape)))
            elif name.endswith("gamma"):
                p.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, p.shape)))
            else:
                p.copy_(torch.from_numpy(rng.normal(0, 0.1, p.shape)))
            p.copy_(p.float().double())  # exactly representable in float32
        for bn in bns:
            bn.momentum, bn.eps = 0.1, 1e-5
            bn.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, bn.num_features)).float().double())
            bn.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, bn.num_features)).float().double())
    images = rng.randint(0, 256, size=(batch, size, size, 3)).astype(np.uint8)
    labels = rng.randint(0, classes, size=batch).astype(np.int32)
    loss_scale = 1.0 / batch

    params = our_params(model)
    flat_params = torch.cat([to_ours(p) for _, p in params]).float().numpy()
    state_in = torch.cat([torch.cat([b.running_mean, b.running_var]) for b in bns]).float().numpy()

    x = torch.from_numpy(images).double().permute(0, 3, 1, 2)
    x = (x / 255.0 - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    model.train()
    logits = model(x)
    ce = F.cross_entropy(logits, torch.from_numpy(labels).long(), reduction="sum")
    (ce * loss_scale).backward()
    correct = int((logits.argmax(dim=1).numpy() == labels).sum())
    grads = torch.cat([to_ours(p.grad) for _, p in params]).float().numpy()
    state_out = torch.cat([torch.cat([b.running_mean, b.running_var]) for b in bns]).float().numpy()
    model.eval()
    with torch.no_grad():
        eval_logits = model(x)

    arch = ("resnet%d" % depth).encode()
    with open(path, "wb") as f:
        f.write(b"IH1HREF\0" + struct.pack("<I", VERSION))
        f.write(struct.pack("<16s4i3d", arch, width, size, classes, batch, loss_scale, 0.1, 1e-5))
        f.write(struct.pack("<QQI", flat_params.size, state_in.size, len(params)))
        off = 0
        for name, p in params:
            f.write(struct.pack("<48sQQ", name.encode(), off, p.numel()))
            off += p.numel()
        f.write(images.tobytes())
        f.write(labels.astype("<i4").tobytes())
        f.write(flat_params.astype("<f4").tobytes())
        f.write(state_in.astype("<f4").tobytes())
        f.write(logits.detach().numpy().astype("<f8").tobytes())
        f.write(struct.pack("<di", float(ce), correct))
        f.write(grads.astype("<f4").tobytes())
        f.write(state_out.astype("<f4").tobytes())
        f.write(eval_logits.numpy().astype("<f8").tobytes())
    print("%s: %s width %d, %dx%d, batch %d, %d classes, %d params, loss %.6f, %d bytes" %
          (path, arch.decode(), width, size, size, batch, classes, flat_params.size, float(ce),
           os.path.getsize(path)))


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    generate(os.path.join(here, "resnet_small.bin"), 8, 16, 16, 5, 4, 1)     # CIFAR-style
    generate(os.path.join(here, "resnet18_w4.bin"), 18, 4, 32, 6, 4, 2)      # basic, ImageNet stem
    generate(os.path.join(here, "resnet50_w4.bin"), 50, 4, 64, 7, 4, 3)      # bottleneck
