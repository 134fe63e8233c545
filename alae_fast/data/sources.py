"""Random-access datasets on disk: an image folder or a TFRecord directory.

Both map a sample index to uint8 data (encoded file bytes, or raw CHW pixels); the loaders (streams/torch_stream.py, streams/dali_stream.py) do the rest.
Bad files are screened when the source is opened and written to a report.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import mmap
import os
import re
import stat
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from . import records

log = logging.getLogger("alae_fast.data")
REPORT_NAME = "bad_files.txt"
# Single-channel modes deeper than 8 bits -> the factor that maps them to 0..255. Pillow's own
# convert("L") clips them at 255; these factors are the ones DALI's decoder applies.
HIGH_DEPTH = {**dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N", "I"), 255 / 65535), "F": 255.0}
GRAY_MODES = {"1", "L", "LA", *HIGH_DEPTH}
# Official ALAE: <name>-r<log2 res>.tfrecords[.<part>]; prepare.py writes the same names.
RECORD_NAME = re.compile(r".*-r(\d\d)\.tfrecords(\.\d+)?$")


def write_report(bad, path: Path, what: str) -> None:
    """Write '<reason>\t<path>' lines and warn once with the count and the report's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{reason}\t{p}\n" for p, reason in bad))
    log.warning("%s: skipped %d bad file(s); list in %s", what, len(bad), path)


def failure(exc: Exception, what: str = "undecodable") -> str:
    """The report's reason for a file that failed to open or decode."""
    return f"{what} ({type(exc).__name__}: {exc})"


