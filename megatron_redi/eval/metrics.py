"""pass@1 over k samples with its standard error, and pass@k (the paper's Appendix C.5).

``correct[i][j]``: whether sample j of problem i is right. With k samples per problem:

    P_j     = mean over problems of correct[i][j]         (benchmark-wide pass@1 of sample j alone)
    pass@1  = mean of P_1 .. P_k                          (= mean over all problems and samples)
    SEM     = s / sqrt(k), s the standard deviation of P_1 .. P_k: by default the POPULATION one (k in
              the denominator; numpy's default, which the paper's reference code used), or with
              ddof=1 the sample one (k - 1); undefined (None) for k = 1
    pass@k  = mean over problems of the unbiased estimator 1 - C(n - c, k) / C(n, k) (Chen et
              al., 2021), with n = k samples and c correct: 1 if any sample is right
"""

from __future__ import annotations

import math


def pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(correct: list[list[bool]], ddof: int = 0) -> dict:
    if not correct:
        raise ValueError("no problems to summarize")
    k = len(correct[0])
    if k == 0 or any(len(row) != k for row in correct):
        raise ValueError("every problem needs the same, non-zero number of samples")
    scores = [sum(row[j] for row in correct) / len(correct) for j in range(k)]
    mean = sum(scores) / k
    sem = None
    if k > 1:
        s = math.sqrt(sum((x - mean) ** 2 for x in scores) / (k - ddof))
        sem = s / math.sqrt(k)
    return {"pass@1": mean, "sem": sem, f"pass@{k}": sum(pass_at_k(k, sum(r), k) for r in correct) / len(correct),
            "samples": k, "problems": len(correct), "per_sample_pass@1": scores}
