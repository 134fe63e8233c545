"""An LPIPS-style VGG16 distance for PPL, in plain torch.nn (weights from files, no downloads).

VGG16 keys follow torchvision's `vgg16().features` layout: features.{0,2,5,7,10,12,14,17,19,21,
24,26,28}.{weight,bias} (classifier.* keys are ignored). Optional LPIPS linear heads use the
layout of LPIPS's `weights/v0.1/vgg.pth`: lin{0..4}.model.1.weight [1, C, 1, 1]; without them every
channel weighs 1/C. The distance is Σ_layers mean_HW Σ_C w_c (f̂₁ − f̂₂)², with f̂ the
features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 normalised to unit length over channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
# LPIPS's input scaling: x in [-1, 1] -> (x - shift) / scale
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def vgg16_features(widths=VGG16_CFG) -> nn.Sequential:
    layers, cin = [], 3
    for w in widths:
        if w == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
            cin = w
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    """d(x, y) [N] for images in [-1, 1]. `widths` lets tests build a tiny stand-in."""

    def __init__(self, widths=VGG16_CFG):
        super().__init__()
        self.features = vgg16_features(widths)
        chans = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        tap_chans = [chans[sum(1 for m in self.features[:t] if isinstance(m, nn.Conv2d)) - 1] for t in TAPS]
        for k, c in enumerate(tap_chans):
            self.register_buffer(f"lin{k}", torch.full((1, c, 1, 1), 1.0 / c))
        self.register_buffer("shift", SHIFT.clone(), persistent=False)
        self.register_buffer("scale", SCALE.clone(), persistent=False)

    def _taps(self, x):
        out = []
        for i, layer in enumerate(self.features[:TAPS[-1] + 1]):
            x = layer(x)
            if i in TAPS:
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        fx = self._taps((x - self.shift) / self.scale)
        fy = self._taps((y - self.shift) / self.scale)
        return sum(((a - b).square() * getattr(self, f"lin{k}")).sum(1).mean((1, 2))
                   for k, (a, b) in enumerate(zip(fx, fy)))


def load_lpips_vgg(vgg_path, lin_path=None) -> LPIPSVGG:
    """LPIPSVGG with torchvision VGG16 weights and, optionally, LPIPS v0.1 linear heads."""
    net = LPIPSVGG()
    sd = _load(vgg_path, "VGG16 weights")
    sd = {k: v for k, v in sd.items() if k.startswith("features.")}
    missing, unexpected = net.features.load_state_dict({k[9:]: v for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"VGG16 weights {vgg_path}: missing {missing[:5]}, unexpected {unexpected[:5]} "
                         "(expected torchvision's vgg16 'features.N.weight' layout)")
    if lin_path is not None:
        lin = _load(lin_path, "LPIPS linear weights")
        for k in range(len(TAPS)):
            key = f"lin{k}.model.1.weight"
            if key not in lin or lin[key].shape != getattr(net, f"lin{k}").shape:
                raise ValueError(f"LPIPS linear weights {lin_path}: need {key} of shape "
                                 f"{list(getattr(net, f'lin{k}').shape)}")
            getattr(net, f"lin{k}").copy_(lin[key])
    return net.eval().requires_grad_(False)


def _load(path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} do not exist")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd)