def default_report_path(root: Path) -> Path:
    """Where a folder's report goes when the caller names no directory: the temp dir, never
    the source tree (one file per folder)."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"alae_fast-bad-files-{digest}.txt"


def _pow2_floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def list_files(root: Path):
    """(files, skipped) under root, sorted. Symlinked folders are followed, each real folder
    once; broken links, link loops, repeated or unreadable folders and special files are
    `skipped` as (path, reason)."""
    files, skipped, seen = [], [], set()

    def walk(folder: Path) -> None:
        real = folder.resolve()
        if real in seen:
            skipped.append((folder, f"symlink to a folder already read ({real})"))
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder, f"unreadable folder ({exc.strerror})"))
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                mode = entry.stat().st_mode  # follows symlinks
            except OSError as exc:
                what = "broken symlink" if entry.is_symlink() else "unreadable"
                skipped.append((path, f"{what} ({'loop' if exc.errno == errno.ELOOP else exc.strerror})"))
                continue
            if stat.S_ISDIR(mode):
                walk(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                skipped.append((path, "not a regular file"))

    walk(root)
    return sorted(files), skipped


def to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """An 8-bit L (channels=1) or RGB image. 16-bit and 32-bit integer grey scale by
    255/65535, float grey by 255, rounded (DALI's rule). Multi-channel 16-bit files reach
    Pillow already reduced to 8 bits (their high byte)."""
    if img.mode in HIGH_DEPTH:
        scaled = np.rint(np.asarray(img, np.float64) * HIGH_DEPTH[img.mode])
        img = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    return img.convert("L" if channels == 1 else "RGB")


def center_crop_resize(img: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """uint8 [channels, R, R]: 8-bit grey/RGB (first frame), center square crop, antialiased
    bilinear resize."""
    img = to_8bit(img, channels)
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    arr = np.asarray(img.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box), np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class FileSource:
    """A folder of images (nested). Output: square center crops at `full_resolution`
    (given, or the largest power of two not above the median shorter side); images with a
    shorter side below it are skipped. Animated images give their first frame.

    Every skipped file is listed as '<reason>\t<path>' in report_dir/bad_files.txt (default:
    default_report_path), written when the folder is screened and appended to when a file
    that passed fails to decode later. The source tree is only read."""

    encoded = True

    def __init__(self, root: Path, resolution: int | None = None, report_dir: Path | None = None):
        self.root = root
        candidates, bad = list_files(root)
        infos = []
        for p in candidates:
            try:
                with Image.open(p) as img:
                    size, mode, fmt = img.size, img.mode, img.format
                    img.verify()
                infos.append((p, min(size), mode, fmt))
            except Exception as exc:  # noqa: BLE001 - any unreadable file is reported
                bad.append((p, failure(exc, "unreadable")))
        if not infos:
            raise ValueError(f"{root}: no readable images among {len(candidates)} file(s)")
        self.full_resolution = resolution or _pow2_floor(int(np.median([s for _, s, _, _ in infos])))
        self.paths, self.formats = [], []
        for p, side, _, fmt in infos:
            if side < self.full_resolution:
                bad.append((p, f"smaller than {self.full_resolution}px"))
            else:
                self.paths.append(p)
                self.formats.append(fmt)
        self.channels = 1 if all(m in GRAY_MODES for _, _, m, _ in infos) else 3
        self.num_images = len(self.paths)
        self.bad = bad
        self.failed: set[int] = set()  # indices that passed screening but failed to decode
        if not self.paths:
            raise ValueError(f"{root}: no image has a shorter side of at least "
                             f"{self.full_resolution}px")
        self.report_path = Path(report_dir) / REPORT_NAME if report_dir else default_report_path(root)
        if bad:
            write_report(bad, self.report_path, f"image folder {root}")
        else:
            self.report_path.unlink(missing_ok=True)  # a stale list from an earlier run

    def report_bad(self, index: int, reason: str) -> None:
        """A file that passed screening but failed to decode: skip it from now on, list it."""
        if index in self.failed:
            return
        self.failed.add(index)
        self.bad.append((self.paths[index], reason))
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.report_path, "a") as f:
            f.write(f"{reason}\t{self.paths[index]}\n")
        log.warning("skipped %s: %s; list in %s", self.paths[index], reason, self.report_path)

    def read(self, index: int) -> np.ndarray:
        """The file's bytes."""
        return np.fromfile(self.paths[index], np.uint8)

    def decode(self, index: int) -> np.ndarray:
        """uint8 CHW at full_resolution with Pillow (center crop, antialiased bilinear)."""
        with Image.open(self.paths[index]) as img:
            return center_crop_resize(img, self.full_resolution, self.channels)


class RecordSource:
    """TFRecord files, one set per resolution level, same image order in every level.
    A level's records are parsed when it is first used; later reads are slices that cannot fail."""

    encoded = False
    failed = frozenset()

    def __init__(self, root: Path):
        levels = defaultdict(list)
        for p in sorted(root.iterdir()):
            match = RECORD_NAME.match(p.name)
            if match:
                levels[1 << int(match.group(1))].append(p)
        manifest = root / "prepare.json"
        if manifest.exists() and not json.loads(manifest.read_text()).get("complete"):
            raise ValueError(f"{root}: alae-fast prepare did not finish here; run it again "
                             "to resume")
        if not levels:
            raise ValueError(f"{root}: no TFRecord files named <name>-rXX.tfrecords[.NNN]")
        self.root = root
        self.full_resolution = max(levels)
        self._files = dict(levels)
        self._index: dict[int, list] = {}
        sizes = {res: len(self._entries(res)) for res in levels}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{root}: levels hold different image counts {sizes}")
        self.num_images = sizes[self.full_resolution]
        if not self.num_images:
            raise ValueError(f"{root}: the TFRecord files hold no images")
        self.channels = int(self.read(0, self.full_resolution).shape[0])

    def _entries(self, res: int) -> list[np.ndarray]:
        """Every image of a level as a zero-copy view into the memory-mapped files,
        parsed once when the level is first used (reads are then plain slices)."""
        if res not in self._index:
            images = []
            for path in self._files[res]:
                entries = records.scan(path)
                if not entries:
                    continue
                with open(path, "rb") as f:
                    buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
                for off, n in entries:
                    try:
                        images.append(records.decode_example(buf[off:off + n]))
                    except ValueError as exc:
                        raise ValueError(f"{path}: record at byte {off - 12}: {exc}") from None
            self._index[res] = images
        return self._index[res]

    def level_for(self, res: int) -> int:
        """The smallest stored level >= res (lower resolutions are box-filtered from it)."""
        return min(r for r in self._files if r >= res)

    def report_bad(self, index: int, reason: str) -> None:
        raise ValueError(f"{self.root}: record {index} is unreadable ({reason}); "
                         "re-run alae-fast prepare")

    def read(self, index: int, level: int) -> np.ndarray:
        return self._entries(level)[index]


def open_source(path: Path, report_dir: Path | None = None):
    """A RecordSource if the directory holds TFRecords, else a FileSource whose bad-file
    report goes to report_dir/bad_files.txt (default: default_report_path)."""
    if path.is_dir() and any(RECORD_NAME.match(p.name) for p in path.iterdir()):
        return RecordSource(path)
    if not path.is_dir():
        raise ValueError(f"make_stream: {path} is not a directory")
    return FileSource(path, report_dir=report_dir)
