"""alae_fast.data on CPU: streams, file loaders, prepare, bad data, resume."""

import hashlib
import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alae_fast.data import TensorStream, load_builtin, make_stream
from alae_fast.cli import main as cli_main
from alae_fast.data import prepare, records, sources, streams
from alae_fast.data.sources import FileSource

FILE_LOADERS = ["torch", "dali-cpu"]


def _need(loader):
    if loader.startswith("dali"):
        pytest.importorskip("nvidia.dali")


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits")


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, digits):
    """24 real digits (grey PNG / RGB JPEG / 64px RGB PNG, nested) + 5 bad files."""
    root = tmp_path_factory.mktemp("src")
    (root / "a" / "b").mkdir(parents=True)
    images = digits[0][:24, 0].numpy()
    for i, img in enumerate(images):
        sub = root / ("a/b" if i % 3 == 0 else "a" if i % 3 == 1 else "")
        pil = Image.fromarray(img)
        if i % 4 == 0:
            pil.save(sub / f"{i:02d}.png")
        elif i % 4 == 1:
            pil.convert("RGB").save(sub / f"{i:02d}.jpg", quality=95)
        elif i % 4 == 2:
            pil.convert("RGB").resize((64, 48), Image.Resampling.BICUBIC).save(sub / f"{i:02d}.png")
        else:
            pil.convert("RGB").save(sub / f"{i:02d}.png")
    buf = io.BytesIO()
    Image.fromarray(images[0]).convert("RGB").save(buf, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[:-40])
    (root / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(images[1][:8, :8]).save(root / "tiny.png")
    return root


def _id_folder(root: Path, n=12) -> Path:
    """PNGs of constant grey 10*i: the mean pixel names the sample."""
    root.mkdir()
    for i in range(n):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(root / f"{i}.png")
    return root


def _ids(batch):
    return ((batch.mean((1, 2, 3)) + 1) * 127.5 / 10).round().long().tolist()


# --- TensorStream ------------------------------------------------------------------

def test_tensor_stream_values_and_box_filter(digits):
    images = digits[0][:64]
    s = TensorStream(images, seed=3)
    x = s.next_batch(64)
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    order = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x, images[order].float() / 127.5 - 1)
    s.set_resolution(8)
    y = s.next_batch(64)  # epoch 1: a new permutation
    order1 = torch.randperm(64, generator=torch.Generator().manual_seed(4))
    box = F.avg_pool2d(F.avg_pool2d(images[order1].float(), 2), 2) / 127.5 - 1
    torch.testing.assert_close(y, box)
    with pytest.raises(ValueError, match="resolution 12"):
        s.set_resolution(12)


