"""The ALAE paper's MNIST representation table: 1-NN and linear-SVM accuracy of E(x) for the MLP ALAE
and the AAE baseline (several seeds each) and of the raw pixels, plus the reconstruction MSE.

Protocol (permutation-invariant MNIST, ℓ = 50): models train on builtin:mnist28-train (50k of the
shuffled 60k training images); the classifiers are fitted on E(train) (or its first --fit-num images)
and scored on E(test), the official 10k test images; the 10k held-out images are not used here.

    python -m benchmarks.mnist_table --seeds 3 --epochs 1 --out benchmarks/results/mnist

(or one process per row: --rows raw_pixels,aae and --rows mlp_alae) writes <out>/table.json,
<out>/table.md, and per run <out>/runs/<model>-seed<k>/ (grids, losses, a
checkpoint; the table keeps seed 0's sample and reconstruction grids beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from alae_fast.data import TensorStream, mnist_protocol
from alae_fast.metrics.classify import encode_features, fit_and_score
from alae_fast.metrics.recon import reconstruction_error
from alae_fast.train import Trainer, load_config, train
from benchmarks.conftest import device_name

MODELS = {"aae": "mnist-aae", "mlp_alae": "mnist-mlp"}  # table key -> built-in config


def mnist_splits() -> dict:
    """{'train': (uint8 [50000, 1, 28, 28], labels), 'test': (uint8 [10000, 1, 28, 28], labels)}."""
    return {split: mnist_protocol(split) for split in ("train", "test")}


def summarise(runs: list[dict], epochs: float, device: str, minutes: float) -> dict:
    """Mean and sample std over seeds of each run's {'nn1', 'svm', 'recon_mse'}."""
    def mean_std(key):
        values = [r[key] for r in runs]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    nn1, nn1_std = mean_std("nn1")
    svm, svm_std = mean_std("svm")
    recon = statistics.fmean(r["recon_mse"] for r in runs) if runs[0]["recon_mse"] is not None else None
    return {"nn1": nn1, "nn1_std": nn1_std, "svm": svm, "svm_std": svm_std, "recon_mse": recon,
            "seeds": len(runs), "epochs": epochs, "device": device, "minutes": round(minutes, 2)}


def scores(train_x: np.ndarray, test_x: np.ndarray, data: dict, fit_num: int | None) -> dict:
    """1-NN and linear-SVM test accuracy of features fitted on (the first fit_num of) the train set."""
    labels = data["train"][1].numpy()
    out = fit_and_score(train_x[:fit_num], labels[:fit_num], test_x, data["test"][1].numpy())
    return {"nn1": out["knn_1nn"], "svm": out["linear_svm"]}


def raw_pixels(data: dict, fit_num: int | None) -> dict:
    flat = {split: images.flatten(1).float().div(255).numpy() for split, (images, _) in data.items()}
    return {**scores(flat["train"], flat["test"], data, fit_num), "recon_mse": None}


def train_and_score(key: str, seed: int, epochs: float, data: dict, out: Path, fit_num: int | None,
                    overrides: dict) -> dict:
    """Train config MODELS[key] for `epochs` with `seed`; score its EMA on the test split."""
    cfg = load_config(MODELS[key])
    for name, value in overrides.items():
        setattr(cfg.model, name, value)
    tc = cfg.train
    tc.seed, tc.epochs, tc.epochs_per_lod = seed, epochs, epochs
    kimg = epochs * len(data["train"][0]) / 1000
    tc.log_kimg = tc.grid_kimg = tc.snapshot_kimg = max(kimg / 4, 0.001)
    # A shortened run would end with the EMA still close to the initial weights: its half-life scales with the run.
    tc.ema_half_life_kimg = min(tc.ema_half_life_kimg, kimg / 20)
    run_dir = out / "runs" / f"{key}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(cfg, run_dir, stream=TensorStream(data["train"][0], seed=seed))
    train(trainer, progress=False, tensorboard=False, text=lambda line: None)
    model = trainer.ema
    train_x = encode_features(model, data["train"][0][:fit_num], lod=0)
    test_x = encode_features(model, data["test"][0], lod=0)
    recon = reconstruction_error(model, data["test"][0], num=len(data["test"][0]), batch=256)
    return {**scores(train_x, test_x, data, fit_num), "recon_mse": recon["mse"], "run": str(run_dir)}


