import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from multirank import run_ranks

from megatron_redi import losses as L
from megatron_redi.batch import Pairs
from megatron_redi.losses import LossConfig, microbatch_loss, sequence_coefficients

# two pairs, by hand: chosen sums, lengths; rejected sums, lengths
C, LC = torch.tensor([-10.0, -3.0]), torch.tensor([5.0, 2.0])
R, LR = torch.tensor([-8.0, -12.0]), torch.tensor([4.0, 3.0])


def test_redi_by_hand():
    # pair 0: 10/5 + 0.8 * (-8/4) = 2 - 1.6 = 0.4 ; pair 1: 3/2 + 0.8 * (-12/3) = 1.5 - 3.2 = -1.7
    torch.testing.assert_close(L.redi(C, LC, R, LR), torch.tensor([0.4, -1.7]))
    torch.testing.assert_close(L.symmetric_redi(C, LC, R, LR), torch.tensor([0.0, -2.5]))
    torch.testing.assert_close(L.redi(C, LC, R, LR, alpha=0.0), torch.tensor([2.0, 1.5]))


def test_redi_gradient_by_hand():
    c, r = C.clone().requires_grad_(), R.clone().requires_grad_()
    L.redi(c, LC, r, LR, alpha=0.8).sum().backward()
    torch.testing.assert_close(c.grad, -1 / LC)
    torch.testing.assert_close(r.grad, 0.8 / LR)


def test_simpo_by_hand_and_against_trl_definition():
    beta, gamma = 2.0, 1.0
    # pair 0: margin = -2 - (-2) = 0 -> -log sigmoid(-1) = log(1 + e)
    got = L.simpo(C, LC, R, LR, beta=beta, gamma=gamma)
    assert math.isclose(got[0].item(), math.log(1 + math.e), rel_tol=1e-6)
    # TRL's CPO trainer, loss_type="simpo": logits = (avg_c - avg_r) - gamma/beta, then sigmoid loss
    for ls in (0.0, 0.1):
        logits = (C / LC - R / LR) - gamma / beta
        trl = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
        torch.testing.assert_close(L.simpo(C, LC, R, LR, beta=beta, gamma=gamma, label_smoothing=ls), trl)


def test_simpo_with_trl_s_nll_term_as_its_cpo_trainer_adds_it():
    """CPOTrainer: losses.mean() + cpo_alpha * cross-entropy over the micro-batch's chosen tokens;
    with one pair per device (the reference's runs) that is -logp_w/|y_w| per pair."""
    for pair in range(len(C)):
        c, lc, r, lr = C[pair:pair + 1], LC[pair:pair + 1], R[pair:pair + 1], LR[pair:pair + 1]
        trl = L.simpo(c, lc, r, lr).mean() + 1.0 * (-c / lc).mean()  # token-mean NLL of the one chosen response
        torch.testing.assert_close(L.simpo(c, lc, r, lr, nll_weight=1.0), trl.reshape(1))
    torch.testing.assert_close(L.simpo(C, LC, R, LR, nll_weight=0.0), L.simpo(C, LC, R, LR))  # Eq. 3
    with pytest.raises(ValueError, match="nll_weight is SimPO's"):
        L.LossConfig(type="redi", nll_weight=1.0)


def test_dpo_by_hand_and_against_trl_definition():
    ref_c, ref_r = torch.tensor([-11.0, -3.5]), torch.tensor([-7.0, -12.0])
    # pair 0: (−10+11) − (−8+7) = 2 -> -log sigmoid(0.2)
    got = L.dpo(C, LC, R, LR, ref_c, ref_r, beta=0.1)
    assert math.isclose(got[0].item(), -math.log(1 / (1 + math.exp(-0.2))), rel_tol=1e-6)
    for beta, ls in ((0.1, 0.0), (0.001, 0.2)):
        logits = (C - R) - (ref_c - ref_r)  # TRL: pi_logratios - ref_logratios
        trl = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
        torch.testing.assert_close(L.dpo(C, LC, R, LR, ref_c, ref_r, beta=beta, label_smoothing=ls), trl)


