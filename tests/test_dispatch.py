"""impl='auto' on CUDA: the measured dispatch table (alae_fast/ops/dispatch_table.json), its
fallback, and the writer in benchmarks/report.py. No GPU needed: the device is a stub."""

import json
import types

import pytest
import torch

from alae_fast.ops import _backend
from benchmarks import report

GPU = "NVIDIA Test GPU"
TABLE = {GPU: {"provenance": {}, "ops": {
    "modulated_adain": [{"max_numel": 1000, "backend": "triton"}, {"max_numel": None, "backend": "cuda"}],
    "blend_up": [{"max_numel": 5000, "backend": "cuda"}]}}}


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device named GPU on which both fused backends can run."""
    monkeypatch.setattr(_backend, "_dispatch_table", TABLE)
    monkeypatch.setattr(_backend, "_cuda_device_name", lambda index: GPU)
    monkeypatch.setattr(_backend, "unavailable_reason", lambda backend, device_type: None)
    monkeypatch.setattr(_backend, "_block_impl", None)
    monkeypatch.setattr(_backend, "_default_impl", "auto")


def _x(numel):
    return types.SimpleNamespace(device=torch.device("cuda", 0), numel=lambda: numel)


def test_shipped_table_is_empty_and_well_formed():
    """No GPU has been benchmarked yet, so no device may be listed (no invented numbers)."""
    data = json.loads(_backend.DISPATCH_TABLE_PATH.read_text())
    assert data["format"] == 1 and data["devices"] == {}


def test_resolve_follows_the_table(gpu):
    assert _backend.resolve("auto", _x(1000), op="modulated_adain") == "triton"
    assert _backend.resolve("auto", _x(1001), op="modulated_adain") == "cuda"
    assert _backend.resolve("auto", _x(10), op="blend_up", numel=10**6) == "cuda"  # past the last bound
    assert _backend.resolve("auto", _x(10), op="blend_up") == "cuda"


def test_resolve_falls_back_to_cuda_then_triton(gpu, monkeypatch):
    assert _backend.resolve("auto", _x(10), op="style_extract") == "cuda"  # op not in the table
    assert _backend.resolve("auto", _x(10), op="blend_up", numel=10**6) == "cuda"  # size past the buckets
    monkeypatch.setattr(_backend, "_cuda_device_name", lambda index: "another GPU")
    assert _backend.resolve("auto", _x(10), op="modulated_adain") == "cuda"
    monkeypatch.setattr(_backend, "unavailable_reason", lambda b, d: None if b == "triton" else "not built")
    assert _backend.resolve("auto", _x(10), op="modulated_adain") == "triton"


def test_table_choice_unavailable_backend_is_skipped(gpu, monkeypatch):
    monkeypatch.setattr(_backend, "unavailable_reason", lambda b, d: None if b == "cuda" else "no triton")
    assert _backend.resolve("auto", _x(10), op="modulated_adain") == "cuda"


def test_explicit_impl_and_use_impl_override_the_table(gpu):
    assert _backend.resolve("cuda", _x(10), op="modulated_adain") == "cuda"
    with _backend.use_impl("ref"):
        assert _backend.resolve("auto", _x(10), op="modulated_adain") == "ref"


def _bench_json(path, device_type, rows):
    benchmarks = [{"extra_info": {"kind": "op", "op": op, "shape": shape, "dtype": dtype, "mode": mode,
                                  "backend": backend, "median_s": t, "GBps": 1.0}}
                  for op, shape, dtype, mode, backend, t in rows]
    info = {"device": GPU, "device_type": device_type, "torch": "2.13.0", "triton": "3.9.0", "cuda": "13.0",
            "commit": "abc123"}
    path.write_text(json.dumps({"machine_info": {"alae_fast": info}, "benchmarks": benchmarks}))
    return str(path)


def test_writer_buckets_and_merges(tmp_path):
    small, mid, big = [2, 4, 8, 8], [2, 4, 32, 32], [2, 4, 256, 256]  # numel 512, 8192, 524288
    rows = []
    for shape, cuda_s, triton_s in ((small, 2.0, 1.0), (mid, 2.0, 1.5), (big, 1.0, 3.0)):
        for mode in ("fwd", "fwd+bwd"):
            rows += [("style_extract", shape, "bf16", mode, "cuda", cuda_s), ("style_extract", shape, "bf16", mode,
                                                                                "triton", triton_s),
                     ("style_extract", shape, "bf16", mode, "ref", 9.0)]
    rows.append(("blend_up", small, "bf16", "fwd", "cuda", 1.0))  # only one fused backend: no entry
    table_path = tmp_path / "table.json"
    table_path.write_text(json.dumps({"format": 1, "devices": {"other": {"ops": {}}}}))
    report.write_dispatch_table([_bench_json(tmp_path / "b.json", "cuda", rows)], table_path)
    data = json.loads(table_path.read_text())
    assert set(data["devices"]) == {"other", GPU}  # other GPUs kept
    entry = data["devices"][GPU]
    assert entry["provenance"]["commit"] == "abc123" and entry["provenance"]["triton"] == "3.9.0"
    assert entry["ops"] == {"style_extract": [{"max_numel": 8192 * 8, "backend": "triton"},  # sqrt(8192·524288)
                                              {"max_numel": None, "backend": "cuda"}]}


def test_writer_refuses_cpu_runs(tmp_path):
    path = _bench_json(tmp_path / "b.json", "cpu", [("blend_up", [1, 1, 2, 2], "fp32", "fwd", "cpu", 1.0)])
    with pytest.raises(SystemExit, match="needs a CUDA benchmark run"):
        report.write_dispatch_table([path], tmp_path / "t.json")
