"""The original ALAE code's checkpoint layout and forward passes, written from its facts (effective
weights, [1, C, 1, 1] per-channel tensors, official key names), independent of alae_fast. Shared by
test_convert.py and test_official.py."""

import math

import torch
import torch.nn.functional as F


def _widths(cfg):
    """Generator block widths C_i = min(maxf, startf·2^(L−1−i))."""
    return [min(cfg.maxf, cfg.startf * 2 ** (cfg.layer_count - 1 - i)) for i in range(cfg.layer_count)]


def _generator(cfg):
    lat, widths = cfg.latent_size, _widths(cfg)
    keys = [("const", (1, widths[0], 4, 4))]
    for i, c in enumerate(widths):
        cin, p = widths[max(i - 1, 0)], f"decode_block.{i}."
        keys += [(p + name, (1, c, 1, 1)) for name in ("noise_weight_1", "bias_1", "noise_weight_2", "bias_2")]
        if i > 0:
            keys.append((p + "conv_1.weight", (cin, c, 3, 3) if 4 * 2 ** i >= 128 else (c, cin, 3, 3)))
        keys += [(p + "blur.weight", (c, 1, 3, 3)),
                 (p + "style_1.weight", (2 * c, lat)), (p + "style_1.bias", (2 * c,)),
                 (p + "conv_2.weight", (c, c, 3, 3)),
                 (p + "style_2.weight", (2 * c, lat)), (p + "style_2.bias", (2 * c,))]
    for i, c in enumerate(widths):
        keys += [(f"to_rgb.{i}.to_rgb.weight", (cfg.channels, c, 1, 1)),
                 (f"to_rgb.{i}.to_rgb.bias", (cfg.channels,))]
    return keys


def _encoder(cfg):
    lat, keys = cfg.latent_size, []
    widths = [cfg.startf] + [min(cfg.maxf, cfg.startf * 2 ** (j + 1)) for j in range(cfg.layer_count)]
    for j in range(cfg.layer_count):
        keys += [(f"from_rgb.{j}.from_rgb.weight", (widths[j], cfg.channels, 1, 1)),
                 (f"from_rgb.{j}.from_rgb.bias", (widths[j],))]
    for j in range(cfg.layer_count):
        cin, cout, p = widths[j], widths[j + 1], f"encode_block.{j}."
        keys += [(p + "bias_1", (1, cin, 1, 1)), (p + "bias_2", (1, cout, 1, 1)),
                 (p + "conv_1.weight", (cin, cin, 3, 3)), (p + "blur.weight", (cin, 1, 3, 3)),
                 (p + "conv_2.weight", (cout, cin, 3, 3)),
                 (p + "style_1.weight", (lat, 2 * cin)), (p + "style_1.bias", (lat,)),
                 (p + "style_2.weight", (lat, 2 * cout)), (p + "style_2.bias", (lat,))]
    return keys


def _fully_connected(widths):
    return [(f"fc_{k + 1}.{name}", shape) for k, (i, o) in enumerate(zip(widths[:-1], widths[1:]))
            for name, shape in (("weight", (o, i)), ("bias", (o,)))]


def official_keys(cfg) -> dict:
    """{net: [(key, shape), ...]} in the original state_dict order, for a StyleALAE or MNIST-FC cfg."""
    lat = cfg.latent_size
    if cfg.kind == "style":
        nets = {"generator": _generator(cfg), "discriminator": _encoder(cfg)}
    else:
        nets = {"generator": _fully_connected([lat, 1024, 1024, 784]),
                "discriminator": _fully_connected([784, 1024, 1024, lat])}
    nets["mapping_fl"] = [(f"map_blocks.{k}.fc.{name}", shape) for k in range(cfg.mapping_layers)
                          for name, shape in (("weight", (lat, lat)), ("bias", (lat,)))]
    nets["mapping_tl"] = [(f"map_blocks.{k}.{name}", shape) for k, o in enumerate((lat, lat, 2 * lat))
                          for name, shape in (("weight", (o, lat)), ("bias", (o,)))]
    nets["dlatent_avg"] = [("buff", (2 * cfg.layer_count, lat))]
    return nets


def shapes(sd: dict) -> list:
    return [(k, tuple(v.shape)) for k, v in sd.items()]


def random_official(cfg, seed: int) -> dict:
    """An official 'models' dict with random weights (blur kernels as the original saves them), EMA copies.
    Layer weights are N(0, 1/fan_in), so activations keep their scale; everything else N(0, 0.3²)."""
    gen = torch.Generator().manual_seed(seed)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = torch.outer(kernel, kernel) / 16

    def tensor(key, shape):
        if key.endswith("blur.weight"):
            return kernel.expand(*shape).clone()
        layer = key.endswith(".weight") and len(shape) >= 2
        return torch.randn(shape, generator=gen) * (math.prod(shape[1:]) ** -0.5 if layer else 0.3)

    models = {}
    for net, keys in official_keys(cfg).items():
        for suffix in ("", "_s") if net != "dlatent_avg" else ("",):
            models[net + suffix] = {k: tensor(k, s) for k, s in keys}
    models["dlatent_avg"]["buff"] = torch.randn(cfg.latent_size, generator=gen).expand(2 * cfg.layer_count, -1).clone()
    return models


# --- forward passes of the original networks over an official state dict ---

