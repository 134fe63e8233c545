"""The original ALAE implementation's yacs configs (upper-case NAME, OUTPUT_DIR, DATASET, MODEL,
TRAIN), read into alae_fast's layout. A file lists only what differs from the original's
defaults (DEFAULTS); every other key keeps its default.

How the keys map:
- MODEL.* give the ModelConfig. GeneratorDefault/EncoderDefault is StyleALAE ('style');
  GeneratorFC/EncoderFC is the MNIST MLP ('mlp', 28x28 images, 1024 hidden units, as the
  original hard-codes). MAPPING_D and MAPPING_F are never read by the original Model.
- Batch: TRAIN.LOD_2_BATCH_<n>GPU is the global batch of a run on n GPUs (each takes 1/n
  of it), the same meaning as batch_per_lod. The list for the run's world size is used, as
  the original does; it has lists for 1, 2, 4 and 8 GPUs only.
- Per-level lists (batches, LEARNING_RATES) are indexed by lod; a short list repeats its last
  entry. BASE_LEARNING_RATE has no effect in the original (LEARNING_RATES replaces it before
  the first step), nor does LEARNING_DECAY_RATE without LEARNING_DECAY_STEPS.
- An epoch is DATASET.SIZE images, rounded down to a multiple of PART_COUNT as the original's
  shards are, so EPOCHS_PER_LOD and TRAIN_EPOCHS become kimg_per_lod and total_kimg; the
  original also drops each epoch's last incomplete batch (under one batch per epoch).
- DATASET.PATH, a pattern over resolution level and shard ('<dir>/<name>-r%02d.tfrecords.%03d'),
  becomes its directory; the loaders read every TFRecord level and shard there. A dataset
  source given to the loader (--data) replaces it.
- DATASET.FLIP_IMAGES is `mirror`. MAX_RESOLUTION_LEVEL only has to reach the last level.
- REPORT_FREQ and SNAPSHOT_FREQ are per level; alae_fast has one period each: logs and grids
  as often as the original's most frequent level, checkpoints as rarely as its least frequent
  (ffhq's model has 54M parameters, stored four times: weights, EMA, two Adam moments).
- Keys only the original's data-preparation, figure and metric scripts read (PART_COUNT_TEST,
  SIZE_TEST, FFHQ_SOURCE, STYLE_MIX_PATH, PPL_CELEBA_ADJUSTMENT) are accepted and not used;
  PATH_TEST only to check that its records are not among the training ones. SAMPLES_PATH
  (the original's progress images) is not used: alae_fast's grids show training images.
Settings alae_fast cannot reproduce are named together in one OfficialConfigWarning.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

from alae_fast.data.sources import RECORD_NAME

DEFAULTS = {
    "NAME": "",
    "PPL_CELEBA_ADJUSTMENT": False,
    "OUTPUT_DIR": "results",
    "DATASET.PATH": "celeba/data_fold_%d_lod_%d.pkl",
    "DATASET.PATH_TEST": "",
    "DATASET.FFHQ_SOURCE": "/data/datasets/ffhq-dataset/tfrecords/ffhq/ffhq-r%02d.tfrecords",
    "DATASET.PART_COUNT": 1,
    "DATASET.PART_COUNT_TEST": 1,
    "DATASET.SIZE": 70000,
    "DATASET.SIZE_TEST": 10000,
    "DATASET.FLIP_IMAGES": True,
    "DATASET.SAMPLES_PATH": "dataset_samples/faces/realign128x128",
    "DATASET.STYLE_MIX_PATH": "style_mixing/test_images/set_celeba/",
    "DATASET.MAX_RESOLUTION_LEVEL": 10,
    "MODEL.LAYER_COUNT": 6,
    "MODEL.START_CHANNEL_COUNT": 64,
    "MODEL.MAX_CHANNEL_COUNT": 512,
    "MODEL.LATENT_SPACE_SIZE": 256,
    "MODEL.DLATENT_AVG_BETA": 0.995,
    "MODEL.TRUNCATIOM_PSI": 0.7,  # sic
    "MODEL.TRUNCATIOM_CUTOFF": 8,
    "MODEL.STYLE_MIXING_PROB": 0.9,
    "MODEL.MAPPING_LAYERS": 5,
    "MODEL.CHANNELS": 3,
    "MODEL.GENERATOR": "GeneratorDefault",
    "MODEL.ENCODER": "EncoderDefault",
    "MODEL.MAPPING_D": "MappingD",
    "MODEL.MAPPING_F": "MappingF",
    "MODEL.Z_REGRESSION": False,
    "TRAIN.EPOCHS_PER_LOD": 15,
    "TRAIN.BASE_LEARNING_RATE": 0.0015,
    "TRAIN.ADAM_BETA_0": 0.0,
    "TRAIN.ADAM_BETA_1": 0.99,
    "TRAIN.LEARNING_DECAY_RATE": 0.1,
    "TRAIN.LEARNING_DECAY_STEPS": [],
    "TRAIN.TRAIN_EPOCHS": 110,
    "TRAIN.LOD_2_BATCH_8GPU": [512, 256, 128, 64, 32, 32],
    "TRAIN.LOD_2_BATCH_4GPU": [512, 256, 128, 64, 32, 16],
    "TRAIN.LOD_2_BATCH_2GPU": [256, 256, 128, 64, 32, 16],
    "TRAIN.LOD_2_BATCH_1GPU": [128, 128, 128, 64, 32, 16],
    "TRAIN.SNAPSHOT_FREQ": [300, 300, 300, 100, 50, 30, 20, 20, 10],
    "TRAIN.REPORT_FREQ": [100, 80, 60, 30, 20, 10, 10, 5, 5],
    "TRAIN.LEARNING_RATES": [0.002],
}
SECTIONS = ("DATASET", "MODEL", "TRAIN")
MODEL_KINDS = {("GeneratorDefault", "EncoderDefault"): "style", ("GeneratorFC", "EncoderFC"): "mlp"}
FC_IMAGE_SIDE, FC_HIDDEN = 28, 1024  # fixed in the original's GeneratorFC/EncoderFC


class OfficialConfigWarning(UserWarning):
    """An official config sets something alae_fast trains differently."""


def official_layout(data: dict, where: str) -> bool:
    """True for the original's upper-case layout, False for alae_fast's `model`/`train` one."""
    upper = sorted(k for k in data if isinstance(k, str) and k.isupper())
    if upper and len(upper) < len(data):
        lower = sorted(str(k) for k in data if k not in upper)
        raise ValueError(f"{where}: mixes the original's upper-case keys {upper} with alae_fast keys {lower}; "
                         "use one layout")
    return bool(upper)


class _Reader:
    """The file's values over DEFAULTS, read with the defaults' types; collects the notes."""

    def __init__(self, data: dict, where: str):
        self.where, self.values, self.notes = where, dict(DEFAULTS), []
        unknown = []
        for top, value in data.items():
            if top in SECTIONS:
                if value is None:  # an empty section
                    continue
                if not isinstance(value, dict):
                    raise ValueError(f"{where}: {top} must be a mapping of keys, got {value!r}")
                items = [(f"{top}.{k}", v) for k, v in value.items()]
            else:
                items = [(top, value)]
            for key, v in items:
                if key in DEFAULTS:
                    self.values[key] = v
                else:
                    unknown.append(key)
        if unknown:
            hints = [f"{k} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(k, DEFAULTS, 1))
                     else k for k in unknown]
            raise ValueError(f"{where}: unknown keys {', '.join(hints)}; the original defaults have no such key")

    def __getitem__(self, key: str):
        value, default = self.values[key], DEFAULTS[key]
        number = (int, float)
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
            kind = "a list of numbers"
        elif isinstance(default, number):
            exact, kind = (int, "an integer") if isinstance(default, int) else (number, "a number")
            ok = isinstance(value, exact) and not isinstance(value, bool)
        else:
            ok, kind = isinstance(value, str), "a string"
        if not ok:
            raise ValueError(f"{self.where}: {key} must be {kind} (default {default!r}), got {value!r}")
        return value

    def at_least(self, key: str, minimum: int):
        value = self[key]
        if value < minimum:
            raise ValueError(f"{self.where}: {key} must be >= {minimum}, got {value}")
        return value

    def per_level(self, key: str, levels) -> list:
        """The entries for `levels`; a short list repeats its last entry."""
        values = self[key]
        if not values:
            raise ValueError(f"{self.where}: {key} is empty; give one value per level")
        return [values[min(lod, len(values) - 1)] for lod in levels]

    def note(self, key: str, why: str) -> None:
        self.notes.append(f"{key} ({why})")


def record_dir(pattern: str) -> str | None:
    """The directory of a DATASET.PATH pattern over (level, shard) such as
    '<dir>/<name>-r%02d.tfrecords.%03d', or None when it names files the loaders do not read."""
    path = Path(pattern)
    try:
        name = path.name % (5, 0)
    except (TypeError, ValueError):
        return None
    match = RECORD_NAME.match(name)
    if "%" in str(path.parent) or not match or match.group(1) != "05":
        return None
    return str(path.parent)


def from_official(data: dict, where: str, *, name: str, world_size: int = 1, dataset: str | None = None) -> dict:
    """An official config (a parsed yacs YAML mapping) as alae_fast's config mapping
    {name, output_dir, model, train}. `name` is used when the file has no NAME; `world_size`
    picks TRAIN.LOD_2_BATCH_<world_size>GPU; `dataset` replaces DATASET.PATH."""
    cfg = _Reader(data, where)
    model, levels = _model(cfg)
    train = _train(cfg, levels, model["kind"] == "style", world_size, dataset)
    if cfg.notes:
        warnings.warn(f"{where}: settings of the original that alae_fast does not reproduce: {'; '.join(cfg.notes)}",
                      OfficialConfigWarning, stacklevel=3)
    return {"name": cfg["NAME"] or name, "output_dir": cfg["OUTPUT_DIR"] or None, "model": model, "train": train}


def _model(cfg: _Reader) -> tuple[dict, range | list]:
    """The ModelConfig fields, and the levels the run trains."""
    pair = (cfg["MODEL.GENERATOR"], cfg["MODEL.ENCODER"])
    if pair not in MODEL_KINDS:
        known = ", ".join("/".join(p) for p in MODEL_KINDS)
        raise ValueError(f"{cfg.where}: MODEL.GENERATOR/MODEL.ENCODER {'/'.join(pair)} has no alae_fast model; "
                         f"use one of {known}")
    kind = MODEL_KINDS[pair]
    model = {"kind": kind, "latent_size": cfg["MODEL.LATENT_SPACE_SIZE"], "mapping_layers": cfg["MODEL.MAPPING_LAYERS"],
             "channels": cfg["MODEL.CHANNELS"], "truncation_psi": cfg["MODEL.TRUNCATIOM_PSI"],
             "truncation_cutoff": cfg["MODEL.TRUNCATIOM_CUTOFF"], "style_mixing_prob": cfg["MODEL.STYLE_MIXING_PROB"],
             "w_avg_beta": cfg["MODEL.DLATENT_AVG_BETA"]}
    layers = cfg.at_least("MODEL.LAYER_COUNT", 1)
    top = cfg["DATASET.MAX_RESOLUTION_LEVEL"]
    if top < layers + 1:
        raise ValueError(f"{cfg.where}: DATASET.MAX_RESOLUTION_LEVEL {top} is below the last level's "
                         f"{layers + 1} (MODEL.LAYER_COUNT {layers} trains up to {2 ** (layers + 1)} pixels); "
                         f"set it to {layers + 1} or more")
    per_lod = cfg.at_least("TRAIN.EPOCHS_PER_LOD", 0)
    if kind == "mlp":
        model.update(image_size=FC_IMAGE_SIDE, hidden=FC_HIDDEN)
        if per_lod:
            cfg.note("TRAIN.EPOCHS_PER_LOD", "the MLP trains one level, with the last level's batch and "
                     "learning rate throughout")
        return model, [layers - 1]  # the original runs the FC model at its last lod
    if per_lod == 0:
        raise ValueError(f"{cfg.where}: TRAIN.EPOCHS_PER_LOD 0 (train the last level only) works for GeneratorFC "
                         "only; a StyleALAE grows from 4x4, set it to 1 or more")
    if per_lod % 2:
        cfg.note("TRAIN.EPOCHS_PER_LOD", f"odd: each transition lasts {per_lod / 2:g} epochs, the original's "
                 f"{per_lod // 2}")
    if cfg["MODEL.Z_REGRESSION"]:
        cfg.note("MODEL.Z_REGRESSION", "the latent autoencoder loss regresses w, not z")
    model.update(layer_count=layers, startf=cfg["MODEL.START_CHANNEL_COUNT"], maxf=cfg["MODEL.MAX_CHANNEL_COUNT"])
    return model, range(layers)


def _train(cfg: _Reader, levels, grows: bool, world_size: int, dataset: str | None) -> dict:
    batch_key = f"TRAIN.LOD_2_BATCH_{world_size}GPU"
    if batch_key not in DEFAULTS:
        raise ValueError(f"{cfg.where}: official configs give batches for 1, 2, 4 or 8 GPUs "
                         f"(TRAIN.LOD_2_BATCH_<n>GPU), not for world size {world_size}; train on 1, 2, 4 or 8 "
                         "processes or use an alae_fast config with batch_per_lod")
    batches = cfg.per_level(batch_key, levels)
    if any(not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"{cfg.where}: {batch_key} must hold batch sizes >= 1, got {cfg[batch_key]}")
    parts = cfg.at_least("DATASET.PART_COUNT", 1)
    epoch_kimg = cfg.at_least("DATASET.SIZE", parts) // parts * parts / 1000
    epochs = cfg.at_least("TRAIN.TRAIN_EPOCHS", 1)
    per_lod = cfg["TRAIN.EPOCHS_PER_LOD"] if grows else epochs  # an MLP run is one level
    reports, snapshots = cfg.per_level("TRAIN.REPORT_FREQ", levels), cfg.per_level("TRAIN.SNAPSHOT_FREQ", levels)
    if len(set(reports)) > 1:
        cfg.note("TRAIN.REPORT_FREQ", f"one period for every level: logs and grids every {min(reports):g} kimg")
    if len(set(snapshots)) > 1:
        cfg.note("TRAIN.SNAPSHOT_FREQ", f"one period for every level: checkpoints every {max(snapshots):g} kimg")
    if cfg["TRAIN.LEARNING_DECAY_STEPS"]:
        cfg.note("TRAIN.LEARNING_DECAY_STEPS", "the learning rate follows LEARNING_RATES only, without step decay")
    return {
        "dataset": dataset or _dataset_dir(cfg),
        "mirror": cfg["DATASET.FLIP_IMAGES"],
        "epochs_per_lod": per_lod,
        "epochs": epochs,
        "kimg_per_lod": per_lod * epoch_kimg,
        "total_kimg": epochs * epoch_kimg,
        "batch_per_lod": batches,
        "lr_per_lod": cfg.per_level("TRAIN.LEARNING_RATES", levels),
        "adam_betas": [cfg["TRAIN.ADAM_BETA_0"], cfg["TRAIN.ADAM_BETA_1"]],
        "log_kimg": min(reports),
        "grid_kimg": min(reports),
        "snapshot_kimg": max(snapshots),
    }


def _dataset_dir(cfg: _Reader) -> str:
    """DATASET.PATH's directory; the pattern itself (with a note) when the loaders cannot read it."""
    pattern = cfg["DATASET.PATH"]
    directory = record_dir(pattern)
    if directory is None:
        cfg.note("DATASET.PATH", f"{pattern!r} names no '<name>-r%02d.tfrecords.%03d' TFRecords; pass the "
                 "dataset with --data")
        return pattern
    test = cfg["DATASET.PATH_TEST"]
    if test and test != pattern and record_dir(test) == directory:
        cfg.note("DATASET.PATH_TEST", f"the test records share {directory}, which is read whole: the test "
                 "images would be trained on; move them or pass --data")
    return directory
