"""Run logs: losses.csv (one row per interval), log.txt (the console lines), TensorBoard when
installed, and a PNG plot of the loss curves. Only create them on the main rank."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

# Columns in order; others a run adds come after them. img_per_s and mem_gb depend on timing and
# the machine, every other column is reproduced exactly by a resumed run.
FIELDS = ("kimg", "lod", "blend", "loss_d", "r1", "loss_g", "loss_ae", "skipped", "nonfinite", "img_per_s", "mem_gb")
TIMING_FIELDS = ("img_per_s", "mem_gb")
LOSSES = ("loss_d", "r1", "loss_g", "loss_ae")


class LossLog:
    """Rows of scalars keyed by kimg."""

    def __init__(self, out_dir, tensorboard: bool = True, resume_kimg: float | None = None):
        """resume_kimg: keep the existing CSV rows up to this kimg (those after the resumed checkpoint
        are dropped, in one atomic rewrite); None starts a fresh log."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / "losses.csv"
        self.rows: list[dict] = []
        self.fields = list(FIELDS)
        old = read_csv(self.csv_path) if resume_kimg is not None else []
        self.rows = [row for row in old if row["kimg"] <= resume_kimg + 1e-9]
        for row in self.rows:
            self.fields += [k for k in row if k not in self.fields]
        self._rewrite()
        self._tb = _tensorboard_writer(self.out_dir / "tb") if tensorboard else None

    def log(self, kimg: float, values: dict) -> dict:
        row = {"kimg": round(kimg, 4), **{k: float(v) for k, v in values.items()}}
        self.rows.append(row)
        if any(k not in self.fields for k in row):
            self.fields += [k for k in row if k not in self.fields]
            self._rewrite()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            step = int(round(kimg * 1000))
            for k, v in row.items():
                if k != "kimg":
                    self._tb.add_scalar(k, v, step)
        return row

    def _rewrite(self) -> None:
        """The whole CSV, replaced atomically (a kill leaves the old or the new file, never a mix)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.csv_path)

    def plot(self, path=None, keys=LOSSES) -> Path | None:
        """Save the loss curves (one panel per key) as a PNG; None before the first row."""
        keys = [k for k in keys if any(k in r for r in self.rows)]
        if not self.rows or not keys:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, key in zip(axes[0], keys):
            pts = [(r["kimg"], r[key]) for r in self.rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
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


class TextLog:
    """Console lines, also appended to <run>/log.txt."""

    def __init__(self, out_dir, echo=print):
        self.path = Path(out_dir) / "log.txt"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    def __call__(self, line: str) -> None:
        self.echo(line)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def format_row(row: dict) -> str:
    """One plain-text log line: kimg, lod, every loss, skipped updates, img/s, memory."""
    parts = [f"kimg {row['kimg']:9.3f}", f"lod {int(row['lod'])}"]
    if row.get("blend", 1.0) < 1.0:
        parts.append(f"blend {row['blend']:.3f}")
    parts += [f"{k} {row[k]:.4g}" for k in LOSSES if k in row]
    if row.get("skipped") or row.get("nonfinite"):
        parts.append(f"skipped {int(row['skipped'])} nonfinite {int(row['nonfinite'])}")
    parts.append(f"img/s {row['img_per_s']:.1f}")
    if row.get("mem_gb") is not None:
        parts.append(f"mem {row['mem_gb']:.2f} GB")
    return "  ".join(parts)


class GrowthWatch:
    """Warns once per loss whose interval mean grows past `factor` × its smallest earlier magnitude
    (at least 1): the sign of a run that is diverging."""

    def __init__(self, factor: float = 1e3):
        self.factor, self.smallest, self.warned = factor, {}, set()

    def check(self, row: dict) -> list[str]:
        notes = []
        for key in LOSSES:
            value = row.get(key)
            if value is None or not math.isfinite(value):
                continue
            base = self.smallest.get(key)
            if base is not None and abs(value) > self.factor * max(base, 1.0) and key not in self.warned:
                self.warned.add(key)
                notes.append(f"warning: {key} grew to {value:.4g} (it was {base:.4g}); training is diverging: "
                             "lower the learning rate or resume from an earlier checkpoint")
            self.smallest[key] = abs(value) if base is None else min(base, abs(value))
        return notes


def read_csv(path: Path) -> list[dict]:
    """Rows of a losses.csv; a torn last line (a kill mid-append: no final newline) is dropped."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    return [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(io.StringIO(text))]


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir))
