import json

import pytest
import torch

from megatron_redi.model_config import preset
from megatron_redi.training.metrics import CollapseAlarm, card_peak_tflops, mfu_peak_tflops, step_flops


def test_collapse_alarm_fires_when_both_logps_fall():
    alarm = CollapseAlarm(window=3, drop=0.5)
    for _ in range(3):
        assert alarm.update(-0.05, -0.2) is None
    for c, r in ((-0.3, -0.5), (-0.7, -0.9), (-1.0, -1.3)):
        message = alarm.update(c, r)
    assert message and "collapse alarm" in message and alarm.fired


def test_collapse_alarm_stays_quiet_when_only_rejected_falls():
    alarm = CollapseAlarm(window=3, drop=0.5)
    for c, r in [(-0.05, -0.2)] * 3 + [(-0.06, -2.0)] * 5:  # REDI alpha 0.8's healthy picture
        assert alarm.update(c, r) is None
    assert not alarm.fired


def test_flop_count_of_qwen_1_5b():
    cfg = preset("qwen2.5-1.5b")
    # per layer: QKV 1536 x (12 + 4) x 128, O 1536 x 1536, MLP 3 x 1536 x 8960
    assert cfg.num_layers * cfg.layer_matrix_parameters() == 28 * (1536 * 16 * 128 + 1536 * 1536 + 3 * 1536 * 8960)
    flops = step_flops(cfg, [8192, 8192], response_tokens=0)
    dense = 2 * cfg.num_layers * cfg.layer_matrix_parameters() * 16384
    attn = 2 * 28 * 12 * 128 * 2 * 8192 ** 2
    assert flops == pytest.approx(3 * (dense + attn))


def test_flop_count_of_qwen3_4b_with_heads_wider_than_hidden_over_heads():
    cfg = preset("qwen3-4b")
    # per layer: QKV 2560 x (32 + 16) x 128, O (32 x 128) x 2560, MLP 3 x 2560 x 9728 (q/k norms: no GEMM)
    assert cfg.layer_matrix_parameters() == 2560 * 48 * 128 + 4096 * 2560 + 3 * 2560 * 9728
    assert step_flops(cfg, [100], 0) == pytest.approx(3 * (2 * 36 * cfg.layer_matrix_parameters() * 100
                                                           + 2 * 36 * 32 * 128 * 100 ** 2))


def test_plot_metrics_draws_the_figure6_panels(tmp_path):
    import os
    import subprocess
    import sys

    from megatron_redi.training.figures import plot

    tool = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "plot_metrics.py")
    for name, slope in (("a0.8", 0.0), ("a1.0", -0.1)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": 0, "eval/pass@1": 0.5}] + [
            {"step": s, "logps/chosen_mean": slope * s, "logps/rejected_mean": -0.2 * s, "update_norm": 0.01}
            for s in range(1, 20)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "fig.png"
    done = subprocess.run([sys.executable, tool, str(tmp_path / "a0.8"), str(tmp_path / "a1.0"), "--output", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    titles = plot([str(tmp_path / "a1.0")], ["a1.0"], str(out), smooth=5)
    assert titles[1:] == ["chosen LogPS (5-step moving average)", "rejected LogPS (5-step moving average)",
                          "update size (5-step moving average)"]
    (tmp_path / "a1.0" / "config.json").write_text(json.dumps({"eval": {"temperature": 0.0, "max_problems": 100}}))
    assert plot([str(tmp_path / "a1.0")], ["a1.0"], str(out))[0] == "in-training accuracy (greedy, 100 problems)"


def _exact_sums():
    from megatron_redi.parallel import initialize
    from megatron_redi.training.metrics import sum_over_dp

    p = initialize(tensor_parallel_size=1)  # DP = 2
    tokens = 2**24 + 1 + p.rank  # past float32's exact integers
    summed, kept = sum_over_dp(p, [torch.tensor(0.5, dtype=torch.float32), tokens, 1e15 + p.rank],
                               [torch.tensor(3.0)])
    assert summed == [1.0, 2**25 + 3, 2e15 + 1] and kept == [3.0]


def test_step_sums_over_data_parallel_ranks_are_exact():
    from multirank import run_ranks

    run_ranks(2, _exact_sums)



def test_mfu_divides_by_the_card_s_own_peak_or_the_configured_one(monkeypatch):
    """An H100 run is no longer divided by an H200's figure; an unknown card reports no MFU, said."""
    assert card_peak_tflops("NVIDIA H100 80GB HBM3") == card_peak_tflops("NVIDIA H200") == 989.0
    assert card_peak_tflops("NVIDIA H100 PCIe") == 756.0 and card_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert mfu_peak_tflops(cuda) == 989.0 and mfu_peak_tflops(cuda, 700.0) == 700.0
    assert mfu_peak_tflops(torch.device("cpu"), 700.0) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    with pytest.warns(UserWarning, match="no dense bf16 peak known for 'Some Future GPU'; set train.peak_tflops"):
        assert mfu_peak_tflops(cuda) is None
