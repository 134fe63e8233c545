"""Loss logging: CSV always, TensorBoard when installed, and a PNG plot of the curves."""

from __future__ import annotations

import csv
from pathlib import Path


class LossLog:
    """Rows of scalars keyed by kimg. Only create one on the main rank."""

    def __init__(self, out_dir, tensorboard: bool = True, resume_kimg: float | None = None):
        """resume_kimg: keep the existing CSV rows up to this kimg (those after the resumed
        checkpoint are dropped); None starts a fresh log."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / "losses.csv"
        self.rows: list[dict] = []
        self._fields = None
        old = _read_csv(self.csv_path) if resume_kimg is not None else []
        self.csv_path.unlink(missing_ok=True)
        for row in old:
            if row["kimg"] <= resume_kimg + 1e-9:
                self._append(row)
        self._tb = _tensorboard_writer(self.out_dir / "tb") if tensorboard else None

    def log(self, kimg: float, values: dict) -> None:
        row = {"kimg": round(kimg, 4), **{k: float(v) for k, v in values.items()}}
        self._append(row)
        if self._tb is not None:
            step = int(round(kimg * 1000))
            for k, v in row.items():
                if k != "kimg":
                    self._tb.add_scalar(k, v, step)

    def _append(self, row: dict) -> None:
        if self._fields is None:
            self._fields = list(row)
        self.rows.append(row)
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def plot(self, path=None, keys=("loss_d", "loss_g", "loss_ae", "r1")) -> Path | None:
        """Save the loss curves (one panel per key) as a PNG; None before the first row."""
        if not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in keys if k in self.rows[0]]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        kimg = [r["kimg"] for r in self.rows]
        for ax, key in zip(axes[0], keys):
            ax.plot(kimg, [r[key] for r in self.rows], lw=1)
            ax.set_title(key)
            ax.set_xlabel("kimg")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(path or self.out_dir / "losses.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))
