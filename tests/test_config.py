"""Configs: the original implementation's yacs files load, map to the official numbers and train;
the built-in configs follow them."""

import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import yaml

from alae_fast.cli import main
from alae_fast.data import TensorStream, load_builtin, make_stream
from alae_fast.data import records
from alae_fast.train import RunConfig, Trainer, load_config
from alae_fast.train.official_config import OfficialConfigWarning, record_dir
from _train_utils import one_thread  # noqa: F401

HERE = Path(__file__).resolve().parent
IN_REPO = HERE / "configs" / "official"
# The six files of the original implementation are not in the repository: the first of these
# folders that exists holds them; without one their tests skip.
FOLDERS = [os.environ.get("ALAE_FAST_OFFICIAL_CONFIGS", ""), HERE.parents[1] / "shared" / "official-configs",
           "/work/shared/official-configs"]
OFFICIAL = next((Path(f) for f in FOLDERS if f and Path(f).is_dir()), Path(FOLDERS[-1]))


def style(layer_count, startf, maxf, latent_size, mapping_layers, channels=3, w_avg_beta=0.995):
    return dict(kind="style", layer_count=layer_count, startf=startf, maxf=maxf, latent_size=latent_size,
                mapping_layers=mapping_layers, channels=channels, w_avg_beta=w_avg_beta)


class Expected(NamedTuple):
    name: str
    model: dict  # ModelConfig fields
    kimg_per_lod: float
    total_kimg: float
    batch_1gpu: list
    batch_8gpu: list
    lr: list
    mirror: bool
    dataset: str
    output_dir: str
    report_kimg: float  # log_kimg and grid_kimg
    snapshot_kimg: float
    adam_betas: tuple = (0.0, 0.99)


FFHQ_LR = [0.0015] * 6 + [0.002, 0.003, 0.003]
EXPECTED = {e.name: e for e in [
    Expected("ffhq", style(9, 16, 512, 512, 8), 960, 18000, [512, 256, 128, 64, 32, 16, 16, 16, 16],
             [512, 256, 128, 64, 32, 32, 32, 32, 32], FFHQ_LR, True,
             "/data/datasets/ffhq-dataset_new/tfrecords/ffhq/splitted", "training_artifacts/ffhq", 5, 300),
    Expected("celeba-hq256", style(7, 64, 512, 512, 8), 30 * 28.992, 280 * 28.992, [128, 128, 128, 64, 32, 16, 16],
             [512, 256, 128, 64, 32, 32, 32], [0.0015] * 7, True, "/data/datasets/celeba-hq/tfrecords",
             "training_artifacts/celeba-hq256", 10, 300),
    Expected("celeba", style(6, 64, 256, 256, 8), 6 * 182.624, 80 * 182.624, [128, 128, 128, 64, 32, 16],
             [512, 256, 128, 64, 32, 32], [0.0015] * 6, True, "/data/datasets/celeba/tfrecords",
             "training_artifacts/celeba", 10, 300),
    Expected("bedroom", style(7, 32, 512, 512, 8), 2 * 758.26, 112 * 758.26, [512, 256, 128, 64, 32, 16, 16],
             [512, 256, 128, 64, 32, 32, 32], [0.0015] * 6 + [0.002], True,
             "/data/datasets/lsun-bedroom-full/splitted", "training_artifacts/bedroom", 10, 300),
    Expected("mnist", style(4, 64, 256, 32, 4, channels=1), 600, 3600, [128, 128, 128, 64], [128, 128, 128, 64],
             [0.0015] * 4, False, "/data/datasets/mnist32/tfrecords", "mnist_results", 30, 300),
    Expected("mnist_fc", dict(kind="mlp", latent_size=50, mapping_layers=6, channels=1, image_size=28, hidden=1024),
             36000, 36000, [128], [1024], [0.002], False, "/data/datasets/mnist_fc/tfrecords", "mnist_results_fc2z_2",
             300, 300),
    # The in-repo files with the same keys (tests/configs/official/); named by NAME or the file.
    Expected("style-rgb", style(3, 8, 16, 16, 3, w_avg_beta=0.99), 4, 20, [8, 4, 4], [64, 32, 16],
             [0.001, 0.0015, 0.002], True, "/datasets/faces/split", "training_artifacts/style-rgb", 60, 300),
    Expected("style_gray", style(2, 8, 16, 8, 2, channels=1), 1.2, 3.6, [4, 4], [16, 8], [0.0015, 0.002], False,
             "/datasets/digits/tfrecords", "gray_results", 80, 300),
    Expected("mlp", dict(kind="mlp", latent_size=12, mapping_layers=3, channels=1, w_avg_beta=0.9), 15, 15, [8],
             [256], [0.001], False, "/datasets/digits_fc/tfrecords", "mlp_results", 20, 40, (0.0, 0.9)),
    Expected("defaults", style(6, 64, 512, 256, 5), 1050, 7700, [128, 128, 128, 64, 32, 16],
             [512, 256, 128, 64, 32, 32], [0.002] * 6, True, "celeba/data_fold_%d_lod_%d.pkl", "results", 10, 300),
]}
OFFICIAL_NAMES = ["ffhq", "celeba-hq256", "celeba", "bedroom", "mnist", "mnist_fc"]
IN_REPO_NAMES = ["style_rgb", "style_gray", "mlp", "defaults"]


