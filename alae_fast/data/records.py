"""Minimal TFRecord + tf.train.Example I/O (no TensorFlow), in the official ALAE layout.

A record is: uint64 length, uint32 masked_crc32c(length), payload, uint32 masked_crc32c(payload).
The payload is an Example with features `shape` (int64 [C, H, W]) and `data` (raw uint8 CHW).
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np

try:  # a C implementation when available; the pure-Python one is slow on large records
    from crc32c import crc32c as _crc32c
except ImportError:
    try:
        from google_crc32c import value as _crc32c
    except ImportError:
        _crc32c = None


def _table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return np.array(table, np.uint32)


_TABLE = _table()


def _raw(chunks: np.ndarray, state: np.ndarray) -> np.ndarray:
    """CRC register (no init/xorout) of each row of uint8 `chunks`, from `state`, vectorised
    across rows: one numpy step per byte column."""
    for col in chunks.T:
        state = _TABLE[(state ^ col) & 0xFF] ^ (state >> 8)
    return state


@functools.lru_cache(maxsize=None)
def _advance_tables(m: int) -> np.ndarray:
    """[4, 256] tables of the linear map 'run the register over m zero bytes'."""
    basis = (np.arange(256, dtype=np.uint32)[None] << (8 * np.arange(4, dtype=np.uint32)[:, None]))
    return _raw(np.zeros((basis.size, m), np.uint8), basis.ravel()).reshape(4, 256)


def crc32c(data) -> int:
    """CRC-32C. Without a C package: rows of m bytes run in parallel with numpy, then are
    chained with `advance` (the register is linear), about 100x a pure-Python loop."""
    if _crc32c is not None:
        return _crc32c(bytes(data))
    buf = np.frombuffer(data, np.uint8)
    m = 1 << max(6, min(12, (len(buf).bit_length() + 1) // 2))  # rows ~ sqrt(size)
    rows = len(buf) // m
    parts = _raw(buf[:rows * m].reshape(rows, m), np.zeros(rows, np.uint32)).tolist()
    t0, t1, t2, t3 = _advance_tables(m).tolist()
    c = 0xFFFFFFFF
    for part in parts:
        c = t0[c & 255] ^ t1[(c >> 8) & 255] ^ t2[(c >> 16) & 255] ^ t3[c >> 24] ^ part
    c = int(_raw(buf[rows * m:][None], np.array([c], np.uint32))[0])
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf (just the wire types an Example needs) ---------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _read_varint(buf, pos: int):
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def _fields(buf):
    """(field number, value) of a message; value is bytes/memoryview or an int."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 2:
            size, pos = _read_varint(buf, pos)
            yield key >> 3, buf[pos:pos + size]
            pos += size
        elif wire == 0:
            value, pos = _read_varint(buf, pos)
            yield key >> 3, value
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def encode_example(image: np.ndarray) -> bytes:
    """Example{shape: int64 [C,H,W], data: bytes} of a uint8 CHW array."""
    packed = b"".join(_varint(int(s)) for s in image.shape)
    shape = _field(3, _field(1, packed))  # Feature.int64_list, Int64List.value (packed)
    data = _field(1, _field(1, np.ascontiguousarray(image, np.uint8).tobytes()))
    entries = [_field(1, _field(1, b"data") + _field(2, data)),
               _field(1, _field(1, b"shape") + _field(2, shape))]
    return _field(1, b"".join(entries))  # Example.features


def _int64_list(buf) -> list[int]:
    out = []
    for _, value in _fields(buf):
        if isinstance(value, int):  # unpacked repeated int64
            out.append(value)
            continue
        pos = 0
        while pos < len(value):  # packed
            n, pos = _read_varint(value, pos)
            out.append(n)
    return out


def decode_example(payload) -> np.ndarray:
    """The uint8 CHW image of an official-ALAE-style Example."""
    feats = {}
    for num, features in _fields(memoryview(payload)):
        for _, entry in (_fields(features) if num == 1 else ()):
            kv = dict(_fields(entry))
            feats[bytes(kv[1]).decode()] = dict(_fields(kv[2]))
    try:
        shape = _int64_list(feats["shape"][3])
        data = dict(_fields(feats["data"][1]))[1]
    except KeyError as exc:
        raise ValueError(f"TFRecord Example lacks feature {exc}") from None
    return np.frombuffer(data, np.uint8).reshape(shape)


# --- record files -------------------------------------------------------------------

def frame(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return (header + struct.pack("<I", masked_crc(header)) + payload
            + struct.pack("<I", masked_crc(payload)))


def scan(path: Path):
    """[(payload offset, payload length)] of every record; checks header CRCs and sizes."""
    entries, size = [], path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                raise ValueError(f"{path}: truncated record header at byte {pos}")
            length, crc = struct.unpack("<QI", head)
            if crc != masked_crc(head[:8]) or pos + 16 + length > size:
                raise ValueError(f"{path}: corrupt or truncated record at byte {pos}")
            entries.append((pos + 12, length))
            pos += 16 + length
            f.seek(pos)
    return entries


def write_index(entries, path: Path) -> None:
    """DALI tfrecord2idx format: 'record offset, record size' (with framing) per line."""
    path.write_text("".join(f"{off - 12} {length + 16}\n" for off, length in entries))
