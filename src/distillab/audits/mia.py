"""Membership-inference metrics: ROC, AUC, TPR at a low false-positive rate, bootstrap intervals, and the scores of
the likelihood-ratio attack (LiRA; Carlini et al. 2022, "Membership inference attacks from first principles").

A higher score means "member". Everything is computed in float64 on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import require


def _scores(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    require(np.isfinite(arr).all(), "membership scores must be finite numbers; an attack produced NaN or infinity")
    return arr


def _pair(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    m, n = _scores(member_scores), _scores(nonmember_scores)
    require(len(m) >= 1 and len(n) >= 1, "a membership game needs at least one member and one non-member")
    return m, n


def roc_curve(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1): one point per distinct score, calling "member" every score >= it. Tied
    scores are never split, so no threshold can pick members out of a tie."""
    m, n = _pair(member_scores, nonmember_scores)
    scores = np.concatenate([m, n])
    is_member = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    tp, fp = np.cumsum(is_member), np.cumsum(1 - is_member)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    return np.r_[0.0, fp[last_of_tie] / len(n)], np.r_[0.0, tp[last_of_tie] / len(m)]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(member_scores, nonmember_scores) -> float:
    """P(member score > non-member score) + P(tie) / 2: the Mann-Whitney statistic, the area under the ROC."""
    m, n = _pair(member_scores, nonmember_scores)
    ranks = _average_ranks(np.concatenate([m, n]))
    u = ranks[:len(m)].sum() - len(m) * (len(m) + 1) / 2.0
    return float(u / (len(m) * len(n)))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most ``fpr``."""
    require(0 < fpr < 1, f"a false-positive rate must be between 0 and 1, got {fpr}")
    fprs, tprs = roc_curve(member_scores, nonmember_scores)
    # a float rate such as 0.3 may be 0.30000000000000004 when counted; allow the rounding, never a whole example
    return float(tprs[fprs <= fpr + 1e-12].max())


def bootstrap(member_scores, nonmember_scores, fprs, generator: torch.Generator, rounds: int = 200) -> dict:
    """Point estimates and 95% percentile intervals of the AUC and of TPR at each of ``fprs``: members and
    non-members are resampled separately, with replacement, ``rounds`` times (draws from ``generator``).

    ``{"auc": a, "auc_ci": [lo, hi], "tpr_at": {fpr: t}, "tpr_ci": {fpr: [lo, hi]}, "rounds": rounds}``."""
    require(rounds >= 1, f"bootstrap rounds must be at least 1, got {rounds}")
    m, n = _pair(member_scores, nonmember_scores)
    fprs = [float(f) for f in fprs]
    aucs, tprs = [], {f: [] for f in fprs}
    for _ in range(rounds):
        mb = m[torch.randint(len(m), (len(m),), generator=generator).numpy()]
        nb = n[torch.randint(len(n), (len(n),), generator=generator).numpy()]
        aucs.append(auc(mb, nb))
        for f in fprs:
            tprs[f].append(tpr_at_fpr(mb, nb, f))

    def interval(values) -> list[float]:
        return [float(v) for v in np.percentile(np.asarray(values), [2.5, 97.5])]

    return {"auc": auc(m, n), "auc_ci": interval(aucs), "tpr_at": {f: tpr_at_fpr(m, n, f) for f in fprs},
            "tpr_ci": {f: interval(tprs[f]) for f in fprs}, "rounds": rounds}


def needed_nonmembers(fpr: float) -> int:
    """Non-members needed to read TPR at ``fpr``: enough that at least 10 false positives can be counted."""
    require(0 < fpr < 1, f"a false-positive rate must be between 0 and 1, got {fpr}")
    return math.ceil(10 / fpr - 1e-9)  # 10 / 0.001 must give 10000, not 10001 by rounding


# --------------------------------------------------------------------------------------------------------------
# LiRA


def shadow_design(n: int, shadows: int, generator: torch.Generator) -> torch.Tensor:
    """Which shadow trains on which example, bool (shadows, n): every example IN for exactly half of the shadows, a
    random half for each (so every example has IN and OUT shadows, as online LiRA needs)."""
    require(shadows >= 2 and shadows % 2 == 0, f"shadow models come in pairs (each example IN for half), got {shadows}")
    ranks = torch.rand(n, shadows, generator=generator).argsort(1).argsort(1)  # a random permutation per example
    return (ranks < shadows // 2).T.contiguous()


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j, in float64: the true class's log-odds, which LiRA models
    as Gaussian (the probability itself is not, and saturates)."""
    z = logits.detach().double()
    labels = labels.to(z.device).long()
    require(z.dim() == 2 and z.shape[1] >= 2 and labels.shape == (z.shape[0],),
            f"logit_confidence takes logits (N, K>=2) and labels (N,), got {tuple(z.shape)} and {tuple(labels.shape)}")
    own = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], float("-inf")).logsumexp(1)
    return own - others


def lira_scores(target_conf, shadow_conf, shadow_in) -> torch.Tensor:
    """Online LiRA scores (float64), higher = member: log N(c; mu_in, s) - log N(c; mu_out, s) per example, with
    mu_in / mu_out the mean confidence of the shadows that did / did not train on it and one global s (Carlini et
    al. recommend a fixed variance with few shadows). An example no shadow trained on gets the offline one-sided
    score (c - mu_out) / s.

    ``target_conf`` (n,), ``shadow_conf`` (N_shadows, n), ``shadow_in`` bool (N_shadows, n).

    s pools the spread of each example's IN and OUT confidences around their own means; with too few shadows for
    that (one IN and one OUT each), it is the spread of all shadow confidences, as the reference code does."""
    c = torch.as_tensor(target_conf).double().cpu()
    conf = torch.as_tensor(shadow_conf).double().cpu()
    inside = torch.as_tensor(shadow_in).bool().cpu()
    require(conf.dim() == 2 and conf.shape == inside.shape and conf.shape[1] == c.shape[0] and c.dim() == 1,
            f"lira_scores takes target (n,), shadow confidences and IN mask (N_shadows, n); got {tuple(c.shape)}, "
            f"{tuple(conf.shape)}, {tuple(inside.shape)}")
    require(bool(torch.isfinite(c).all() and torch.isfinite(conf).all()), "LiRA confidences must be finite")
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    require(bool((n_out >= 1).all()), "LiRA needs at least one shadow that did not train on each example")
    inf, outf = inside.double(), (~inside).double()
    mu_in = (conf * inf).sum(0) / n_in.clamp_min(1)
    mu_out = (conf * outf).sum(0) / n_out
    residuals = torch.where(inside, conf - mu_in, conf - mu_out)
    dof = int(conf.numel() - (n_in > 0).sum() - (n_out > 0).sum())  # one mean fitted per non-empty group
    if dof > 0:
        var = float((residuals ** 2).sum()) / dof
    else:
        var = float(conf.var(unbiased=False)) if conf.numel() > 1 else 0.0
    s = math.sqrt(max(var, 1e-12))  # all shadows agreeing exactly: any spread ranks the same
    online = ((c - mu_out) ** 2 - (c - mu_in) ** 2) / (2 * s * s)  # the two Gaussians share s: constants cancel
    offline = (c - mu_out) / s
    return torch.where(n_in > 0, online, offline)
