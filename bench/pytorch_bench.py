"""PyTorch side of `auglocal bench`: the same CIFAR ResNet, BP or AugLocal, on random
tensors; prints one JSON line with the same fields.

    python3 bench/pytorch_bench.py --model resnet32 --method auglocal --aux-depth 2 \
        --pyramid 0.5 --batch-size 128 --iters 10 --warmup 2 --threads 2
    python3 bench/pytorch_bench.py --device cuda --precision bf16 --batch-size 1024 ...

Written from auglocal's spec (shared/auglocal-spec.md): option-B CIFAR ResNets, AugLocal's
uniform selection with ties to even, pyramidal depth, stride bookkeeping, the reference's
update order (module forward, local loss, backward at once, detach, next; one SGD step).
Peak memory is measured as auglocal measures it: on the CPU, the process's peak resident
set after a reset (/proc/self/clear_refs), minus its resident set before the model is built;
on a GPU, `torch.cuda.max_memory_allocated` (the caching allocator's bytes in tensors, as
auglocal reads the CUDA memory pool's bytes in use) minus what was allocated before the
model. `--precision bf16` runs forward and losses under `torch.autocast(bfloat16)`.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)))


def resnet_units(depth):
    n = (depth - 2) // 6
    units, dims, cin = [Stem()], [16], 16
    for stage, width in enumerate([16, 32, 64]):
        for b in range(n):
            units.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
            dims.append(width)
            cin = width
    return units, dims


def selection(n, j, d):
    if d >= n - 1 - j:
        return list(range(j + 1, n))
    return [round(j + ((n - j - 1) / d) * i) for i in range(1, d + 1)]  # round: ties to even


def pyramid_depths(d, c, k):
    if c == 0 or k <= 2:
        return [d] * (k - 1)
    return [max(1, round(d * (1 - (i * c) / (k - 2)) + (i * c) / (k - 2) * 1)) for i in range(k - 1)]


class Aux(nn.Module):
    def __init__(self, dims, unit, depth, classes):
        super().__init__()
        blocks, ch, pending = [], dims[unit], 0
        for k in selection(len(dims), unit, depth):
            ratio = dims[k] // ch
            pending += int(math.log2(ratio)) if ratio >= 1 else 0
            stride = 1
            if pending >= 1:
                stride, pending = 2, pending - 1
            blocks.append(BasicBlock(ch, dims[k], stride))
            ch = dims[k]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm1d(ch) if depth <= 1 else nn.Identity()
        self.fc = nn.Linear(ch, classes)

    def forward(self, x):
        return self.fc(self.bn(torch.flatten(F.adaptive_avg_pool2d(self.blocks(x), 1), 1)))


def init(module):
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.weight.data.fill_(1)
            m.bias.data.zero_()


def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet32")
    p.add_argument("--method", default="bp", choices=["bp", "auglocal"])
    p.add_argument("--aux-depth", type=int, default=2)
    p.add_argument("--pyramid", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    images = torch.randn(a.batch_size, 3, 32, 32, device=device)
    labels = torch.arange(a.batch_size, device=device) % 10

    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        baseline = rss("VmRSS:")
    units, dims = resnet_units(int(a.model.removeprefix("resnet")))
    n = len(units)
    fc = nn.Linear(64, 10)
    if a.method == "bp":
        modules, auxes = [list(range(n))], [None]
    else:
        k = n - a.aux_depth
        depths = pyramid_depths(a.aux_depth, a.pyramid, k)
        modules = [[u] for u in range(k - 1)] + [list(range(k - 1, n))]
        auxes = [Aux(dims, u, min(depths[u], n - 1 - u), 10) for u in range(k - 1)] + [None]
    everything = nn.ModuleList(units + [fc] + [x for x in auxes if x is not None])
    init(everything)
    everything.to(device)
    opt = torch.optim.SGD(everything.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        x = images
        for units_of_module, aux in zip(modules, auxes):
            with autocast:
                h = x
                for u in units_of_module:
                    h = units[u](h)
                if aux is None:
                    loss = F.cross_entropy(fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)), labels)
                else:
                    loss = F.cross_entropy(aux(h), labels)
            loss.backward()
            x = h.detach()
        opt.step()

    times = []
    for i in range(a.warmup + a.iters):
        start = time.perf_counter()
        step()
        if gpu:
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "model": a.model, "method": a.method, "aux_depth": a.aux_depth, "pyramid": a.pyramid,
        "modules": len(modules), "batch_size": a.batch_size, "threads": torch.get_num_threads(),
        "device": a.device, "precision": a.precision,
        "iters": a.iters, "median_step_seconds": median, "images_per_second": a.batch_size / median,
        "peak_memory_bytes": (torch.cuda.max_memory_allocated() if gpu else rss("VmHWM:")) - baseline,
        "peak_device_memory_bytes": torch.cuda.max_memory_allocated() if gpu else None,
    }))


if __name__ == "__main__":
    main()
