"""The paper's own results, to print beside a reproduction's: pass@1 (%) over 16 samples on the
five benchmarks, with the SEM where the paper gives one (Tables 1, 2 and 4; Table 1's and 2's rows
by the final protocol, each model at its best checkpoint), pass@16 (%) (Tables 6 and 7), the
training times (Table 3) and the out-of-domain results (Table 5)."""

from __future__ import annotations

BENCHMARK_NAMES = ("math500", "aime24", "amc23", "minerva", "olympiadbench")


def _row(*cells):
    """(pass@1, SEM) per benchmark, then the average's: SEM None where the paper gives none."""
    cells = [c if isinstance(c, tuple) else (c, None) for c in cells]
    return {"benchmarks": dict(zip(BENCHMARK_NAMES, cells[:5])), "average": cells[5]}


PAPER_ROWS = {
    # Table 1: two published models (Qwen2.5-Math-1.5B-Instruct's as officially reported, no SEM)...
    "Qwen2.5-Math-1.5B-Instruct": _row(75.8, 10.0, 60.0, 29.4, 38.1, 42.7),
    "DeepSeek-R1-Distill-Qwen-1.5B": _row((83.2, 0.2), (28.3, 1.0), (62.1, 0.8), (26.0, 0.4), (43.1, 0.3),
                                          (48.6, 0.3)),
    # ... the final model and its stage-1 start
    "Qwen-SFT-1.5B-5ep": _row((80.4, 0.3), (21.9, 1.1), (57.5, 0.6), (27.5, 0.4), (41.5, 0.3), (45.8, 0.3)),
    "Qwen-REDI-1.5B": _row((83.1, 0.3), (28.1, 1.1), (62.4, 0.6), (28.8, 0.3), (45.2, 0.2), (49.5, 0.3)),
    # Table 2: the ablations from the 3-epoch start
    "Qwen-SFT-1.5B-3ep": _row((76.7, 0.3), (18.1, 1.1), (52.8, 0.6), (24.6, 0.5), (37.5, 0.3), (41.9, 0.3)),
    "DPO (beta 0.001, lr 2e-7)": _row((81.3, 0.2), (24.6, 1.7), (58.5, 0.6), (28.7, 0.4), (43.1, 0.3), (47.2, 0.4)),
    "SimPO (beta 2, gamma 1, lr 5e-7)": _row((81.1, 0.3), (24.8, 1.9), (58.8, 0.6), (29.1, 0.2), (42.2, 0.3),
                                             (47.2, 0.4)),
    "Symmetric REDI (alpha 1.0, lr 2e-7)": _row((81.7, 0.2), (25.8, 1.3), (59.5, 1.1), (29.3, 0.4), (42.1, 0.2),
                                                (47.7, 0.4)),
    "REDI (alpha 0.8, lr 1e-6)": _row((81.7, 0.2), (27.3, 1.4), (58.8, 0.8), (30.4, 0.5), (43.4, 0.3), (48.3, 0.3)),
    # Table 4: the other students (no SEM given)
    "Llama-3.2-3B SFT": _row(54.3, 8.5, 33.9, 14.3, 28.8, 28.0),
    "Llama-3.2-3B REDI": _row(61.2, 13.3, 41.9, 15.3, 32.9, 32.9),
    "Qwen2.5-Math-7B SFT": _row(90.3, 51.0, 75.9, 39.8, 55.3, 62.5),
    "Qwen2.5-Math-7B REDI": _row(91.2, 56.5, 79.6, 40.5, 57.6, 65.1),
}

# Tables 6 and 7: pass@16 (%) per benchmark, in BENCHMARK_NAMES' order
PAPER_PASS_AT_16 = {
    "Qwen-SFT-1.5B-3ep": (94.6, 53.3, 86.7, 57.7, 63.1),
    "DPO (beta 0.001, lr 2e-7)": (94.6, 63.3, 86.7, 58.8, 64.7),
    "SimPO (beta 2, gamma 1, lr 5e-7)": (94.8, 60.0, 89.2, 58.5, 63.3),
    "Symmetric REDI (alpha 1.0, lr 2e-7)": (95.0, 63.3, 90.4, 58.8, 62.5),
    "REDI (alpha 0.8, lr 1e-6)": (95.0, 66.7, 81.9, 59.9, 63.9),
    "DeepSeek-R1-Distill-Qwen-1.5B": (95.6, 63.3, 92.8, 56.6, 65.8),
    "Qwen-SFT-1.5B-5ep": (95.6, 56.7, 86.7, 56.3, 64.3),
    "Qwen-REDI-1.5B": (95.0, 66.7, 90.4, 57.0, 65.8),
}


# Table 3: hours per run on one node of 8 A100 80GB, and its GPU hours, as the paper gives them
PAPER_TRAINING_TIMES = {
    "SFT, 3 epochs": (8.0, 64.0),
    "SFT, 5 epochs": (13.0, 104.0),
    "DPO, 1 epoch": (5 + 10 / 60, 41.3),
    "SimPO, 1 epoch": (4 + 50 / 60, 38.7),
    "REDI, 1 epoch": (4 + 10 / 60, 33.3),
}

# Table 5: out of domain, pass@1 (%) unless named, and the relative improvements it states (%). Its
# OlympiadBench column is Table 2's SFT-3ep and REDI rows (37.5, 43.4), not Table 1's final model
# (45.2), though the row is named Qwen-REDI-1.5B: the REDI run from the 3-epoch start.
PAPER_OUT_OF_DOMAIN = {
    "Qwen-SFT-1.5B-3ep": {"gpqa_diamond": 28.3, "olympiadbench": 37.5, "humaneval": 7.1, "humaneval pass@5": 22.6},
    "Qwen-REDI-1.5B": {"gpqa_diamond": 35.9, "olympiadbench": 43.4, "humaneval": 19.9, "humaneval pass@5": 39.6},
}
PAPER_OUT_OF_DOMAIN_GAINS = {"gpqa_diamond": 26.8, "olympiadbench": 15.7, "humaneval": 181.2, "humaneval pass@5": 75.7}
