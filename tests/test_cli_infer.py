"""`alae-fast generate | reconstruct | mix | interpolate | edit` on a tiny random StyleALAE (no training)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from alae_fast import infer
from alae_fast.cli import main
from alae_fast.models import ModelConfig, build_model
from alae_fast.io.checkpoint import save_file
from alae_fast.io.images import to_uint8

CFG = ModelConfig("style", layer_count=3, startf=4, maxf=8, latent_size=8, mapping_layers=2, channels=3)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A run directory saved mid-training (lod 1, blend 0.5) and a converted-format file (full level)."""
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = build_model(CFG)
    with torch.no_grad():
        model.w_avg.normal_()
    weights = {"model": model.state_dict(), "ema": model.state_dict()}
    config = {"name": "tiny", "model": dataclasses.asdict(CFG)}
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_file({"config": {**config, "train": {"dataset": "builtin:digits"}}, "lod": 1, "blend": 0.5, **weights},
              run / "checkpoints" / "ckpt-000000000100.pt")
    save_file({"config": config, **weights}, root / "converted.pt")
    return run, root / "converted.pt"


def grid_size(n: int, ncol: int, res: int, min_side: int = 64, pad: int = 2) -> tuple[int, int]:
    """(width, height) of infer.save_grid's PNG."""
    factor = max(1, math.ceil(min_side / res))
    ncol = min(ncol, n)
    return (ncol * (res + pad) + pad) * factor, (math.ceil(n / ncol) * (res + pad) + pad) * factor


def run_ok(*argv) -> None:
    assert main([*map(str, argv), "--device", "cpu"]) == 0


def size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def test_generate_grid_and_per_seed_files(ckpts, tmp_path):
    run, converted = ckpts
    run_ok("generate", run, "--seeds", "0-5", "--nrow", "3", "--out", tmp_path / "g.png")
    assert size(tmp_path / "g.png") == grid_size(6, 3, 8)  # the run stopped at lod 1: 8x8
    run_ok("generate", converted, "--seeds", "1,5,9", "--psi", "1", "--out-dir", tmp_path / "seeds")
    assert sorted(p.name for p in (tmp_path / "seeds").iterdir()) == ["seed0001.png", "seed0005.png", "seed0009.png"]
    with Image.open(tmp_path / "seeds" / "seed0005.png") as img:
        assert img.size == (16, 16)
        expected = to_uint8(infer.generate(infer.load_model(converted), [5], psi=1.0))[0]
        np.testing.assert_array_equal(np.asarray(img), expected)
    run_ok("generate", converted, "--seeds", "5", "--trunc", "0.5", "--out-dir", tmp_path / "trunc")
    with Image.open(tmp_path / "trunc" / "seed0005.png") as img:  # --trunc is stylegan2-ada's name for --psi
        expected = to_uint8(infer.generate(infer.load_model(converted), [5], psi=0.5))[0]
        np.testing.assert_array_equal(np.asarray(img), expected)


def test_reconstruct_image_folder_and_dataset(ckpts, tmp_path):
    run, converted = ckpts
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((20, 30), 200, np.uint8)).save(folder / "gray.png")  # gray, not square
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "rgb.png")
    (folder / "notes.txt").write_text("not an image")
    run_ok("reconstruct", converted, "--images", folder, "--out", tmp_path / "r.png")
    assert size(tmp_path / "r.png") == grid_size(4, 4, 16)  # 2 (input | reconstruction) pairs in a row
    run_ok("reconstruct", run, "--num", "3", "--nrow", "1", "--out", tmp_path / "d.png")  # the run's dataset
    assert size(tmp_path / "d.png") == grid_size(6, 2, 8)


def test_mix_layer_ranges(ckpts, tmp_path, capsys):
    _, converted = ckpts
    for layers in ("coarse", "2-5"):
        out = tmp_path / f"mix-{layers}.png"
        run_ok("mix", converted, "--row-seeds", "0-1", "--col-seeds", "2-4", "--layers", layers, "--out", out)
        assert size(out) == grid_size(3 * 4, 4, 16)
    assert main(["mix", str(converted), "--layers", "fine", "--device", "cpu"]) == 2
    assert "--layers fine: this model has style layers 0-5" in capsys.readouterr().err


def test_interpolate_grid_and_gif(ckpts, tmp_path):
    _, converted = ckpts
    run_ok("interpolate", converted, "--seeds", "1,2,3", "--steps", "4", "--out", tmp_path / "i.png",
           "--gif", tmp_path / "i.gif")
    assert size(tmp_path / "i.png") == grid_size(8, 4, 16)  # a row per segment
    with Image.open(tmp_path / "i.gif") as gif:
        assert gif.n_frames == 7 and gif.size == (64, 64)  # shared endpoint shown once


def test_edit_along_a_direction(ckpts, tmp_path, capsys):
    run, converted = ckpts
    np.save(tmp_path / "dir.npy", np.ones(8, np.float32))
    run_ok("edit", converted, "--direction", tmp_path / "dir.npy", "--seeds", "0-1", "--strengths=-3,0,3",
           "--layers", "0-1", "--out", tmp_path / "e.png")
    assert size(tmp_path / "e.png") == grid_size(6, 3, 16)
    torch.save(torch.ones(5), tmp_path / "short.pt")
    assert main(["edit", str(run), "--direction", str(tmp_path / "short.pt"), "--device", "cpu"]) == 2
    assert "--direction" in (err := capsys.readouterr().err) and "8 values" in err


@pytest.mark.parametrize("argv, message", [
    (["generate", "--seeds", "5-2"], "argument --seeds: '5-2': range '5-2' ends before it starts"),
    (["generate", "--seeds", "1,x"], "argument --seeds: '1,x'"),
    (["mix", "--layers", "0,2"], "argument --layers: '0,2': expected one range"),
    (["generate", "--batch", "0"], "argument --batch: '0': expected an integer >= 1"),
    (["edit", "--direction", "d.npy", "--strengths", "1,a"], "argument --strengths"),
])
def test_bad_arguments_are_named(ckpts, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main([argv[0], str(ckpts[1]), *argv[1:]])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_missing_checkpoint_is_named(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope"), "--device", "cpu"]) == 2
    assert "nope" in capsys.readouterr().err
