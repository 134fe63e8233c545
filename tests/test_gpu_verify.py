"""tools/gpu_verify.sh and what it drives, checked without a GPU: step order, deadline, exit status,
the env and kernel-sweep scripts, the benchmarks' time bounds, and the report of several JSON files."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import report, timing

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "gpu_verify.sh"
STEPS = ["env", "triton_tests", "build", "cuda_tests", "sanitizer", "model_bench", "op_bench"]


def _verify(tmp_path, repo=ROOT, fake_python=None, **env):
    """Runs the script (copied into `repo` when that is a scratch folder); returns (exit, stdout, summary)."""
    script = repo / "tools" / "gpu_verify.sh"
    if repo != ROOT:
        script.parent.mkdir(parents=True)
        shutil.copy(SCRIPT, script)
    path = os.environ["PATH"]
    if fake_python is not None:  # a python3 that sleeps or fails, earlier on PATH
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "python3").write_text(f"#!/bin/sh\n{fake_python}\n")
        (bin_dir / "python3").chmod(0o755)
        path = f"{bin_dir}:{path}"
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": path, "OUT": str(out), **env})
    return done.returncode, done.stdout, (out / "summary.md").read_text()


def _row(summary: str, step: str) -> str:
    return next(line for line in summary.splitlines() if line.startswith(f"| {step} |"))


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_lists_every_step_in_order(tmp_path):
    rc, stdout, summary = _verify(tmp_path, GPU_VERIFY_DRY="1")
    assert rc == 0, stdout
    rows = [line.split(" | ")[0][2:] for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == STEPS
    assert all("dry run" in _row(summary, s) for s in STEPS)
    log = (tmp_path / "out" / "log.txt").read_text()
    for command in ("tools/gpu_env.py", "-m gpu -k triton", "pip install --no-build-isolation", '-k "not triton"',
                    "compute-sanitizer --tool", "celeba-hq256-lod6 or ffhq-lod8", "--bench-lods 5,6,7,8"):
        assert command in log, command
    assert len(list((tmp_path / "out").iterdir())) <= 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without a GPU")
def test_without_a_gpu_the_gpu_steps_are_skipped(tmp_path):
    rc, stdout, summary = _verify(tmp_path, STEPS="env,triton_tests,cuda_tests,op_bench")
    assert rc == 3, stdout
    assert "| env | FAILED | 3 |" in summary and "no CUDA device is visible" in _row(summary, "env")
    for step in ("triton_tests", "cuda_tests", "op_bench"):
        assert "skipped: no CUDA device" in _row(summary, step)
    env = json.loads((tmp_path / "out" / "env.json").read_text())
    assert env["kind"] == "env" and env["device"] is None and env["torch"] == torch.__version__


def test_deadline_stops_a_step_and_skips_the_rest(tmp_path):
    start = time.monotonic()
    rc, stdout, summary = _verify(tmp_path, repo=tmp_path / "repo", fake_python="sleep 60", DEADLINE="2")
    assert rc == 124, stdout
    assert time.monotonic() - start < 30
    # The step's limit is what was left of the deadline when it started: 2 s or, on a slow start, 1 s.
    assert re.search(r"\| env \| TIMED OUT after [12] s \| 124 \|", _row(summary, "env"))
    for step in STEPS[1:]:
        assert "skipped: past the deadline (2 s)" in _row(summary, step)


def test_exit_status_is_the_first_failing_steps(tmp_path):
    rc, stdout, summary = _verify(tmp_path, repo=tmp_path / "repo", fake_python="exit 5")
    assert rc == 5, stdout
    for step in ("env", "triton_tests", "build", "model_bench", "op_bench"):
        assert "| FAILED | 5 |" in _row(summary, step) or "| FAILED | 1 |" in _row(summary, step), step
    assert "skipped: build failed" in _row(summary, "cuda_tests")
    assert "skipped: build failed" in _row(summary, "sanitizer")
    assert summary.rstrip().endswith("gpu_verify: exit 5")


def test_unknown_step_is_refused(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path), "STEPS": "env,bench"})
    assert done.returncode == 2 and "unknown step 'bench'" in done.stdout


def test_launch_every_kernel_on_cpu():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "launch_every_kernel.py"), "--device", "cpu",
                           "--backends", "cpu", "--small", "--dtypes", "fp32,bf16"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "36 forward+backward launches on cpu" in done.stdout


def _bench(*options):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                           "benchmarks/test_ops_bench.py", "-m", "smoke", "-k", "blend_real and ref and fp32-fwd]",
                           *options], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_bench_time_limit_skips_and_case_timeout_fails():
    late = _bench("--bench-time-limit", "0")
    assert late.returncode == 0 and "1 skipped" in late.stdout, late.stdout
    slow = _bench("--bench-case-timeout", "0.000001")
    assert slow.returncode == 1 and "still running after" in slow.stdout, slow.stdout


def test_matmul_tflops():
    result = timing.matmul_tflops(torch.device("cpu"), n=64, dtype=torch.float32)
    assert result["TFLOPs"] > 0 and result["matmul_n"] == 64 and result["matmul_dtype"] == "float32"


def _benchmark_json(path, entries, device="NVIDIA H200"):
    info = {"device": device, "device_type": "cuda", "torch": "2.11.0", "cuda": "13.0", "triton": "3.6.0",
            "commit": "abc1234", "cpu_threads": 16}
    path.write_text(json.dumps({"machine_info": {"alae_fast": info}, "commit_info": {},
                                "benchmarks": [{"extra_info": e} for e in entries]}))
    return str(path)


def _op(backend, median_s, mode="fwd+bwd"):
    return {"kind": "op", "op": "style_extract", "shape": [4, 16, 1024, 1024], "where": ["ffhq@lod8"], "dtype": "bf16",
            "mode": mode, "backend": backend, "median_s": median_s, "GBps": 100.0 / median_s, "copy_GBps": 1.0,
            "pct_copy_bw": 1.0, "bytes": 1e11, "peak_mem_bytes": 2**30}


def _train(variant, img_per_s):
    return {"kind": "train", "variant": variant, "config": "ffhq", "lod": 8, "resolution": 1024, "batch": 4,
            "median_s": 4 / img_per_s, "img_per_s": img_per_s, "peak_mem_bytes": 2**33, "compile": "none"}


def test_report_renders_env_ops_and_model_files(tmp_path):
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"kind": "env", "copy_GBps": 4000.0, "matmul_TFLOPs": 790.0, "sm_count": 132,
                               "l2_bytes": 60 * 2**20, "copy": {"copy_bytes": 2**30},
                               "matmul": {"matmul_n": 8192, "matmul_dtype": "bfloat16"},
                               "nvidia_smi": {"driver_version": "580.1", "clocks.sm": "1980 MHz"}}))
    ops = _benchmark_json(tmp_path / "bench_ops.json", [_op("ref", 0.004), _op("compile", 0.002), _op("cuda", 0.001),
                                                        _op("triton", 0.003)])
    model = _benchmark_json(tmp_path / "bench_model.json", [_train("bf16-eager-ref", 20.0),
                                                            _train("bf16-fused-cuda", 30.0),
                                                            _train("bf16-fused-triton", 15.0)])
    out = tmp_path / "results"
    text, folder = report.render([str(env), ops, model], out)
    assert folder == out and {p.name for p in out.iterdir()} >= {"report.md", "env.json", "bench_ops.json",
                                                                  "bench_model.json"}
    assert "measured ceilings: copy 4000 GB/s" in text and "790 TFLOP/s" in text and "132 SMs" in text
    assert "| style_extract | 4x16x1024x1024 | bf16 | fwd+bwd | cuda | 1000.0 | 1e+05 | 2.5e+03 |" in text
    slower = text.split("still slower than eager or torch.compile")[1]
    assert "triton: compile 1.50x faster" in slower and "training bf16-fused-triton ffhq lod 8" in slower
    assert "cuda:" not in slower
    summary = report.readme_summary([str(env), ops, model], out)
    assert "| style_extract | 4x16x1024x1024 | bf16 | cuda | 1000 |" in summary
    assert "| bf16-fused-cuda | ffhq | 8 | 4 | 30.0 |" in summary and "copy 4000 GB/s" in summary
