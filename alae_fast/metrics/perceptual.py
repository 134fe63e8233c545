"""LPIPS v0.1 with a VGG16 trunk (Zhang et al., 2018), the distance of StyleGAN's and ALAE's PPL.

d(x, y) = Σ_k mean_HW Σ_C w_kc (f̂_k(x) − f̂_k(y))², with f̂_k the trunk's features at relu1_2,
relu2_2, relu3_3, relu4_3 and relu5_3, each normalised to unit length over channels, and w_k the
published linear heads. Both come from files (no downloads):

- trunk: torchvision's VGG16 state_dict (`torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1")
  .state_dict(), path)`, i.e. torchvision's vgg16-397923af.pth): keys features.{0,2,5,7,10,12,14,17,
  19,21,24,26,28}.{weight,bias}; classifier.* keys are ignored.
- heads: LPIPS's weights/v0.1/vgg.pth (lin{0..4}.model.1.weight, [1, C, 1, 1], non-negative), found in
  the installed `lpips` package (`pip install --no-deps lpips==0.1.4`; it is read, never imported) or
  given as a file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from alae_fast.metrics.weights import load_into, load_state_dict_file

VGG16_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
# LPIPS's input scaling: x in [-1, 1] -> (x - SHIFT) / SCALE
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
VGG_EXPECTED = "torchvision's vgg16 state_dict (features.N.weight/bias, e.g. vgg16-397923af.pth)"
HEADS_EXPECTED = "LPIPS's weights/v0.1/vgg.pth (lin0..lin4.model.1.weight)"


def vgg16_features(widths=VGG16_WIDTHS) -> nn.Sequential:
    """torchvision's vgg16().features layout: 3x3 conv + ReLU per width, 2x2 max pool per "M"."""
    layers, cin = [], 3
    for w in widths:
        if w == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
            cin = w
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    """d(x, y) -> [N] for images [N, 3 or 1, H, W] in [-1, 1] (1 channel is repeated to 3).

    heads: five non-negative [1, C_k, 1, 1] tensors, one per tap. `widths` sets the trunk's conv widths
    ("M" = max pool); the default is VGG16's, narrower ones serve tests.
    """

    def __init__(self, heads, widths=VGG16_WIDTHS):
        super().__init__()
        self.features = vgg16_features(widths)[:TAPS[-1] + 1]
        tap_channels = [next(m.out_channels for m in reversed(self.features[:t]) if isinstance(m, nn.Conv2d))
                        for t in TAPS]
        heads = list(heads)
        if len(heads) != len(TAPS):
            raise ValueError(f"LPIPSVGG: argument 'heads' must hold {len(TAPS)} tensors, got {len(heads)}")
        for k, (head, c) in enumerate(zip(heads, tap_channels)):
            if tuple(head.shape) != (1, c, 1, 1):
                raise ValueError(f"LPIPSVGG: heads[{k}] must have shape [1, {c}, 1, 1], got {list(head.shape)}")
            if (head < 0).any():
                raise ValueError(f"LPIPSVGG: heads[{k}] has negative weights; LPIPS heads are non-negative")
            self.register_buffer(f"lin{k}", head.detach().float().clone())
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPSVGG: arguments 'x' and 'y' must both be [N, 1 or 3, H, W], "
                             f"got {list(x.shape)} and {list(y.shape)}")
        h = (torch.cat([x, y]).expand(-1, 3, -1, -1) - self.shift) / self.scale  # one trunk pass for both
        dist = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                unit = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10)
                fx, fy = unit.chunk(2)
                dist = dist + ((fx - fy).square() * getattr(self, f"lin{TAPS.index(i)}")).sum(1).mean((1, 2))
        return dist


def installed_lpips_heads(net: str = "vgg") -> Path | None:
    """The v0.1 heads file shipped in the installed `lpips` package, or None. The package is located,
    not imported (importing it needs torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


def load_lpips_heads(path=None) -> list[torch.Tensor]:
    """The five VGG heads from `path`, or from the installed lpips package when path is None."""
    if path is None:
        path = installed_lpips_heads()
        if path is None:
            raise ValueError("no LPIPS heads given and the lpips package is not installed; give "
                             f"{HEADS_EXPECTED}, or install it: python3 -m pip install --no-deps lpips==0.1.4")
    state = load_state_dict_file(path, "LPIPS heads", HEADS_EXPECTED)
    keys = [f"lin{k}.model.1.weight" for k in range(len(TAPS))]
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"LPIPS heads {path} lack {', '.join(missing)}; give {HEADS_EXPECTED}")
    return [state[k] for k in keys]


def load_vgg_trunk(net: LPIPSVGG, path) -> LPIPSVGG:
    """net with its trunk read from a torchvision VGG16 file, in eval mode without gradients."""
    state = load_state_dict_file(path, "VGG16 weights", VGG_EXPECTED)
    load_into(net.features, state, "features.", "VGG16 weights", path, VGG_EXPECTED)
    return net.eval().requires_grad_(False)


def load_lpips_vgg(vgg_path, heads_path=None) -> LPIPSVGG:
    """LPIPSVGG from a torchvision VGG16 file and LPIPS's v0.1 heads (default: the installed lpips package's)."""
    return load_vgg_trunk(LPIPSVGG(load_lpips_heads(heads_path)), vgg_path)