def render(table: dict, n_fit: int, n_test: int) -> str:
    def pct(r, key):
        return f"{100 * r[key]:.2f} ± {100 * r[key + '_std']:.2f}" if r["seeds"] > 1 else f"{100 * r[key]:.2f}"

    rows = ["| features | 1-NN accuracy (%) | linear SVM accuracy (%) | recon. MSE | seeds | epochs | minutes |",
            "|---|---|---|---|---|---|---|"]
    names = {"raw_pixels": "raw pixels (784)", "aae": "AAE E(x) (ℓ = 50)", "mlp_alae": "MLP ALAE E(x) (ℓ = 50)"}
    for key, r in table.items():
        recon = "–" if r["recon_mse"] is None else f"{r['recon_mse']:.4f}"
        rows.append(f"| {names[key]} | {pct(r, 'nn1')} | {pct(r, 'svm')} | {recon} | {r['seeds']} | "
                    f"{r['epochs'] if key != 'raw_pixels' else '–'} | {r['minutes']:.1f} |")
    epochs = table["mlp_alae"]["epochs"]
    rows += ["", f"Accuracy on the official MNIST test set ({n_test} images) of classifiers fitted on the features "
                 f"of {n_fit} training images; mean ± std over seeds; {table['mlp_alae']['device']}. The schedule is "
                 f"shortened to {epochs:g} epoch(s) on CPU; the official one is 400+ epochs."]
    return "\n".join(rows) + "\n"


ROWS = ("raw_pixels", "aae", "mlp_alae")


def build_table(seeds: int, epochs: float, out: Path, data: dict | None = None, fit_num: int | None = None,
                overrides: dict | None = None, rows=ROWS, say=lambda line: print(line, flush=True)) -> dict | None:
    """Compute `rows` (each saved as <out>/row-<name>.json, so separate processes can share the work);
    once all three rows are there, write table.json and table.md and return the table."""
    data = data or mnist_splits()
    out.mkdir(parents=True, exist_ok=True)
    device = f"{device_name(torch.device('cpu'))}, {os.cpu_count()} cores ({torch.get_num_threads()} torch thread(s))"
    for key in rows:
        started = time.perf_counter()
        if key == "raw_pixels":
            runs = [raw_pixels(data, fit_num)]
            say(f"raw pixels: {runs[0]}")
        else:
            runs = []
            for seed in range(seeds):
                runs.append(train_and_score(key, seed, epochs, data, out, fit_num, overrides or {}))
                say(f"{key} seed {seed}: {runs[-1]}")
            for grid in ("samples", "reconstructions"):
                shutil.copy(Path(runs[0]["run"]) / f"{grid}.png", out / f"{key}-{grid}.png")
        row = summarise(runs, 0 if key == "raw_pixels" else epochs, device, (time.perf_counter() - started) / 60)
        (out / f"row-{key}.json").write_text(json.dumps(row, indent=2) + "\n")
    if not all((out / f"row-{key}.json").is_file() for key in ROWS):
        return None
    table = {key: json.loads((out / f"row-{key}.json").read_text()) for key in ROWS}
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "table.md").write_text(render(table, len(data["train"][0][:fit_num]), len(data["test"][0])))
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs per run (the official: 400)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/mnist"))
    p.add_argument("--fit-num", type=int, default=None, help="fit the classifiers on this many training images")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--rows", default=",".join(ROWS),
                   help="comma list of the rows this process computes (the table is written once all exist)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if build_table(args.seeds, args.epochs, args.out, fit_num=args.fit_num, rows=args.rows.split(",")) is not None:
        print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
