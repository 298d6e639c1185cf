"""Independent multiply-add counts of the CIFAR ResNets and of one training step, BP or
AugLocal, by PyTorch's own FLOP counter (torch.utils.flop_counter.FlopCounterMode), to check
the analytic counts of `auglocal inspect` and `auglocal bench` (auglocal_core::flops).

    python3 bench/count_flops.py                      # the table of the README
    python3 bench/count_flops.py --model resnet110 --aux-depth 3

FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matrix products, forward
and backward (input gradients only where autograd needs them); the numbers printed are
multiply-adds (FLOPs / 2) per image. The models and the AugLocal step are those of
bench/pytorch_bench.py (option-B shortcuts: 1x1 conv + BN); the original paper's option-A
ResNet (parameter-free zero-padding shortcuts) is counted too for reference
(`--no-option-a` skips it).
"""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pytorch_bench import Aux, pyramid_depths, resnet_units

BATCH = 2  # BatchNorm1d in training needs two values per channel; counts are per image.


class OptionABlock(nn.Module):
    """He et al.'s CIFAR block with option-A shortcuts: subsample and zero-pad channels."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None
        self.stride = stride

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.pad is not None:
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


def option_a_inference(depth):
    n = (depth - 2) // 6
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, width in enumerate([16, 32, 64]):
        for b in range(n):
            layers.append(OptionABlock(cin, width, 2 if stage > 0 and b == 0 else 1))
            cin = width
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(BATCH, 3, 32, 32))
    return counter.get_total_flops() // 2 // BATCH


def count_step(model, method, aux_depth, pyramid):
    """Multiply-adds per image of the inference pass and of one training step."""
    units, dims = resnet_units(int(model.removeprefix("resnet")))
    n = len(units)
    fc = nn.Linear(64, 10)
    if method == "bp":
        modules, auxes = [list(range(n))], [None]
    else:
        k = n - aux_depth
        depths = pyramid_depths(aux_depth, pyramid, k)
        modules = [[u] for u in range(k - 1)] + [list(range(k - 1, n))]
        auxes = [Aux(dims, u, min(depths[u], n - 1 - u), 10) for u in range(k - 1)] + [None]
    images = torch.zeros(BATCH, 3, 32, 32)
    labels = torch.zeros(BATCH, dtype=torch.long)

    with FlopCounterMode(display=False) as counter:
        h = images
        for u in range(n):
            h = units[u](h)
        fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
    inference = counter.get_total_flops() // 2 // BATCH

    forward = 0
    with FlopCounterMode(display=False) as step:
        x = images
        for units_of_module, aux in zip(modules, auxes):
            with FlopCounterMode(display=False) as fwd:
                h = x
                for u in units_of_module:
                    h = units[u](h)
                logits = fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)) if aux is None else aux(h)
            forward += fwd.get_total_flops()
            F.cross_entropy(logits, labels).backward()
            x = h.detach()
    total = step.get_total_flops()
    return {
        "model": model,
        "method": method,
        "aux_depth": aux_depth if method == "auglocal" else None,
        "pyramid": pyramid if method == "auglocal" else None,
        "modules": len(modules),
        "inference_macs": inference,
        "step_forward_macs": forward // 2 // BATCH,
        "step_backward_macs": (total - forward) // 2 // BATCH,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", action="append")
    p.add_argument("--aux-depth", type=int, default=2)
    p.add_argument("--pyramid", type=float, default=0.5)
    p.add_argument("--no-option-a", action="store_true")
    a = p.parse_args()
    models = a.model or ["resnet32", "resnet110"]
    for model in models:
        for method in ["bp", "auglocal"]:
            print(json.dumps(count_step(model, method, a.aux_depth, a.pyramid)))
        if not a.no_option_a:
            depth = int(model.removeprefix("resnet"))
            print(json.dumps({"model": model, "shortcuts": "option A", "inference_macs": option_a_inference(depth)}))


if __name__ == "__main__":
    main()