def test_tensor_stream_shards_each_sample_once_per_epoch():
    n, world = 10, 3
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    for epoch in range(2):
        seen = []
        for rank in range(world):
            s = TensorStream(images, rank=rank, world_size=world, seed=5)
            share = len(range(rank, n, world))
            if epoch:
                s.next_batch(share)  # skip epoch 0
            batch = s.next_batch(share)
            seen += ((batch[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
        assert sorted(seen) == list(range(n))


def test_tensor_stream_resume_is_exact(digits, tmp_path):
    s = TensorStream(digits[0][:50], mirror=True, seed=1, rank=1, world_size=2)
    s.set_resolution(16)
    for _ in range(4):
        s.next_batch(7)
    torch.save(s.state_dict(), tmp_path / "state.pt")
    expected = [s.next_batch(7) for _ in range(5)]
    t = TensorStream(digits[0][:50], mirror=True, seed=1, rank=1, world_size=2)
    t.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for e in expected:
        torch.testing.assert_close(t.next_batch(7), e, rtol=0, atol=0)
    bad = TensorStream(digits[0][:50], seed=2, rank=1, world_size=2)
    with pytest.raises(ValueError, match="seed"):
        bad.load_state_dict(s.state_dict())


def test_mirror_flips_some_images(digits):
    plain = TensorStream(digits[0][:32]).next_batch(32)
    mirrored = TensorStream(digits[0][:32], mirror=True).next_batch(32)
    same = (plain == mirrored).flatten(1).all(1)
    flipped = (plain.flip(3) == mirrored).flatten(1).all(1)
    assert (same | flipped).all() and 0 < flipped.sum() < 32


# --- file loaders -------------------------------------------------------------------

@pytest.mark.parametrize("loader", FILE_LOADERS)
def test_bad_files_are_skipped_and_reported(loader, folder, tmp_path, caplog):
    _need(loader)
    before = _tree_hash(folder)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        s = make_stream(folder, loader=loader, mirror=True, report_dir=run,
                        num_workers=0 if loader == "torch" else 2)
        assert s.channels == 3 and s.full_resolution == 32
        x = torch.cat([s.next_batch(10) for _ in range(6)])  # 2.5 epochs
    assert x.shape == (60, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert s.source.report_path == run / "bad_files.txt"
    listed = [Path(line.split("\t")[1]).name for line in s.source.report_path.read_text().splitlines()]
    # Each once, though read in every epoch; truncated.jpg passes screening and fails to decode.
    assert sorted(listed) == ["garbage.jpg", "notes.txt", "tiny.png", "truncated.jpg", "truncated.png"]
    assert any("bad file" in r.message and str(run) in r.message for r in caplog.records)
    assert any("truncated.jpg: undecodable" in r.message for r in caplog.records)
    assert _tree_hash(folder) == before  # the source is only read


def test_report_without_report_dir_says_where_it_went(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        s = make_stream(folder, loader="torch", num_workers=0)
    assert s.source.report_path == sources.default_report_path(folder)
    assert any(str(s.source.report_path) in r.message for r in caplog.records)
    assert folder not in s.source.report_path.parents  # never inside the source tree


# --- unusual files: 16-bit, float, GIF, symlinks ------------------------------------

def _png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 [H, W] or [H, W, 3], written by hand (Pillow writes no 16-bit RGB)."""
    h, w = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RAMP16 = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)


@pytest.fixture(scope="module")
def special(tmp_path_factory):
    """32x32 files Pillow's defaults or DALI's decoder get wrong -> expected RGB means in [-1, 1]
    (x / 65535 for 16 bits, x for float, the first frame of an animated GIF)."""
    root = tmp_path_factory.mktemp("special")
    flat = np.ones((32, 32))
    Image.fromarray(np.full((32, 32), 40, np.uint8)).save(root / "ref.png")
    Image.fromarray(RAMP16).save(root / "grey16.png")  # Pillow mode I;16
    Image.fromarray(np.full((32, 32), 45000, np.uint16)).save(root / "grey16.tif")
    Image.fromarray(np.full((32, 32), 0.8, np.float32)).save(root / "float.tif")
    (root / "rgb16.png").write_bytes(_png16(np.stack([flat * 10000, flat * 30000, flat * 50000], -1)))
    frames = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (90, 220)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.fromarray(np.full((32, 32), 150, np.uint8)).save(root / "still.gif")
    grey = {"ref.png": 40 / 255, "grey16.png": RAMP16.mean() / 65535, "grey16.tif": 45000 / 65535,
            "float.tif": 0.8, "animated.gif": 90 / 255, "still.gif": 150 / 255}
    expected = {name: [2 * v - 1] * 3 for name, v in grey.items()}
    expected["rgb16.png"] = [2 * v / 65535 - 1 for v in (10000, 30000, 50000)]
    return root, expected


def _epoch(root, loader, **kw):
    """One epoch of a folder (loader 'prepare': its records) -> (batch, file name per sample)."""
    if loader == "prepare":
        out = root.parent / f"{root.name}-prepared"
        if not out.exists():
            assert _prepare(root, out, "--resolution", "32") == 0
        stream = make_stream(out, loader="torch", num_workers=0, **kw)
    else:
        stream = make_stream(root, loader=loader, num_workers=0, **kw)
    names = [p.name for p in FileSource(root).paths]
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))
    return stream.next_batch(len(names)), [names[i] for i in order]


@pytest.mark.parametrize("loader", FILE_LOADERS + ["prepare"])
def test_high_depth_and_gif_files_scale_right(loader, special):
    _need(loader)
    root, expected = special
    before = _tree_hash(root)
    batch, names = _epoch(root, loader)
    assert batch.shape == (7, 3, 32, 32)
    want = torch.tensor([expected[n] for n in names], dtype=torch.float32)
    # One 8-bit level: 16-bit values are rounded to 8 bits (Pillow truncates 16-bit RGB).
    torch.testing.assert_close(batch.mean((2, 3)), want, rtol=0, atol=1 / 127.5 + 1e-6)
    assert _tree_hash(root) == before


def test_dali_cpu_and_torch_agree_on_high_depth_and_gif_files(special):
    _need("dali-cpu")
    root, _ = special
    a, names = _epoch(root, "torch")
    b, _ = _epoch(root, "dali-cpu")
    diff = (a - b).abs().amax((1, 2, 3))
    for name, d in zip(names, diff.tolist()):  # same rounding; Pillow truncates 16-bit RGB
        assert d <= (1 / 127.5 + 1e-6 if name == "rgb16.png" else 0), name


def test_high_depth_grey_is_rounded_like_dali():
    want = np.rint(RAMP16 / 257.0)
    for img in (Image.fromarray(RAMP16), Image.frombytes("I;16B", (32, 32), RAMP16.astype(">u2").tobytes()),
                Image.fromarray(RAMP16.astype(np.int32)), Image.fromarray((RAMP16 / 65535).astype(np.float32))):
        assert np.array_equal(np.asarray(sources.to_8bit(img, 1)), want), img.mode
        assert np.array_equal(np.asarray(sources.to_8bit(img, 3))[..., 1], want), img.mode


def test_dali_decodes_files_it_rejects_with_pillow(tmp_path, monkeypatch, caplog):
    """Files in a DALI format that DALI's decoder still rejects (here: GIFs, claimed native)
    are found one by one, decoded with Pillow from then on, and the batches are those of the
    torch loader."""
    _need("dali-cpu")
    from alae_fast.data.streams import dali_stream as dali

    root = _id_folder(tmp_path / "ids", n=6)
    for i in range(6, 9):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(root / f"{i}.gif")
    monkeypatch.setattr(dali, "DALI_FORMATS", dali.DALI_FORMATS | {"GIF"})
    kw = dict(mirror=True, seed=2, report_dir=tmp_path / "run")
    want = make_stream(root, loader="torch", num_workers=0, **kw)
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        got = make_stream(root, loader="dali-cpu", **kw)
        for _ in range(4):
            torch.testing.assert_close(got.next_batch(4), want.next_batch(4), rtol=0, atol=0)
    gifs = {i for i, p in enumerate(got.source.paths) if p.suffix == ".gif"}
    assert got._via_pillow == gifs
    assert sorted(r.message for r in caplog.records if "DALI cannot decode" in r.message) == [
        f"DALI cannot decode {root / f'{i}.gif'}; decoding it with Pillow" for i in range(6, 9)]
    assert not got.source.bad and not (tmp_path / "run").exists()  # nothing was skipped


@pytest.mark.parametrize("loader", FILE_LOADERS + ["prepare"])
def test_symlinks_followed_or_reported(loader, tmp_path):
    _need(loader)
    root = _id_folder(tmp_path / "src", n=4)
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "elsewhere" / "9.png")
    os.symlink(tmp_path / "elsewhere", root / "linked")  # a folder link: followed
    os.symlink("0.png", root / "alias.png")  # a file link: read
    os.symlink("missing.png", root / "dangling.png")
    os.symlink("loop_b.png", root / "loop_a.png")
    os.symlink("loop_a.png", root / "loop_b.png")
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")  # a folder loop
    before = _tree_hash(root)
    if loader == "prepare":
        assert _prepare(root, tmp_path / "out", "--resolution", "8") == 0
        report = tmp_path / "out" / "bad_files.txt"
        stream = make_stream(tmp_path / "out", loader="torch", num_workers=0)
    else:
        stream = make_stream(root, loader=loader, num_workers=0, report_dir=tmp_path / "run")
        report = tmp_path / "run" / "bad_files.txt"
    assert sorted(_ids(stream.next_batch(6))) == [0, 0, 1, 2, 3, 9]
    reasons = dict(reversed(line.split("\t")) for line in report.read_text().splitlines())
    assert reasons == {str(root / "dangling.png"): "broken symlink (No such file or directory)",
                       str(root / "loop_a.png"): "broken symlink (loop)",
                       str(root / "loop_b.png"): "broken symlink (loop)",
                       str(root / "sub" / "up"): f"symlink to a folder already read ({root.resolve()})"}
    assert _tree_hash(root) == before


def test_dali_cpu_matches_torch_loader(folder):
    _need("dali-cpu")
    a = make_stream(folder, loader="torch", num_workers=0).next_batch(24)
    b = make_stream(folder, loader="dali-cpu").next_batch(24)
    diff = (a - b).abs()
    # Same order; differences come from JPEG decoders and resize implementations.
    assert diff.mean() < 0.02 and diff.amax((1, 2, 3)).max() < 0.35


@pytest.mark.parametrize("loader", FILE_LOADERS)
def test_file_loaders_shard_each_sample_once_per_epoch(loader, tmp_path):
    _need(loader)
    root = _id_folder(tmp_path / "ids")
    for epoch in range(2):
        seen = []
        for rank in range(3):
            s = make_stream(root, loader=loader, rank=rank, world_size=3, num_workers=0)
            share = len(range(rank, 12, 3))
            if epoch:
                s.next_batch(share)
            seen += _ids(s.next_batch(share))
        assert sorted(seen) == list(range(12))


@pytest.mark.parametrize("loader", FILE_LOADERS)
def test_file_loader_resume_is_exact(loader, folder, tmp_path):
    _need(loader)
    kw = dict(loader=loader, mirror=True, seed=4, num_workers=0)
    s = make_stream(folder, **kw)
    s.next_batch(5)
    s.set_resolution(16)
    s.next_batch(9)
    torch.save(s.state_dict(), tmp_path / "s.pt")
    expected = [s.next_batch(9) for _ in range(4)]
    t = make_stream(folder, **kw)
    t.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for e in expected:
        torch.testing.assert_close(t.next_batch(9), e, rtol=0, atol=0)


def test_missing_or_empty_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_stream(tmp_path / "missing", loader="torch")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        make_stream(tmp_path / "empty", loader="torch")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable images"):
        make_stream(tmp_path / "text", loader="torch")
    with pytest.raises(ValueError, match="loader="):
        make_stream(tmp_path, loader="fast")


def test_auto_explains_fallback_once(digits, tmp_path, caplog, monkeypatch):
    root = _id_folder(tmp_path / "ids", n=4)
    monkeypatch.setattr(streams, "_explained", set())
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        make_stream(root)
        make_stream(root)
    notes = [r.message for r in caplog.records if "make_stream" in r.message]
    assert len(notes) == 1 and ("no GPU" in notes[0] or "DALI not installed" in notes[0])
    assert isinstance(make_stream("builtin:digits"), TensorStream)


# --- prepare and TFRecords ----------------------------------------------------------

def _prepare(src, out, *extra):
    return cli_main(["prepare", str(src), str(out), "--resolution", "16", *extra])


def test_prepare_round_trip_and_levels(folder, tmp_path):
    before = _tree_hash(folder)
    out = tmp_path / "out"
    assert _prepare(folder, out, "--levels", "--shard-size", "5") == 0
    assert _tree_hash(folder) == before
    assert len((out / "bad_files.txt").read_text().splitlines()) == 5
    assert len(list(out.glob("images-r03.tfrecords.*[0-9]"))) == 5
    recs = make_stream(out, loader="torch", num_workers=0)
    assert recs.full_resolution == 16 and recs.num_images == 24 and recs.channels == 3
    # Records hold Pillow's 16px decode of each good file, in path order ...
    src = FileSource(folder, resolution=16)
    ref = []
    for i in range(src.num_images):
        try:
            ref.append(src.decode(i))
        except OSError:
            pass
    ref = torch.from_numpy(np.stack(ref))
    order = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(recs.next_batch(24), ref[order] / 127.5 - 1)
    # ... and each lower level is the box average of it, rounded once.
    recs.set_resolution(4)
    assert recs.level == 4
    level4 = F.avg_pool2d(ref.float(), 4).round()
    torch.testing.assert_close(recs.next_batch(24), level4[torch.randperm(
        24, generator=torch.Generator().manual_seed(1))] / 127.5 - 1)
    recs.set_resolution(2)  # below the stored levels: box-filtered from level 4
    assert recs.level == 4 and recs.next_batch(3).shape == (3, 3, 2, 2)


def test_prepare_resumes_and_refuses_to_overwrite(folder, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    assert _prepare(folder, clean, "--shard-size", "7") == 0
    assert _prepare(folder, clean, "--shard-size", "7") == 2  # finished: refused
    out = tmp_path / "out"
    real, calls = prepare._write_shard, []

    def crash_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(prepare, "_write_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _prepare(folder, out, "--shard-size", "7")
    with pytest.raises(ValueError, match="did not finish"):
        make_stream(out, loader="torch")
    monkeypatch.setattr(prepare, "_write_shard", real)
    assert _prepare(folder, out, "--shard-size", "7") == 0
    for p in clean.iterdir():
        if p.name != "prepare.json":
            assert (out / p.name).read_bytes() == p.read_bytes(), p.name
    assert _prepare(folder, out, "--shard-size", "7", "--overwrite") == 0
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("x")
    assert _prepare(folder, tmp_path / "foreign") == 2
    assert _prepare(folder, folder / "a" / "out") == 2  # OUT inside SRC
    assert not (folder / "a" / "out").exists()


def _official_record(image: np.ndarray) -> bytes:
    """An Example written field by field as TensorFlow does (independent of records.py)."""
    def ld(num, payload):
        return bytes([num << 3 | 2]) + _v(len(payload)) + payload

    def _v(n):
        out = b""
        while n > 0x7F:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])

    shape = ld(3, ld(1, b"".join(_v(s) for s in image.shape)))
    data = ld(1, ld(1, image.tobytes()))
    feats = ld(1, b"".join([ld(1, ld(1, b"shape") + ld(2, shape)), ld(1, ld(1, b"data") + ld(2, data))]))
    header = struct.pack("<Q", len(feats))
    return header + struct.pack("<I", records.masked_crc(header)) + feats + b"\0\0\0\0"


def test_reads_official_alae_tfrecords(digits, tmp_path):
    images = digits[0][:6].expand(6, 3, 32, 32).numpy().copy()
    images[:, 1] //= 2
    for part in range(2):
        (tmp_path / f"ffhq-r05.tfrecords.{part:03d}").write_bytes(
            b"".join(_official_record(im) for im in images[part * 3:part * 3 + 3]))
    s = make_stream(tmp_path, loader="torch", num_workers=0)
    assert (s.num_images, s.channels, s.full_resolution) == (6, 3, 32)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s.next_batch(6), torch.from_numpy(images)[order] / 127.5 - 1)
    s.set_resolution(8)
    assert s.next_batch(2).shape == (2, 3, 8, 8)
    (tmp_path / "ffhq-r05.tfrecords.001").write_bytes(b"\1" * 20)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        make_stream(tmp_path, loader="torch")


def test_dali_tfrecord_reader_accepts_prepared_files(folder, tmp_path):
    """Our writer produces files DALI's own TFRecord reader parses, with our .idx files."""
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, tfrecord

    out = tmp_path / "out"
    assert _prepare(folder, out) == 0
    files = sorted(str(p) for p in out.glob("*.tfrecords.*[0-9]"))

    @dali.pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        rec = fn.readers.tfrecord(path=files, index_path=[f + ".idx" for f in files],
                                  features={"shape": tfrecord.FixedLenFeature([3], tfrecord.int64, 0),
                                            "data": tfrecord.FixedLenFeature((), tfrecord.string, "")})
        return rec["shape"], rec["data"]

    p = pipe()
    p.build()
    shapes, data = p.run()
    first = records.decode_example(open(files[0], "rb").read()[12:][: records.scan(Path(files[0]))[0][1]])
    assert np.array(shapes.at(0)).tolist() == [3, 16, 16]
    assert np.array_equal(np.array(data.at(0)), first.ravel())


def test_crc32c_matches_a_bytewise_loop():
    table = records._TABLE.tolist()
    rng = np.random.default_rng(0)
    for n in (0, 1, 63, 64, 65, 3113, 20011):
        data, c = rng.bytes(n), 0xFFFFFFFF
        for b in data:
            c = table[(c ^ b) & 0xFF] ^ (c >> 8)
        assert records.crc32c(data) == c ^ 0xFFFFFFFF
    assert records.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
