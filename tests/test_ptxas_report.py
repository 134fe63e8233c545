"""tools/ptxas_report.py's parsing and occupancy arithmetic, on canned ptxas and PTX text."""

import importlib.util
from pathlib import Path

import pytest

_TOOL = Path(__file__).parents[1] / "tools" / "ptxas_report.py"
_MODULE_SPEC = importlib.util.spec_from_file_location("ptxas_report", _TOOL)
ptxas_report = importlib.util.module_from_spec(_MODULE_SPEC)
_MODULE_SPEC.loader.exec_module(ptxas_report)

PTXAS_LOG = """\
ptxas info    : Compiling entry function '_Z1aPf' for 'sm_90'
ptxas info    : Function properties for _Z1aPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 384 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function '_Z1bPf' for 'sm_90'
ptxas info    : Function properties for _Z1bPf
    16 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads
ptxas info    : Used 56 registers, used 1 barriers, 16 bytes cumulative stack size, 256 bytes smem
"""

PTX = """\
.visible .entry _Z1aPf(
\t.param .u64 .ptr .align 1 _Z1aPf_param_0
)
.maxntid 256, 1, 1
.minnctapersm 2
{
}
.visible .entry _Z1bPf(
\t.param .u64 .ptr .align 1 _Z1bPf_param_0
)
{
}
"""


def test_parse_ptxas():
    kernels = ptxas_report.parse_ptxas(PTXAS_LOG)
    assert kernels["_Z1aPf"] == {"regs": 40, "smem": 384, "stack": 0, "spill_stores": 0, "spill_loads": 0}
    assert kernels["_Z1bPf"] == {"regs": 56, "smem": 256, "stack": 16, "spill_stores": 12, "spill_loads": 20}


def test_parse_maxntid():
    assert ptxas_report.parse_maxntid(PTX) == {"_Z1aPf": 256}  # _Z1bPf has no __launch_bounds__


@pytest.mark.parametrize("regs, smem, threads, expected", [
    (24, 0, 128, (16, "threads")),   # 2048 threads / 128 (registers would allow 21)
    (64, 0, 256, (4, "regs")),       # 65536 / (64 * 256)
    (90, 0, 256, (2, "regs")),       # 90 -> 96 per thread in 256-register warp units
    (128, 0, 512, (1, "regs")),
    (32, 100 * 1024, 128, (2, "smem")),
])
def test_blocks_per_sm(regs, smem, threads, expected):
    assert ptxas_report.blocks_per_sm(regs, smem, threads, "sm_90") == expected


def test_short_name():
    name = "void alae_fast::(anonymous namespace)::k<c10::Half, 8>(c10::Half const*, int)"
    assert ptxas_report.short_name(name) == "k<Half, 8>"
