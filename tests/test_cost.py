"""The CPU cost counter (benchmarks/cost.py) through the shipped step unit, at a small config."""

import json

import pytest
import torch.nn.functional as F

from benchmarks import cost


@pytest.fixture(scope="module")
def tiny_report():
    return cost.report("tiny", 2, 4)


def test_json_has_every_variant_phase_and_field(tiny_report, capsys):
    assert cost.main(["--config", "tiny", "--lod", "1", "--batch", "2", "--json", "--variants", "bf16-fused"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["variants"]) == {"bf16-fused"}
    fields = {"bytes", "ops", "flops", "single_channel_convs"}
    assert set(tiny_report["variants"]) == {"fp32-eager", "bf16-eager", "bf16-fused"}
    for v in tiny_report["variants"].values():
        assert fields <= set(v) and set(v["phases"]) == {"d", "g", "ae"}
        for phase in v["phases"].values():
            assert set(phase) == fields and phase["ops"] > 0 and phase["flops"] > 0
        assert v["bytes"] == sum(p["bytes"] for p in v["phases"].values())


def test_fused_step_moves_less_and_never_loops_over_groups(tiny_report):
    fused, eager = tiny_report["variants"]["bf16-fused"], tiny_report["variants"]["bf16-eager"]
    assert fused["single_channel_convs"] == eager["single_channel_convs"] == 0
    assert fused["phases"]["d"]["bytes"] < eager["phases"]["d"]["bytes"]
    assert fused["bytes"] < eager["bytes"] and fused["ops"] < eager["ops"]
    assert fused["flops"] == eager["flops"]


def test_counter_sees_a_grouped_convolution_double_backward(monkeypatch):
    """With the blur as a plain grouped convolution, R1's double backward issues one convolution per channel."""
    from alae_fast.nn import blur

    monkeypatch.setattr(blur, "blur", lambda x, w: F.conv2d(x, w.to(x.dtype), padding=1, groups=w.shape[0]))
    phases = cost.count_iteration("tiny", 2, 4, "fp32-eager")
    assert phases["d"].single_channel_convs > 0 and phases["g"].single_channel_convs == 0
