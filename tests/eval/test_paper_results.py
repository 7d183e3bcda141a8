"""The paper's numbers as evidence about its benchmarks: a pass@16 is a count of problems solved, so
each value tells how many problems the benchmark had."""

from megatron_redi.eval.benchmarks import BENCHMARKS
from megatron_redi.eval.paper_results import BENCHMARK_NAMES, PAPER_PASS_AT_16


def _a_count_out_of(value: float, n: int) -> bool:
    """Whether some k of n problems, in percent, rounds to ``value`` (one decimal, halves either way)."""
    return any(abs(100 * k / n - value) <= 0.05 + 1e-9 for k in range(n + 1))


def test_the_paper_s_amc23_has_83_problems_not_40():
    amc = [row[BENCHMARK_NAMES.index("amc23")] for row in PAPER_PASS_AT_16.values()]
    assert sorted(set(amc)) == [81.9, 86.7, 89.2, 90.4, 92.8]
    assert all(_a_count_out_of(v, 83) for v in amc)
    assert not any(_a_count_out_of(v, 40) for v in amc)  # 40 problems give multiples of 2.5 %
    assert BENCHMARKS["amc23"].size == 83


def test_every_pass_at_16_is_a_count_of_its_benchmark_s_problems():
    for row in PAPER_PASS_AT_16.values():
        for name, value in zip(BENCHMARK_NAMES, row):
            assert _a_count_out_of(value, BENCHMARKS[name].size), (name, value)


# The transcriptions, checked against the arithmetic the paper's own numbers obey: each value is
# rounded to 0.1, so a derived figure may move by what that rounding allows.
def _within_rounding(derived_lo: float, derived_hi: float, stated: float) -> bool:
    return derived_lo - 0.05 - 1e-9 <= stated <= derived_hi + 0.05 + 1e-9


def test_every_row_s_average_is_the_mean_of_its_five_benchmarks():
    from megatron_redi.eval.paper_results import PAPER_ROWS

    for name, row in PAPER_ROWS.items():
        values = [v for v, _ in row["benchmarks"].values()]
        mean = sum(values) / 5
        assert _within_rounding(mean - 0.05, mean + 0.05, row["average"][0]), name


def test_training_times_are_8_gpus_times_the_hours():
    from megatron_redi.eval.paper_results import PAPER_TRAINING_TIMES

    for name, (hours, gpu_hours) in PAPER_TRAINING_TIMES.items():
        assert abs(8 * hours - gpu_hours) <= 0.05 + 1e-9, name


def test_out_of_domain_gains_follow_from_the_rows_and_olympiadbench_is_table_2_s():
    from megatron_redi.eval.paper_results import (PAPER_OUT_OF_DOMAIN, PAPER_OUT_OF_DOMAIN_GAINS, PAPER_ROWS)

    sft, redi = PAPER_OUT_OF_DOMAIN["Qwen-SFT-1.5B-3ep"], PAPER_OUT_OF_DOMAIN["Qwen-REDI-1.5B"]
    for name, gain in PAPER_OUT_OF_DOMAIN_GAINS.items():
        lo = 100 * ((redi[name] - 0.05) / (sft[name] + 0.05) - 1)
        hi = 100 * ((redi[name] + 0.05) / (sft[name] - 0.05) - 1)
        assert _within_rounding(lo, hi, gain), name
    assert sft["olympiadbench"] == PAPER_ROWS["Qwen-SFT-1.5B-3ep"]["benchmarks"]["olympiadbench"][0]
    assert redi["olympiadbench"] == PAPER_ROWS["REDI (alpha 0.8, lr 1e-6)"]["benchmarks"]["olympiadbench"][0]
    assert redi["olympiadbench"] != PAPER_ROWS["Qwen-REDI-1.5B"]["benchmarks"]["olympiadbench"][0]
