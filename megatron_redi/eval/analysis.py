"""The paper's analyses of how training changes a model's outputs (its Appendix E.1 and F):

    generation_statistics  response length and reflection words ("wait") over an evaluation's
                           generations: Figure 8, per checkpoint
    token_statistics       for each response token, its log-prob under the model and the entropy of
                           the model's next-token distribution there: Figure 9 averages the entropy,
                           Figure 10 compares the log-probs of two checkpoints
    token_type_logprobs    the mean log-prob of each vocabulary id over its occurrences (Figure 10's
                           points), and ``pearson`` for the correlation it reports
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..model.kv_cache import packed_hidden

REFLECTION_WORDS = ("wait",)


def count_word(text: str, word: str) -> int:
    """Whole-word, case-insensitive occurrences ("Wait," and "wait" count; "awaited" does not)."""
    return len(re.findall(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE))


def generation_statistics(results: list[dict], words=REFLECTION_WORDS) -> dict:
    """Over every generation of an evaluation's results (evaluate()'s rows): mean length in tokens,
    and per word its mean count per generation and its count per 1,000 generated tokens."""
    if any("lengths" not in r for r in results):
        raise ValueError("results without generation lengths (written by an older evaluator): evaluate again")
    texts = [t for r in results for t in r["generations"]]
    lengths = [n for r in results for n in r["lengths"]]
    if not texts:
        raise ValueError("no generations to analyse")
    stats = {"generations": len(texts), "mean_tokens": sum(lengths) / len(texts)}
    for word in words:
        counts = [count_word(t, word) for t in texts]
        stats[f"mean_{word}"] = sum(counts) / len(texts)
        stats[f"{word}_per_1k_tokens"] = 1000 * sum(counts) / max(sum(lengths), 1)
    return stats


@torch.no_grad()
def token_statistics(model, sequences: list[list[int]], starts: list[int], max_tokens: int = 16384,
                     chunk: int = 2048) -> list[tuple[np.ndarray, np.ndarray]]:
    """(log-probs, entropies) in nats of tokens ``starts[i]`` onward of each sequence, each token
    predicted from the ones before it. Sequences are packed up to ``max_tokens`` per forward; the
    full-vocabulary logits are made ``chunk`` positions at a time, so memory stays bounded at 32k
    tokens and a 150k vocabulary."""
    if any(not 0 < s < len(x) for s, x in zip(starts, sequences)):
        raise ValueError("each start must lie inside its sequence, after at least one token")
    out, i = [], 0
    while i < len(sequences):
        group = [sequences[i]]
        while i + len(group) < len(sequences) and sum(map(len, group)) + len(sequences[i + len(group)]) <= max_tokens:
            group.append(sequences[i + len(group)])
        hidden, seqs = packed_hidden(model, group)
        for (begin, end), seq, start in zip(zip(seqs.host, seqs.host[1:]), group, starts[i:]):
            targets = torch.tensor(seq[start:], device=hidden.device)
            logps, entropies = [], []
            for c in range(begin + start - 1, end - 1, chunk):  # position p predicts token p + 1
                logits = model.logits(hidden[c:min(c + chunk, end - 1)], sequence_parallel=False)
                logp = torch.log_softmax(logits, dim=-1)
                picked = targets[c - (begin + start - 1):c - (begin + start - 1) + len(logp)]
                logps.append(logp.gather(1, picked[:, None]).squeeze(1))
                entropies.append(-(logp.exp() * logp).sum(-1))
            out.append((torch.cat(logps).double().cpu().numpy(), torch.cat(entropies).double().cpu().numpy()))
        i += len(group)
    return out


def token_type_logprobs(token_ids: list[np.ndarray], logps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vocabulary ids, occurrences, mean log-prob) of every id that occurs in the given tokens."""
    ids = np.concatenate(token_ids).astype(np.int64)
    values = np.concatenate(logps)
    vocab, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return vocab, counts, np.bincount(inverse, weights=values) / counts


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r; None with under 3 points or a constant side (undefined)."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
