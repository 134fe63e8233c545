"""The original code's networks (its net.py) on alae_fast's fused ops.

Class names, constructor signatures, attributes, forward signatures and state_dict layout are the
original's: weights are stored as effective weights (no runtime scale), per-channel parameters
are [1, C, 1, 1], blur kernels are saved buffers, and parameters register in the original order
(so official optimizer states line up). Each weight and bias carries `lr_equalization_coef`, the
step scale the original LREQAdam reads, and construction draws the same initial weights from the
torch RNG as the original. The generator's epilogues run on ops.modulated_adain, the encoder's on
ops.style_extract, the progressive blends on ops.blend_up / ops.blend_down; every op runs on the
default backend (alae_fast.ops.set_default_impl).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from alae_fast import ops
from alae_fast import nn as fast_nn
from alae_fast.models.mapping import SLOPE, pixel_norm
from alae_fast.models.style_alae import FUSED_RESOLUTION, draw_noise

FC_SIDE, FC_HIDDEN = 28, 1024  # the fixed sizes of the original EncoderFC / GeneratorFC


class Registry(dict):
    """name -> class, like the original registries; `@REGISTRY.register(name)` adds a class."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        def add(cls):
            if name in self:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self[name] = cls
            return cls
        return add

    def __missing__(self, name):
        raise KeyError(f"alae_fast.official has no {self.kind} {name!r}; it provides {sorted(self)} "
                       "(the original's ablation-only networks are not included)")


GENERATORS, ENCODERS, MAPPINGS = Registry("generator"), Registry("encoder"), Registry("mapping")


def _effective(make, fan_in: int, gain: float, lrmul: float):
    """An alae_fast layer built by make() with a unit runtime scale, initialised as the original lreq layer:
    its weight is the effective weight, drawn N(0, gain²/fan_in) from the torch RNG as the original draws
    it (one draw per layer, in construction order), its bias zero."""
    with torch.device("meta"):  # no other draw may touch the RNG
        layer = make()
    layer.to_empty(device=torch.get_default_device())
    coef = gain / math.sqrt(fan_in) * lrmul
    with torch.no_grad():
        layer.weight.normal_(0.0, coef / lrmul)
        if layer.bias is not None:
            layer.bias.zero_()
    layer.weight.lr_equalization_coef = coef
    if layer.bias is not None:
        layer.bias.lr_equalization_coef = lrmul
    return layer


def lreq_linear(in_features: int, out_features: int, gain: float = math.sqrt(2.0), lrmul: float = 1.0):
    """The original lreq.Linear: an EqualizedLinear whose runtime scale is 1."""
    return _effective(lambda: fast_nn.EqualizedLinear(in_features, out_features, gain=math.sqrt(in_features)),
                      in_features, gain, lrmul)


def lreq_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
              gain: float = math.sqrt(2.0), up: bool = False, down: bool = False):
    """The original lreq.Conv2d / ConvTranspose2d (same padding; up/down: its transform_kernel resampling)."""
    fan_in = in_channels * kernel_size ** 2
    return _effective(lambda: fast_nn.EqualizedConv2d(in_channels, out_channels, kernel_size, bias,
                                                      gain=math.sqrt(fan_in), up=up, down=down),
                      fan_in, gain, 1.0)


def _per_channel(channels: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(1, channels, 1, 1))


def _without_noise(x: torch.Tensor, layer: int) -> torch.Tensor:
    """x plus the deterministic term an original decode block adds in place of noise (noise=False)."""
    s = math.sqrt(layer + 1)
    return x + s * torch.exp(-x * x / (2 * s * s)) / math.sqrt(2 * math.pi) * 0.8


def _keep_sizes(net: nn.Module, startf, maxf, layer_count, latent_size, channels) -> None:
    """The size attributes every original generator and encoder keeps."""
    net.startf, net.maxf, net.layer_count = startf, maxf, layer_count
    net.latent_size, net.channels = latent_size, channels


