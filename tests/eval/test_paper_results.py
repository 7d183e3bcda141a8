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
