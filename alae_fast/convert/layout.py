"""Key map between alae_fast state dicts (StyleALAE, MLPALAE) and the official ALAE networks.

Official layers store effective weights (no runtime scale): official = ours × c for weights (c = the
layer's runtime scale, `weight_gain`) and official = ours × lrmul for biases. Per-channel
parameters are [C] here and [1, C, 1, 1] there. The fused 128²+ transposed conv has the same
[Cin, C, 3, 3] layout on both sides, so it needs no permutation.

D's last layer: the official model reads its logit from output[ℓ] (it views the 2ℓ outputs as
[2, ℓ] and takes [1, 0]); alae_fast reads output[0]. The two halves of that layer's rows are
swapped so both read the same value.

MNIST-FC: the official GeneratorFC/EncoderFC are three linear layers fc_1..fc_3 each; they map to
the blocks 0..2 of MLPALAE's generator/encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from alae_fast.models import ModelConfig, build_model
from alae_fast.models.style_alae import block_channels

NETS = ("generator", "discriminator", "mapping_fl", "mapping_tl")  # G, E, F, D
BLUR_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


@dataclass(frozen=True)
class Entry:
    ours: str                  # key in the alae_fast state dict
    net: str                   # official network (one of NETS)
    official: str              # key in that network's state dict
    scale: float = 1.0         # official = ours × scale
    per_channel: bool = False  # ours [C] <-> official [1, C, 1, 1]
    swap_halves: bool = False  # swap rows [:n/2] and [n/2:] (D's last layer)
    shape: tuple = ()          # shape in the alae_fast state dict

    def official_shape(self) -> tuple:
        return (1, self.shape[0], 1, 1) if self.per_channel else self.shape

    def to_official(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float() * self.scale
        if self.swap_halves:
            t = _swap(t)
        return t.reshape(1, -1, 1, 1) if self.per_channel else t

    def to_ours(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float().reshape(-1) if self.per_channel else t.float()
        if self.swap_halves:
            t = _swap(t)
        return t / self.scale


def _swap(t: torch.Tensor) -> torch.Tensor:
    half = t.shape[0] // 2
    return torch.cat([t[half:], t[:half]])


def _layer(ours: str, net: str, official: str, layer, swap: bool = False) -> list[Entry]:
    """weight (× runtime scale) and bias (× lrmul) of an equalized layer."""
    out = [Entry(f"{ours}.weight", net, f"{official}.weight", layer.weight_gain, swap_halves=swap)]
    if layer.bias is not None:
        out.append(Entry(f"{ours}.bias", net, f"{official}.bias", layer.lrmul, swap_halves=swap))
    return out


def _generator(g) -> list[Entry]:
    out = [Entry("generator.const", "generator", "const")]
    for i, block in enumerate(g.blocks):
        ours, off = f"generator.blocks.{i}", f"decode_block.{i}"
        if i > 0:
            out += _layer(f"{ours}.conv_1", "generator", f"{off}.conv_1", block.conv_1)
        out += _layer(f"{ours}.conv_2", "generator", f"{off}.conv_2", block.conv_2)
        for k in (1, 2):
            adain = getattr(block, f"adain_{k}")
            out += [Entry(f"{ours}.adain_{k}.noise_weight", "generator", f"{off}.noise_weight_{k}", per_channel=True),
                    Entry(f"{ours}.adain_{k}.bias", "generator", f"{off}.bias_{k}", per_channel=True)]
            out += _layer(f"{ours}.adain_{k}.style", "generator", f"{off}.style_{k}", adain.style)
    for i, rgb in enumerate(g.to_rgb):
        out += _layer(f"generator.to_rgb.{i}.conv", "generator", f"to_rgb.{i}.to_rgb", rgb.conv)
    return out


def _encoder(e) -> list[Entry]:
    out = []
    for j, block in enumerate(e.blocks):
        ours, off = f"encoder.blocks.{j}", f"encode_block.{j}"
        for k in (1, 2):
            extract = getattr(block, f"extract_{k}")
            out += _layer(f"{ours}.conv_{k}", "discriminator", f"{off}.conv_{k}", getattr(block, f"conv_{k}"))
            out.append(Entry(f"{ours}.extract_{k}.bias", "discriminator", f"{off}.bias_{k}", per_channel=True))
            out += _layer(f"{ours}.extract_{k}.style", "discriminator", f"{off}.style_{k}", extract.style)
    for j, rgb in enumerate(e.from_rgb):
        out += _layer(f"encoder.from_rgb.{j}.conv", "discriminator", f"from_rgb.{j}.from_rgb", rgb.conv)
    return out


def _fully_connected(mlp, ours: str, net: str) -> list[Entry]:
    out = []
    for k, block in enumerate(mlp.blocks):
        out += _layer(f"{ours}.blocks.{k}", net, f"fc_{k + 1}", block)
    return out


def entries(cfg: ModelConfig) -> list[Entry]:
    """Every learned tensor of the model `cfg` builds (w_avg and blur buffers are handled apart)."""
    with torch.device("meta"):
        model = build_model(cfg)
    out = []
    for k, block in enumerate(model.mapping_f.blocks):
        out += _layer(f"mapping_f.blocks.{k}.fc", "mapping_fl", f"map_blocks.{k}.fc", block.fc)
    last = len(model.mapping_d.blocks) - 1
    for k, layer in enumerate(model.mapping_d.blocks):
        out += _layer(f"mapping_d.blocks.{k}", "mapping_tl", f"map_blocks.{k}", layer, swap=k == last)
    if cfg.kind == "style":
        out += _generator(model.generator) + _encoder(model.encoder)
    else:
        out += (_fully_connected(model.generator, "generator", "generator")
                + _fully_connected(model.encoder, "encoder", "discriminator"))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return [replace(e, shape=shapes[e.ours]) for e in out]


def blur_keys(cfg: ModelConfig) -> dict[str, dict[str, int]]:
    """Official blur buffers {net: {key: channels}}: every decode and encode block has one (none in MNIST-FC)."""
    if cfg.kind != "style":
        return {}
    gen = {f"decode_block.{i}.blur.weight": block_channels(cfg, i) for i in range(cfg.layer_count)}
    enc = {f"encode_block.{j}.blur.weight": block_channels(cfg, cfg.layer_count - 1 - j)
           for j in range(cfg.layer_count)}
    return {"generator": gen, "discriminator": enc}
