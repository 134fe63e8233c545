import json

import pytest
import yaml

from alae_fast.cli import main
from alae_fast.train import available_configs, load_config
from _train_utils import mlp_config_file, one_thread  # noqa: F401


def test_builtin_configs_load_with_official_numbers():
    names = set(available_configs())
    assert {"mnist-mlp", "mnist", "celeba", "celeba-hq256", "bedroom", "ffhq", "tiny", "demo"} <= names
    for name in {"mnist", "celeba", "celeba-hq256", "bedroom", "ffhq"}:
        cfg = load_config(name)
        if cfg.model.kind == "style":
            assert len(cfg.train.batch_per_lod) == cfg.model.layer_count, name
    ffhq = load_config("ffhq")
    assert (ffhq.model.layer_count, ffhq.model.startf, ffhq.model.maxf, ffhq.model.latent_size) == (9, 16, 512, 512)
    assert ffhq.train.lr_per_lod[6:] == [0.002, 0.003, 0.003] and ffhq.train.epochs == 300
    mlp = load_config("mnist-mlp")
    assert (mlp.model.kind, mlp.model.latent_size, mlp.model.mapping_layers, mlp.train.lr_per_lod) == (
        "mlp", 50, 6, [0.002])


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"kind": "style"}, "train": {"epochs_per_lodd": 1}}))
    with pytest.raises(ValueError, match="bad.yaml.*epochs_per_lodd"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        load_config("nope")


@pytest.mark.usefixtures("one_thread")
def test_demo_short_run_then_inference(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--kimg", "0.1", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    for name in ("samples.png", "reconstructions.png", "mixing.png", "losses.png", "summary.json"):
        assert (out / name).is_file(), name
    assert "1-NN" in capsys.readouterr().out
    for cmd in ("generate", "reconstruct", "mix", "interpolate"):
        png = tmp_path / f"{cmd}.png"
        assert main([cmd, str(out), "--out", str(png), "--device", "cpu"]) == 0
        assert png.is_file()


@pytest.mark.usefixtures("one_thread")
def test_train_command_and_resume(tmp_path, capsys):
    cfg = mlp_config_file(tmp_path / "t.yaml")
    args = ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    run = tmp_path / "run"
    for name in ("losses.csv", "log.txt", "summary.json", "training_options.json"):
        assert (run / name).is_file(), name
    assert "loss_ae" in (run / "log.txt").read_text() and "kimg" in (run / "log.txt").read_text()
    # A fresh run into it is refused, naming --resume; nothing is touched.
    before = (run / "losses.csv").read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (run / "losses.csv").read_text() == before
    assert main(args + ["--resume", "--kimg", "0.064"]) == 0
    assert (run / "checkpoints" / "ckpt-000000000064.pt").is_file()
    options = json.loads((run / "training_options.json").read_text())
    assert options["config"]["model"]["kind"] == "mlp" and len(options["resumes"]) == 1


@pytest.mark.usefixtures("one_thread")
def test_numbered_run_directories_and_resume_of_the_newest(tmp_path, capsys):
    cfg = mlp_config_file(tmp_path / "t.yaml")
    base = ["train", "--config", str(cfg), "--outdir", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"]
    assert main(base) == 0 and main(base) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["00000-t", "00001-t"]
    assert main(base + ["--resume", "--kimg", "0.064"]) == 0
    assert (tmp_path / "runs" / "00001-t" / "checkpoints" / "ckpt-000000000064.pt").is_file()
    assert not (tmp_path / "runs" / "00000-t" / "checkpoints" / "ckpt-000000000064.pt").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs


def test_train_errors_are_one_line_with_the_fix(tmp_path, capsys):
    cfg = mlp_config_file(tmp_path / "t.yaml")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--data" in err and "prepare" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main(["train", "--config", str(cfg), "--resume", str(tmp_path / "missing.pt")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_dry_run_shows_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    cfg = mlp_config_file(tmp_path / "t.yaml")
    argv = ["train", "--config", str(cfg), "--outdir", str(tmp_path / "runs"), "--dry-run", "--batch", "4",
            "--snap", "0.5", "--gamma", "5", "--mirror", "1", "--set", "train.r1_interval=4",
            "--set", "model.latent_size=12"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out[:out.index("run directory:")])
    assert shown["train"]["batch_per_lod"] == [4] and shown["train"]["snapshot_kimg"] == 0.5
    assert shown["train"]["r1_gamma"] == 5 and shown["train"]["mirror"] is True
    assert shown["train"]["r1_interval"] == 4 and shown["model"]["latent_size"] == 12
    assert f"run directory: {tmp_path / 'runs' / '00000-t'}" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("setting,message", [
    ("train.r1_intervall=4", "train has no key 'r1_intervall'"),
    ("r1_interval=4", "expected model.<key>=<value>"),
    ("model.kind=gan", "argument 'kind' must be one of"),
])
def test_bad_set_is_one_line(tmp_path, capsys, setting, message):
    argv = ["train", "--config", str(mlp_config_file(tmp_path / "t.yaml")), "--dry-run", "--set", setting]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("one_thread")
def test_gpus_launches_one_process_per_rank(tmp_path):
    """--gpus 2 on the CPU: two gloo ranks under a torchrun launched for the user; only rank 0 writes."""
    import subprocess
    import sys

    cfg = mlp_config_file(tmp_path / "t.yaml")
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "alae_fast.cli", "train", "--config", str(cfg), "--out", str(run),
                           "--gpus", "2", "--device", "cpu", "--no-progress"], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 ranks" in (run / "log.txt").read_text()
    assert (run / "checkpoints" / "ckpt-000000000032.pt").is_file()
