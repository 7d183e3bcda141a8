import pytest

from megatron_redi.eval.selection import best, score


def entry(step, **pass1):
    return {"label": f"step_{step}", "checkpoint": f"ckpt/{step}", "step": step,
            "benchmarks": {name: {"pass@1": value, "sem": 0.01} for name, value in pass1.items()}}


def test_the_best_checkpoint_by_the_mean_or_by_one_benchmark():
    entries = [entry(100, math500=0.80, aime24=0.20), entry(200, math500=0.82, aime24=0.30),
               entry(300, math500=0.84, aime24=0.10)]
    assert score(entries[1]) == pytest.approx(0.56)
    assert best(entries)["step"] == 200 and best(entries)["selected_by"] == "mean pass@1 over the benchmarks"
    assert best(entries, by="math500")["step"] == 300
    with pytest.raises(ValueError, match="no result for benchmark 'amc23'"):
        best(entries, by="amc23")


def test_ties_go_to_the_earlier_step_whatever_the_order_given():
    entries = [entry(300, math500=0.5), entry(100, math500=0.5), entry(200, math500=0.4)]
    assert best(entries)["step"] == 100
    unnamed = [entry(None, math500=0.5), entry(50, math500=0.5)]  # a checkpoint without a step comes last
    assert best(unnamed)["step"] == 50
    with pytest.raises(ValueError, match="no evaluated checkpoints"):
        best([])


def test_without_matplotlib_the_curve_is_left_out_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from megatron_redi.eval.selection import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    entries = [entry(100, math500=0.8), entry(200, math500=0.9)]
    plot(entries, best(entries), str(tmp_path / "curve.png"))
    err = capsys.readouterr().err
    assert not (tmp_path / "curve.png").exists() and err.count("\n") == 1
    assert "curve.png not drawn: matplotlib is not installed" in err