def test_sft_token_mean_and_sequence_mean():
    logps, lengths = torch.tensor([-6.0, -2.0]), torch.tensor([3.0, 1.0])
    pairs = Pairs(chosen=torch.tensor([0, 1]))
    token_mean, _ = microbatch_loss(LossConfig(type="sft"), logps, lengths, pairs, global_total=4)
    seq_mean, _ = microbatch_loss(LossConfig(type="sft", per_sequence_mean=True), logps, lengths, pairs, 2)
    assert token_mean.item() == pytest.approx(8 / 4)  # total NLL / total tokens
    assert seq_mean.item() == pytest.approx((2 + 2) / 2)  # mean of per-sequence means


def test_config_validation():
    with pytest.raises(ValueError, match="alpha"):
        LossConfig(alpha=1.5)
    with pytest.raises(ValueError, match="type must be one of"):
        LossConfig(type="ipo")
    with pytest.raises(ValueError, match="reference"):
        L.pair_losses(LossConfig(type="dpo"), C, LC, R, LR)


def test_simpo_step_approaches_symmetric_redi_step_as_beta_vanishes():
    """Paper, Appendix B: under SGD, SimPO at lr c/beta tends to symmetric REDI at lr c*sigmoid(gamma)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5)  # per pair: chosen and rejected "features"
    lengths = torch.tensor([[7.0, 3.0], [4.0, 9.0], [5.0, 5.0], [2.0, 6.0], [8.0, 1.0], [3.0, 3.0]])
    theta0 = torch.randn(5)
    c, gamma = 0.3, 1.0

    def step(loss_fn, lr):
        theta = theta0.clone().requires_grad_()
        logps = -(x @ theta).exp()  # a smooth, non-linear model of two log-prob sums per pair
        loss_fn(logps[0], lengths[:, 0], logps[1], lengths[:, 1]).sum().backward()
        return -lr * theta.grad

    redi_step = step(L.symmetric_redi, c * torch.sigmoid(torch.tensor(gamma)).item())
    errors = []
    for beta in (1.0, 1e-1, 1e-2, 1e-3):
        simpo_step = step(lambda *a: L.simpo(*a, beta=beta, gamma=gamma), c / beta)
        errors.append(((simpo_step - redi_step).norm() / redi_step.norm()).item())
    assert errors == sorted(errors, reverse=True) and errors[0] > 1e-2 and errors[-1] < 1e-3, errors


def _random_microbatch(n_pairs, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 50, (2 * n_pairs,), generator=g)
    logps = -torch.rand(2 * n_pairs, generator=g) * lengths
    return logps, lengths


@pytest.mark.parametrize("cfg", [LossConfig(type="redi"), LossConfig(type="symmetric"),
                                 LossConfig(type="simpo", beta=2.0), LossConfig(type="dpo", beta=0.1)])
def test_microbatch_split_equals_whole_batch(cfg):
    """Scaled losses and gradients summed over micro-batches of uneven sizes equal the global mean."""
    P = 7
    logps, lengths = _random_microbatch(P, seed=3)
    ref = logps - 1.0
    chosen, rejected = torch.arange(P) * 2, torch.arange(P) * 2 + 1  # interleaved roles

    whole = logps.clone().requires_grad_()
    losses = L.pair_losses(cfg, whole[chosen], lengths[chosen].float(), whole[rejected],
                           lengths[rejected].float(), ref[chosen], ref[rejected])
    losses.mean().backward()

    split = logps.clone().requires_grad_()
    total = 0.0
    for start, stop in ((0, 1), (1, 4), (4, 7)):  # pairs per micro-batch: 1, 3, 3
        seqs = torch.arange(2 * start, 2 * stop)
        pairs = Pairs(chosen=torch.arange(0, len(seqs), 2), rejected=torch.arange(1, len(seqs), 2))
        loss, _ = microbatch_loss(cfg, split[seqs], lengths[seqs], pairs, global_total=P,
                                  ref_logp_sum=ref[seqs])
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(losses.mean().item(), rel=1e-6)
    torch.testing.assert_close(split.grad, whole.grad)


@pytest.mark.parametrize("cfg", [LossConfig(type="redi", alpha=0.8), LossConfig(type="symmetric"),
                                 LossConfig(type="sft"), LossConfig(type="sft", per_sequence_mean=True)])
def test_sequence_coefficients_are_the_loss_gradient(cfg):
    logps, lengths = _random_microbatch(4, seed=5)
    if cfg.pairwise:
        pairs, total = Pairs(chosen=torch.tensor([0, 2, 4, 6]), rejected=torch.tensor([1, 3, 5, 7])), 10
    else:
        pairs = Pairs(chosen=torch.arange(8))
        total = 8 if cfg.per_sequence_mean else int(lengths.sum()) + 5  # other micro-batches hold more
    coeff = sequence_coefficients(cfg, lengths, pairs, total)
    x = logps.clone().requires_grad_()
    microbatch_loss(cfg, x, lengths, pairs, total)[0].backward()
    torch.testing.assert_close(coeff, x.grad)
    if cfg.type == "redi":  # the closed form of docs/design.md
        expected = torch.where(torch.arange(8) % 2 == 0, -1.0 / (lengths * 10), 0.8 / (lengths * 10))
        torch.testing.assert_close(coeff, expected.float())


def test_nonlinear_losses_have_no_coefficients():
    with pytest.raises(ValueError, match="two-pass"):
        sequence_coefficients(LossConfig(type="dpo"), torch.ones(2), Pairs(torch.tensor([0]), torch.tensor([1])), 1)


def test_metrics_by_hand():
    pairs = Pairs(chosen=torch.tensor([0, 2]), rejected=torch.tensor([1, 3]))
    logps = torch.stack([C, R], dim=1).flatten()  # c0 r0 c1 r1
    lengths = torch.stack([LC, LR], dim=1).flatten()
    _, m = microbatch_loss(LossConfig(type="redi"), logps, lengths, pairs, global_total=2)
    assert m["logps/chosen"].item() == -13.0 and m["logps/rejected"].item() == -20.0
    assert m["logps/chosen_mean"].item() == pytest.approx(-2.0 - 1.5)
    assert m["logps/rejected_mean"].item() == pytest.approx(-2.0 - 4.0)
    assert m["rewards/margin"].item() == pytest.approx(0.0 + 2.5)  # (-2 - -2) + (-1.5 - -4)
    assert m["rewards/accuracy"].item() == 1.0  # pair 0 ties (not a win), pair 1 wins
    assert m["lengths/chosen"].item() == 7.0 and m["lengths/rejected"].item() == 7.0


def _data_parallel_check():
    """Two DP ranks, each with its own micro-batches, summing gradients: equals the global mean."""
    rank, P = dist.get_rank(), 6
    logps, lengths = _random_microbatch(P, seed=11)
    cfg = LossConfig(type="redi")
    whole = logps.clone().requires_grad_()
    c, r = torch.arange(P) * 2, torch.arange(P) * 2 + 1
    L.redi(whole[c], lengths[c].float(), whole[r], lengths[r].float()).mean().backward()

    mine = logps.clone().requires_grad_()
    my_pairs = [(0, 1), (1, 2)] if rank == 0 else [(2, 6)]  # uneven: 2 pairs vs 4 pairs
    for start, stop in my_pairs:
        seqs = torch.arange(2 * start, 2 * stop)
        pairs = Pairs(chosen=torch.arange(0, len(seqs), 2), rejected=torch.arange(1, len(seqs), 2))
        microbatch_loss(cfg, mine[seqs], lengths[seqs], pairs, global_total=P)[0].backward()
    dist.all_reduce(mine.grad)  # summed, never averaged again
    torch.testing.assert_close(mine.grad, whole.grad)


def test_data_parallel_sum_equals_global_mean():
    run_ranks(2, _data_parallel_check)


def test_each_loss_takes_its_own_paper_defaults():
    assert L.LossConfig(type="dpo").beta == 0.001
    assert (L.LossConfig(type="simpo").beta, L.LossConfig(type="simpo").gamma) == (2.0, 1.0)
    assert L.LossConfig().alpha == 0.8 and L.LossConfig().beta is None  # REDI has no beta
    assert L.LossConfig(type="dpo", beta=0.1).beta == 0.1  # an explicit value wins