def _official(name: str):
    path = OFFICIAL / f"{name}.yaml"
    return pytest.param(path, id=name, marks=pytest.mark.skipif(not path.is_file(), reason=f"no {path}"))


ALL_FILES = [_official(n) for n in OFFICIAL_NAMES] + [pytest.param(IN_REPO / f"{n}.yaml", id=n) for n in IN_REPO_NAMES]


def load(path, **kwargs):
    """(config, messages of the OfficialConfigWarnings raised while loading)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(str(path), **kwargs)
    assert all(issubclass(w.category, OfficialConfigWarning) for w in caught), [str(w.message) for w in caught]
    return cfg, [str(w.message) for w in caught]


def write(tmp_path, data: dict, name="official.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", ALL_FILES)
def test_official_layout_maps_to_the_official_numbers(path):
    cfg, messages = load(path, world_size=1)
    want = EXPECTED[cfg.name]
    assert len(messages) <= 1
    assert {k: getattr(cfg.model, k) for k in want.model} == want.model
    tc = cfg.train
    assert (tc.kimg_per_lod, tc.total_kimg) == (pytest.approx(want.kimg_per_lod), pytest.approx(want.total_kimg))
    assert (tc.batch_per_lod, tc.lr_per_lod, tc.mirror, tc.dataset) == (want.batch_1gpu, want.lr, want.mirror,
                                                                        want.dataset)
    assert (tc.log_kimg, tc.grid_kimg, tc.snapshot_kimg) == (want.report_kimg, want.report_kimg, want.snapshot_kimg)
    assert (cfg.output_dir, tuple(tc.adam_betas)) == (want.output_dir, want.adam_betas)
    assert load(path, world_size=8)[0].train.batch_per_lod == want.batch_8gpu
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", ALL_FILES)
@pytest.mark.usefixtures("one_thread")
def test_official_layout_trains_a_few_steps(path):
    """Full-size models (ffhq: L=9, 512 channels), a batch of 2 at lod 0 on sklearn digits."""
    cfg, _ = load(path, world_size=1)
    cfg.train.batch_per_lod, cfg.train.grid_size = [2], 1
    cfg.train.total_kimg = 0.004  # a smoke run at lod 0: the 32x32 digits need not reach the config's resolution
    digits = load_builtin("digits")[0][:8]
    stream = TensorStream(digits.expand(-1, cfg.model.channels, -1, -1).contiguous(), mirror=cfg.train.mirror)
    trainer = Trainer(cfg, stream=stream)
    for _ in range(2):
        stats = trainer.step()
        assert all(math.isfinite(float(v)) for v in stats.values()), stats
    assert (trainer.images, trainer.phase().lod) == (4, 0)


@pytest.mark.parametrize("name", ["ffhq", "celeba-hq256", "celeba", "bedroom", "mnist"])
def test_builtin_configs_follow_the_official_files(name):
    """The built-ins carry the 8-GPU schedule of the file they mirror, counted in epochs of the data."""
    path = OFFICIAL / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"no {path}")
    builtin, official = load_config(name), load(path, world_size=8)[0]
    assert dataclasses.asdict(builtin.model) == dataclasses.asdict(official.model)
    b, o = builtin.train, official.train
    levels = builtin.model.layer_count
    assert (b.epochs_per_lod, b.epochs, b.mirror) == (o.epochs_per_lod, o.epochs, o.mirror)
    assert b.batch_per_lod == o.batch_per_lod
    assert b.lr_per_lod + b.lr_per_lod[-1:] * (levels - len(b.lr_per_lod)) == o.lr_per_lod
    assert tuple(b.adam_betas) == tuple(o.adam_betas)


def test_builtin_configs_mirror_as_the_originals_do():
    """The original defaults flip images at random; only its mnist files turn that off."""
    for name in ("ffhq", "celeba-hq256", "celeba", "bedroom"):
        assert load_config(name).train.mirror, name
    for name in ("mnist", "mnist-mlp"):
        assert not load_config(name).train.mirror, name


def test_one_warning_names_every_setting_not_reproduced(tmp_path):
    path = write(tmp_path, {"NAME": "x", "MODEL": {"Z_REGRESSION": True},
                            "TRAIN": {"LEARNING_DECAY_STEPS": [20, 40]}})
    cfg, messages = load(path)
    assert len(messages) == 1 and "\n" not in messages[0]
    for key in ("MODEL.Z_REGRESSION", "TRAIN.LEARNING_DECAY_STEPS", "TRAIN.EPOCHS_PER_LOD", "TRAIN.REPORT_FREQ",
                "TRAIN.SNAPSHOT_FREQ", "DATASET.PATH"):
        assert key in messages[0], key
    assert "7.5 epochs, the original's 7" in messages[0]
    assert cfg.train.dataset == "celeba/data_fold_%d_lod_%d.pkl"


def test_a_file_alae_fast_follows_fully_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(str(IN_REPO / "mlp.yaml"))


def test_unknown_official_keys_are_named(tmp_path):
    path = write(tmp_path, {"MODEL": {"LATENT_SPACE_SIZ": 8, "CHANNELS": 1}, "TRANE": {}, "DATASET": {"SIZEE": 3}})
    with pytest.raises(ValueError, match="official.yaml: unknown keys ") as error:
        load_config(str(path))
    for part in ("MODEL.LATENT_SPACE_SIZ (did you mean MODEL.LATENT_SPACE_SIZE?)", "TRANE",
                 "DATASET.SIZEE (did you mean DATASET.SIZE?)"):
        assert part in str(error.value), part
    assert "CHANNELS" not in str(error.value)


@pytest.mark.parametrize("data, error", [
    ({"MODEL": {"LAYER_COUNT": "9"}}, "MODEL.LAYER_COUNT must be an integer .default 6., got '9'"),
    ({"MODEL": {"DLATENT_AVG_BETA": True}}, "MODEL.DLATENT_AVG_BETA must be a number"),
    ({"DATASET": {"FLIP_IMAGES": "no"}}, "DATASET.FLIP_IMAGES must be true or false"),
    ({"TRAIN": {"LEARNING_RATES": 0.002}}, "TRAIN.LEARNING_RATES must be a list of numbers"),
    ({"TRAIN": {"LEARNING_RATES": []}}, "TRAIN.LEARNING_RATES is empty"),
    ({"TRAIN": {"LOD_2_BATCH_1GPU": [16, 0]}}, "TRAIN.LOD_2_BATCH_1GPU must hold batch sizes >= 1"),
    ({"TRAIN": {"EPOCHS_PER_LOD": 0}}, "TRAIN.EPOCHS_PER_LOD 0 .* works for GeneratorFC only"),
    ({"TRAIN": {"EPOCHS_PER_LOD": -2}}, "TRAIN.EPOCHS_PER_LOD must be >= 0"),
    ({"DATASET": {"PART_COUNT": 4, "SIZE": 3}}, "DATASET.SIZE must be >= 4"),
    ({"DATASET": {"MAX_RESOLUTION_LEVEL": 6}}, "MAX_RESOLUTION_LEVEL 6 is below the last level's 7"),
    ({"MODEL": {"ENCODER": "EncoderFC"}}, "GeneratorDefault/EncoderFC has no alae_fast model; use one of "
                                          "GeneratorDefault/EncoderDefault, GeneratorFC/EncoderFC"),
    ({"MODEL": [1, 2]}, "MODEL must be a mapping of keys"),
    ({"model": {"kind": "style"}, "TRAIN": {}}, r"mixes the original's upper-case keys \['TRAIN'\] with "
                                                r"alae_fast keys \['model'\]"),
])
def test_bad_official_values_are_named(tmp_path, data, error):
    with pytest.raises(ValueError, match=error):
        load_config(str(write(tmp_path, data)))


def test_world_size_picks_the_batch_list(monkeypatch):
    path = IN_REPO / "style_rgb.yaml"
    assert load(path, world_size=2)[0].train.batch_per_lod == [16, 8, 8]
    assert load(path, world_size=4)[0].train.batch_per_lod == [32, 16, 8]
    monkeypatch.setenv("WORLD_SIZE", "8")  # torchrun's
    assert load(path)[0].train.batch_per_lod == [64, 32, 16]
    with pytest.raises(ValueError, match="batches for 1, 2, 4 or 8 GPUs .*not for world size 3"):
        load_config(str(path), world_size=3)


@pytest.mark.parametrize("pattern, directory", [
    ("/d/ffhq/splitted/ffhq-r%02d.tfrecords.%03d", "/d/ffhq/splitted"),
    ("relative/x-r%02d.tfrecords.%d", "relative"),
    ("celeba/data_fold_%d_lod_%d.pkl", None),  # the original's pickled folds
    ("/d/r%02d/x-r%02d.tfrecords.%03d", None),  # a directory per level
    ("/d/x-%03d-r%02d.tfrecords", None),  # shard before level
    ("/d/x-r%02d.tfrecords", None),  # no shard: the original formats (level, shard)
])
def test_dataset_path_maps_to_its_record_directory(pattern, directory):
    assert record_dir(pattern) == directory


def test_dataset_override_replaces_the_path_and_its_notes():
    cfg, messages = load(IN_REPO / "style_gray.yaml", dataset="builtin:digits")
    assert cfg.train.dataset == "builtin:digits"
    assert "DATASET.PATH_TEST" not in messages[0]
    native = load_config("tiny", dataset="elsewhere")
    assert native.train.dataset == "elsewhere"


@pytest.mark.usefixtures("one_thread")
def test_official_file_trains_from_the_records_it_names(tmp_path):
    """DATASET.PATH's directory of official-layout TFRecords feeds the Trainer through the loaders."""
    images = load_builtin("digits")[0][:8].numpy()
    for part in range(2):  # 32x32 digits, two shards of level 5
        payload = b"".join(records.frame(records.encode_example(im)) for im in images[part::2])
        (tmp_path / f"digits-r05.tfrecords.{part:03d}").write_bytes(payload)
    data = yaml.safe_load((IN_REPO / "style_gray.yaml").read_text())
    data["DATASET"].update(PATH=str(tmp_path / "digits-r%02d.tfrecords.%03d"), PATH_TEST="")
    cfg, messages = load(write(tmp_path, data, "gray.yaml"))
    assert cfg.train.dataset == str(tmp_path) and not any("DATASET" in m for m in messages)
    stream = make_stream(cfg.train.dataset, loader="torch", num_workers=0, mirror=cfg.train.mirror)
    cfg.train.grid_size = 1
    trainer = Trainer(cfg, stream=stream)
    assert stream.num_images == 8 and np.isfinite(float(trainer.step()["loss_ae"]))


@pytest.mark.usefixtures("one_thread")
def test_cli_trains_an_official_file(tmp_path):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OfficialConfigWarning)
        code = main(["train", "--config", str(IN_REPO / "style_gray.yaml"), "--data", "builtin:digits",
                     "--kimg", "0.008", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0 and (out / "summary.json").is_file()


def test_output_dir_round_trips(tmp_path):
    path = write(tmp_path, {"name": "n", "output_dir": "runs/n", "model": {"kind": "style"}}, "native.yaml")
    cfg = load_config(str(path))
    assert cfg.output_dir == "runs/n" and RunConfig.from_dict(cfg.to_dict()) == cfg
    assert load_config("tiny").output_dir is None