def _fuse(w):
    w = F.pad(w, (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]


def _inorm(x, eps):
    m = x.mean((2, 3), keepdim=True)
    return (x - m) * torch.rsqrt(x.var((2, 3), unbiased=False, keepdim=True) + eps)


def ref_generate(g, ws, lod, noises):
    """G at blend 1. noises[i][k]: the noise map of block i, layer k ([N or 1, 1, H, W]), or None for the
    deterministic term the original adds with noise=False."""
    x = g["const"]
    for i in range(lod + 1):
        p = f"decode_block.{i}."
        if i > 0:
            if 4 * 2 ** i >= 128:
                x = F.conv_transpose2d(x, _fuse(g[p + "conv_1.weight"]), stride=2, padding=1)
            else:
                x = F.conv2d(F.interpolate(x, scale_factor=2), g[p + "conv_1.weight"], padding=1)
            x = F.conv2d(x, g[p + "blur.weight"], padding=1, groups=x.shape[1])
        for k in (1, 2):
            if k == 2:
                x = F.conv2d(x, g[p + "conv_2.weight"], padding=1)
            noise = noises[i][k - 1]
            if noise is None:
                s = math.sqrt(i + 1)
                x = x + s * torch.exp(-x * x / (2 * s * s)) / math.sqrt(2 * math.pi) * 0.8 + g[p + f"bias_{k}"]
            else:
                x = x + g[p + f"noise_weight_{k}"] * noise + g[p + f"bias_{k}"]
            x = _inorm(F.leaky_relu(x, 0.2), 1e-8)
            s = F.linear(ws[:, 2 * i + k - 1], g[p + f"style_{k}.weight"], g[p + f"style_{k}.bias"])
            s = s.view(s.shape[0], 2, x.shape[1], 1, 1)
            x = x * (s[:, 0] + 1) + s[:, 1]
    return F.conv2d(x, g[f"to_rgb.{lod}.to_rgb.weight"], g[f"to_rgb.{lod}.to_rgb.bias"])


def official_noise_shapes(n, lod, batch_constant=False):
    """The original's draws for G at lod: block 0's first noise goes onto the batch-1 constant, so it is
    [1, 1, 4, 4]; every other one is [N, 1, H, W] ([1, 1, H, W] for all with noise='batch_constant')."""
    out = []
    for i in range(lod + 1):
        side = 4 * 2 ** i
        for k in (1, 2):
            out.append((1 if batch_constant or (i, k) == (0, 1) else n, 1, side, side))
    return out


def draw_official_noise(n, lod):
    """noises for ref_generate, drawn from the global RNG in the original's order."""
    draws = [torch.randn(s) for s in official_noise_shapes(n, lod)]
    return [draws[2 * i:2 * i + 2] for i in range(lod + 1)]


def _stats(x):
    m = x.mean((2, 3))
    return torch.cat([m, (x - m[..., None, None]).square().mean((2, 3)).sqrt()], 1)


def ref_encode(e, x, lod, layers):
    first = layers - 1 - lod
    side = x.shape[-1]
    x = F.leaky_relu(F.leaky_relu(F.conv2d(x, e[f"from_rgb.{first}.from_rgb.weight"],
                                           e[f"from_rgb.{first}.from_rgb.bias"]), 0.2), 0.2)
    w = 0
    for j in range(first, layers):
        p = f"encode_block.{j}."
        x = F.leaky_relu(F.conv2d(x, e[p + "conv_1.weight"], padding=1) + e[p + "bias_1"], 0.2)
        s1 = _stats(x)
        x = F.conv2d(_inorm(x, 1e-5), e[p + "blur.weight"], padding=1, groups=x.shape[1])
        if side >= 128:
            x = F.conv2d(x, _fuse(e[p + "conv_2.weight"]) * 0.25, stride=2, padding=1)
        else:
            x = F.avg_pool2d(F.conv2d(x, e[p + "conv_2.weight"], padding=1), 2)
        x = F.leaky_relu(x + e[p + "bias_2"], 0.2)
        s2 = _stats(x)
        x = _inorm(x, 1e-5)
        side //= 2
        w = w + F.linear(s1, e[p + "style_1.weight"], e[p + "style_1.bias"]) \
            + F.linear(s2, e[p + "style_2.weight"], e[p + "style_2.bias"])
    return w


def ref_map(fl, z, layers):
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for k in range(layers):
        x = F.leaky_relu(F.linear(x, fl[f"map_blocks.{k}.fc.weight"], fl[f"map_blocks.{k}.fc.bias"]), 0.2)
    return x


def ref_discriminate(tl, w):
    for k in range(3):
        w = F.linear(w, tl[f"map_blocks.{k}.weight"], tl[f"map_blocks.{k}.bias"])
    return w.view(w.shape[0], 2, -1)[:, 1, 0]  # the official logit


def _linear_stack(sd, x, last_act):
    for k in (1, 2, 3):
        x = F.linear(x, sd[f"fc_{k}.weight"], sd[f"fc_{k}.bias"])
        if k < 3 or last_act:
            x = F.leaky_relu(x, 0.2)
    return x


def ref_fc_encode(e, x):
    """EncoderFC on 28×28 images: a leaky ReLU after every layer, the last one included."""
    return _linear_stack(e, x.flatten(1), last_act=True)


def ref_fc_generate(g, w):
    """GeneratorFC before its resize: no activation after the last layer; [N, 1, 28, 28]."""
    return _linear_stack(g, w, last_act=False).view(-1, 1, 28, 28)
