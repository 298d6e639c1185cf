"""Checks that an auglocal export loads into a PyTorch CIFAR ResNet (or, for the ImageNet
models, torchvision's own resnet18/34/50/101 and vgg13_bn) with strict=True and gives the
same inference logits as auglocal.

    cargo run --release -p auglocal-tests --example export_check -- /tmp/export resnet20
    python3 bench/check_export.py /tmp/export resnet20
    (resnet18, resnet34, resnet50, resnet101, vgg13: needs torchvision)

The model is written from the spec (He et al. 2016, option-B projection shortcuts; PyTorch's
usual CIFAR names), not taken from any other code base; its block is pytorch_bench.py's.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from pytorch_bench import BasicBlock  # same folder


class CifarResNet(nn.Module):
    def __init__(self, depth, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# Our ImageNet model names and torchvision's constructors of the same networks.
TORCHVISION = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50",
               "resnet101": "resnet101", "vgg13": "vgg13_bn"}


def main():
    folder, name = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "resnet20"
    if name in TORCHVISION:
        import torchvision

        model = getattr(torchvision.models, TORCHVISION[name])(num_classes=10)
    else:
        model = CifarResNet(int(name.removeprefix("resnet")))
    state = load_file(f"{folder}/backbone.safetensors")
    model.load_state_dict(state, strict=True)
    model.eval()
    probe = load_file(f"{folder}/probe.safetensors")
    with torch.no_grad():
        logits = model(probe["images"])
    ours = probe["logits"]
    rel = ((logits - ours).norm() / ours.norm()).item()
    tracked = next(v for k, v in state.items() if k.endswith("num_batches_tracked"))
    print(f"{name}: {len(state)} tensors loaded with strict=True; num_batches_tracked {tracked.dtype} = {tracked.item()}")
    print(f"logits: max |torch - auglocal| = {(logits - ours).abs().max().item():.3e}, relative L2 = {rel:.3e}")
    print(f"argmax agree on {(logits.argmax(1) == ours.argmax(1)).sum().item()}/{len(ours)} images")
    if not rel < 1e-4:
        sys.exit("MISMATCH")


if __name__ == "__main__":
    main()
