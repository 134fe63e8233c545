"""Run configs: YAML with a `model` section (alae_fast.models.ModelConfig) and a `train`
section (TrainConfig), or one of the original implementation's yacs configs (official_config).
Built-in configs live in alae_fast/configs/<name>.yaml."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from alae_fast.models import ModelConfig
from alae_fast.train.official_config import from_official, official_layout


@dataclass
class TrainConfig:
    dataset: str = "builtin:digits"  # make_stream source: path, builtin:<name>
    # Length of each level and of the run: in epochs of the dataset, or in kimg (wins if set).
    epochs_per_lod: float = 1.0
    epochs: float = 1.0
    kimg_per_lod: float | None = None
    total_kimg: float | None = None
    batch_per_lod: list = field(default_factory=lambda: [32])  # global batch (all ranks)
    lr_per_lod: list = field(default_factory=lambda: [0.0015])
    adam_betas: tuple = (0.0, 0.99)
    adam_eps: float = 1e-8
    r1_gamma: float = 10.0
    r1_interval: int = 1  # lazy R1: every k D steps, scaled by k
    max_bad_steps: int = 25  # stop after this many consecutive iterations with a non-finite loss or gradient
    fid_inception: str | None = None  # Inception weights (see alae-fast metrics fid): FID of the EMA at snapshots
    fid_images: int = 10000  # generated and real images per snapshot FID
    ema_half_life_kimg: float = 10.0
    mirror: bool = False
    seed: int = 0
    log_kimg: float = 1.0
    grid_kimg: float = 10.0
    snapshot_kimg: float = 50.0
    keep_checkpoints: int = 3
    grid_size: int = 8  # images per grid row

    def images_per_lod(self, num_images: int) -> int:
        if self.kimg_per_lod is not None:
            return max(1, round(self.kimg_per_lod * 1000))
        return max(1, round(self.epochs_per_lod * num_images))

    def total_images(self, num_images: int) -> int:
        if self.total_kimg is not None:
            return max(1, round(self.total_kimg * 1000))
        return max(1, round(self.epochs * num_images))


@dataclass
class RunConfig:
    model: ModelConfig
    train: TrainConfig
    name: str = "custom"
    output_dir: str | None = None  # where a run writes when no output directory is given

    def to_dict(self) -> dict:
        return {"name": self.name, "output_dir": self.output_dir, "model": dataclasses.asdict(self.model),
                "train": _plain(dataclasses.asdict(self.train))}

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "RunConfig":
        extra = set(data) - {"name", "output_dir", "model", "train"}
        if extra:
            raise ValueError(f"{where}: unknown top-level keys {sorted(extra)}")
        model = ModelConfig.from_dict(data.get("model") or {}, f"{where}: model")
        train = _build(TrainConfig, data.get("train") or {}, f"{where}: train")
        return cls(model=model, train=train, name=data.get("name", "custom"), output_dir=data.get("output_dir"))


def _plain(obj):
    """Tuples to lists so the dict is YAML/weights_only friendly."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    values = dict(values)
    if "adam_betas" in values:
        values["adam_betas"] = tuple(values["adam_betas"])
    return cls(**values)


def available_configs() -> list[str]:
    files = resources.files("alae_fast").joinpath("configs").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load_config(name_or_path: str, *, world_size: int | None = None, dataset: str | None = None) -> RunConfig:
    """A built-in config by name (e.g. 'mnist', 'ffhq') or a YAML file path, in alae_fast's layout
    or the original implementation's (e.g. its configs/ffhq.yaml).

    world_size: the number of training processes; it picks an official file's
    TRAIN.LOD_2_BATCH_<n>GPU list (default: $WORLD_SIZE as torchrun sets it, else 1).
    dataset: a dataset source that replaces the config's (the CLI's --data)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text, where, default_name = path.read_text(), str(path), path.stem
    else:
        res = resources.files("alae_fast").joinpath("configs", f"{name_or_path}.yaml")
        if not res.is_file():
            raise ValueError(f"unknown config {name_or_path!r}; built-in configs: "
                             f"{', '.join(available_configs())} (or pass a .yaml path)")
        text, where, default_name = res.read_text(), f"configs/{name_or_path}.yaml", name_or_path
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping at the top level")
    if official_layout(data, where):
        processes = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
        data = from_official(data, where, name=default_name, world_size=processes, dataset=dataset)
    data.setdefault("name", default_name)
    cfg = RunConfig.from_dict(data, where)
    if dataset is not None:
        cfg.train.dataset = dataset
    return cfg


def with_overrides(cfg: RunConfig, assignments) -> RunConfig:
    """A copy of cfg with `section.key=value` assignments applied (values parsed as YAML), rebuilt so that
    every value is validated as in a config file: `train.r1_interval=4`, `model.latent_size=256`."""
    data = cfg.to_dict()
    for text in assignments:
        key, sep, value = str(text).partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in ("model", "train"):
            raise ValueError(f"--set {text!r}: expected model.<key>=<value> or train.<key>=<value>")
        known = {f.name for f in dataclasses.fields(ModelConfig if section == "model" else TrainConfig)}
        if name not in known:
            raise ValueError(f"--set {text!r}: {section} has no key {name!r}; known: {', '.join(sorted(known))}")
        data[section][name] = yaml.safe_load(value)
    return RunConfig.from_dict(data, "--set")