class Blur(fast_nn.Blur):
    """The [1,2,1] blur, with its kernel saved in the state dict as the original does."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.register_buffer("weight", self.weight)


class DecodeBlock(nn.Module):
    def __init__(self, inputs, outputs, latent_size, has_first_conv=True, fused_scale=True, layer=0):
        super().__init__()
        self.has_first_conv, self.inputs, self.fused_scale, self.layer = has_first_conv, inputs, fused_scale, layer
        if has_first_conv:
            self.conv_1 = lreq_conv(inputs, outputs, 3, bias=False, up=fused_scale)
        self.blur = Blur(outputs)
        self.noise_weight_1 = _per_channel(outputs)
        self.bias_1 = _per_channel(outputs)
        self.style_1 = lreq_linear(latent_size, 2 * outputs, gain=1)
        self.conv_2 = lreq_conv(outputs, outputs, 3, bias=False)
        self.noise_weight_2 = _per_channel(outputs)
        self.bias_2 = _per_channel(outputs)
        self.style_2 = lreq_linear(latent_size, 2 * outputs, gain=1)

    def _epilogue(self, x, w, noise, noise_weight, bias, style):
        """noise, bias, lrelu, instance norm, style_mod. x may be the batch-1 constant: the original
        then draws one noise map and broadcasts, so that map is shared by the batch."""
        batch = 1 if noise == "batch_constant" else x.shape[0]
        x = x.expand(w.shape[0], -1, -1, -1)
        if noise:
            maps = draw_noise(x, batch)
        else:
            x = _without_noise(x, self.layer)
            maps = x.new_zeros(1, 1, *x.shape[2:]).expand(x.shape[0], -1, -1, -1)
        return ops.modulated_adain(x, maps, noise_weight.view(-1), bias.view(-1), style(w))

    def forward(self, x, s1, s2, noise):
        if self.has_first_conv:
            if not self.fused_scale:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.blur(self.conv_1(x))
        x = self._epilogue(x, s1, noise, self.noise_weight_1, self.bias_1, self.style_1)
        x = self.conv_2(x)
        return self._epilogue(x, s2, noise, self.noise_weight_2, self.bias_2, self.style_2)


class ToRGB(nn.Module):
    def __init__(self, inputs, channels):
        super().__init__()
        self.inputs, self.channels = inputs, channels
        self.to_rgb = lreq_conv(inputs, channels, 1, gain=0.03)

    def forward(self, x):
        return self.to_rgb(x)


class FromRGB(nn.Module):
    def __init__(self, channels, outputs):
        super().__init__()
        self.from_rgb = lreq_conv(channels, outputs, 1)

    def forward(self, x):
        return F.leaky_relu(self.from_rgb(x), SLOPE)


@GENERATORS.register("GeneratorDefault")
class Generator(nn.Module):
    def __init__(self, startf=32, maxf=256, layer_count=3, latent_size=128, channels=3):
        super().__init__()
        _keep_sizes(self, startf, maxf, layer_count, latent_size, channels)
        widths = [min(maxf, startf * 2 ** (layer_count - 1 - i)) for i in range(layer_count)]
        self.const = nn.Parameter(torch.ones(1, widths[0], 4, 4))
        self.layer_to_resolution = [4 * 2 ** i for i in range(layer_count)]
        self.style_sizes = [s for i, c in enumerate(widths) for s in (2 * widths[max(i - 1, 0)], 2 * c)]
        to_rgb = nn.ModuleList()
        self.decode_block = nn.ModuleList()
        for i, outputs in enumerate(widths):
            self.decode_block.append(DecodeBlock(widths[max(i - 1, 0)], outputs, latent_size, i != 0,
                                                 fused_scale=self.layer_to_resolution[i] >= FUSED_RESOLUTION, layer=i))
            to_rgb.append(ToRGB(outputs, channels))
        self.to_rgb = to_rgb

    def _blocks(self, styles, count, noise):
        x = self.const
        for i in range(count):
            x = self.decode_block[i](x, styles[:, 2 * i], styles[:, 2 * i + 1], noise)
        return x

    def decode(self, styles, lod, noise):
        return self.to_rgb[lod](self._blocks(styles, lod + 1, noise))

    def decode2(self, styles, lod, blend, noise):
        x = self._blocks(styles, lod, noise)
        low = self.to_rgb[lod - 1](x)
        high = self.to_rgb[lod](self.decode_block[lod](x, styles[:, 2 * lod], styles[:, 2 * lod + 1], noise))
        return ops.blend_up(low, high, blend)

    def forward(self, styles, lod, blend, noise):
        return self.decode(styles, lod, noise) if blend == 1 else self.decode2(styles, lod, blend, noise)


class EncodeBlock(nn.Module):
    def __init__(self, inputs, outputs, latent_size, last=False, fused_scale=True):
        super().__init__()
        if last:
            raise ValueError("EncodeBlock: argument 'last' must be False; the dense last block of the "
                             "original's ablation encoders is not provided")
        self.last, self.fused_scale = last, fused_scale
        self.conv_1 = lreq_conv(inputs, inputs, 3, bias=False)
        self.bias_1 = _per_channel(inputs)
        self.blur = Blur(inputs)
        self.conv_2 = lreq_conv(inputs, outputs, 3, bias=False, down=fused_scale)
        self.bias_2 = _per_channel(outputs)
        self.style_1 = lreq_linear(2 * inputs, latent_size)
        self.style_2 = lreq_linear(2 * outputs, latent_size)

    def forward(self, x):
        """-> (x, w1, w2): bias, lrelu, (mean | std) statistics and instance norm fused, twice."""
        x, stats_1 = ops.style_extract(self.conv_1(x), self.bias_1.view(-1))
        x = self.conv_2(self.blur(x))
        if not self.fused_scale:
            x = F.avg_pool2d(x, 2)
        x, stats_2 = ops.style_extract(x, self.bias_2.view(-1))
        return x, self.style_1(stats_1), self.style_2(stats_2)


@ENCODERS.register("EncoderDefault")
class EncoderDefault(nn.Module):
    def __init__(self, startf, maxf, layer_count, latent_size, channels=3):
        super().__init__()
        _keep_sizes(self, startf, maxf, layer_count, latent_size, channels)
        self.from_rgb = nn.ModuleList()
        self.encode_block = nn.ModuleList()
        inputs, resolution = startf, 2 ** (layer_count + 1)
        for i in range(layer_count):
            outputs = min(maxf, startf * 2 ** (i + 1))
            self.from_rgb.append(FromRGB(channels, inputs))
            self.encode_block.append(EncodeBlock(inputs, outputs, latent_size, False,
                                                 fused_scale=resolution >= FUSED_RESOLUTION))
            inputs, resolution = outputs, resolution // 2

    def _blocks(self, x, first, styles):
        for block in self.encode_block[first:]:
            x, s1, s2 = block(x)
            styles = styles + (s1 + s2)
        return styles[:, None]

    def encode(self, x, lod):
        """-> styles [N, 1, ℓ]. from_rgb's leaky ReLU is applied twice, as in the original."""
        first = self.layer_count - lod - 1
        return self._blocks(F.leaky_relu(self.from_rgb[first](x), SLOPE), first, 0)

    def encode2(self, x, lod, blend):
        first = self.layer_count - lod - 1
        h, s1, s2 = self.encode_block[first](F.leaky_relu(self.from_rgb[first](x), SLOPE))
        rgb = self.from_rgb[first + 1].from_rgb
        h = ops.blend_down(x.to(h.dtype), rgb.weight.flatten(1), rgb.bias, h, blend)
        return self._blocks(h, first + 1, s1 * blend + s2 * blend)

    def forward(self, x, lod, blend):
        return self.encode(x, lod) if blend == 1 else self.encode2(x, lod, blend)


class MappingBlock(nn.Module):
    def __init__(self, inputs, output, lrmul):
        super().__init__()
        self.fc = lreq_linear(inputs, output, lrmul=lrmul)

    def forward(self, x):
        return F.leaky_relu(self.fc(x), SLOPE)


@MAPPINGS.register("MappingD")
class MappingD(nn.Module):
    """D. Its logit is output[:, 0, ℓ] of the last layer's 2ℓ outputs."""

    def __init__(self, mapping_layers=5, latent_size=256, dlatent_size=256, mapping_fmaps=256):
        super().__init__()
        self.mapping_layers = mapping_layers
        self.map_blocks = nn.ModuleList()
        inputs = latent_size
        for i in range(mapping_layers):
            outputs = 2 * dlatent_size if i == mapping_layers - 1 else mapping_fmaps
            self.map_blocks.append(lreq_linear(inputs, outputs, lrmul=0.1))
            inputs = outputs

    def forward(self, x):
        for block in self.map_blocks:
            x = block(x)
        return x[:, 0, x.shape[2] // 2]


@MAPPINGS.register("MappingF")
class MappingF(nn.Module):
    """F: z [N, ℓ] -> w repeated per generator layer [N, num_layers, ℓ]."""

    def __init__(self, num_layers, mapping_layers=5, latent_size=256, dlatent_size=256, mapping_fmaps=256):
        super().__init__()
        self.mapping_layers, self.num_layers = mapping_layers, num_layers
        self.map_blocks = nn.ModuleList()
        inputs = dlatent_size
        for i in range(mapping_layers):
            outputs = latent_size if i == mapping_layers - 1 else mapping_fmaps
            self.map_blocks.append(MappingBlock(inputs, outputs, lrmul=0.1))
            inputs = outputs

    def forward(self, x):
        x = pixel_norm(x)
        for block in self.map_blocks:
            x = block(x)
        return x[:, None].repeat(1, self.num_layers, 1)


@ENCODERS.register("EncoderFC")
class EncoderFC(nn.Module):
    """MNIST-FC E: images resized (nearest) to 28×28, then three linear layers, each with a leaky ReLU."""

    def __init__(self, startf, maxf, layer_count, latent_size, channels=3):
        super().__init__()
        _keep_sizes(self, startf, maxf, layer_count, latent_size, channels)
        self.fc_1 = lreq_linear(FC_SIDE * FC_SIDE, FC_HIDDEN)
        self.fc_2 = lreq_linear(FC_HIDDEN, FC_HIDDEN)
        self.fc_3 = lreq_linear(FC_HIDDEN, latent_size)

    def encode(self, x, lod):
        """-> [N, ℓ] (not [N, 1, ℓ] as EncoderDefault; Model.encode accepts both)."""
        x = F.interpolate(x, FC_SIDE).flatten(1)
        for fc in (self.fc_1, self.fc_2, self.fc_3):
            x = F.leaky_relu(fc(x), SLOPE)
        return x

    def forward(self, x, lod, blend):
        return self.encode(x, lod)


@GENERATORS.register("GeneratorFC")
class GeneratorFC(nn.Module):
    """MNIST-FC G: three linear layers (no activation after the last) to a 28×28 image, resized
    (nearest) to 4·2^lod."""

    def __init__(self, startf=32, maxf=256, layer_count=3, latent_size=128, channels=3):
        super().__init__()
        _keep_sizes(self, startf, maxf, layer_count, latent_size, channels)
        self.fc_1 = lreq_linear(latent_size, FC_HIDDEN)
        self.fc_2 = lreq_linear(FC_HIDDEN, FC_HIDDEN)
        self.fc_3 = lreq_linear(FC_HIDDEN, FC_SIDE * FC_SIDE)
        self.layer_to_resolution = [FC_SIDE] * 10

    def decode(self, x, lod, blend_factor, noise):
        if x.dim() == 3:
            x = x[:, 0]
        x = F.leaky_relu(self.fc_1(x), SLOPE)
        x = self.fc_3(F.leaky_relu(self.fc_2(x), SLOPE))
        return F.interpolate(x.view(-1, 1, FC_SIDE, FC_SIDE), 2 ** (2 + lod))

    def forward(self, x, lod, blend_factor, noise):
        return self.decode(x, lod, blend_factor, noise)
