"""Distillation losses as plain functions of tensors (docs/reference.md §1).

- ``kd_loss`` is KL(p_T || p_S) at temperature T with ``reduction="batchmean"``, times T**2 (Hinton section 2);
  ``noisy_logits`` perturbs a teacher's logits with relative Gaussian noise (Sau & Balasubramanian 2016).
- ``logit_mse`` is Ba & Caruana's logit matching, 1/2 ||z_s - z_t||^2 per example, averaged over the batch; with
  ``center=True`` both sides are centred per example, so a teacher that gives only probabilities (log p_T equals
  the logits up to a per-example constant) is matched exactly.
- RKD potentials (Park et al. 2019) and attention maps (Zagoruyko & Komodakis 2017).

The registered loss terms (``kd/losses/``) call these; the identities are tested on these functions directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TINY = torch.finfo(torch.float32).tiny  # floor for log p: probabilities keep their information down to here

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T || p_S) at temperature T, batchmean, times T^2."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def noisy_logits(logits: torch.Tensor, sigma: float, generator: torch.Generator, center: bool = False) -> torch.Tensor:
    """Sau & Balasubramanian 2016's noisy teacher: z * (1 + xi), xi ~ N(0, sigma) drawn per element (per example
    and class) from ``generator``. ``center``: centre each row first (log-probabilities equal logits up to a
    per-example constant, which relative noise would otherwise scale)."""
    z = logits.float()
    if center:
        z = z - z.mean(1, keepdim=True)
    xi = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return z * (1 + sigma * xi)


def bucket_kd_loss(student_logits, topk_index, topk_logprob, temperature: float) -> torch.Tensor:
    """KD from a teacher that reveals only its top-k probabilities: the missing mass is one extra bucket.

    Both distributions are reduced to k + 1 buckets (the k named classes, everything else); at T=1 this is the
    exact KL between the bucketed distributions.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float(), dim=1)
    s_top = log_p_s.gather(1, topk_index)
    s_rest = torch.log1p(-s_top.exp().sum(1).clamp(max=1 - 1e-6))
    t_rest = torch.log1p(-topk_logprob.exp().sum(1).clamp(max=1 - 1e-6))
    s_buckets = torch.cat([s_top, s_rest[:, None]], 1)
    t_buckets = torch.cat([topk_logprob.float(), t_rest[:, None]], 1)
    return F.kl_div(F.log_softmax(s_buckets / t, 1), F.log_softmax(t_buckets / t, 1), reduction="batchmean",
                    log_target=True) * t * t


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, center: bool = False,
              reduce: str = "sum") -> torch.Tensor:
    """1/2 ||z_s - z_t||^2 summed over classes (``reduce="mean"``: averaged over classes), averaged over the batch;
    optionally centred per example."""
    s, t = student_logits.float(), teacher_logits.float()
    if center:
        s = s - s.mean(1, keepdim=True)
        t = t - t.mean(1, keepdim=True)
    per_example = (s - t).pow(2).sum(1) if reduce == "sum" else (s - t).pow(2).mean(1)
    return 0.5 * per_example.mean()


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(1e-12)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance_potential(e: torch.Tensor) -> torch.Tensor:
    """psi_D(i, j) = ||e_i - e_j|| / mu, mu the mean distance over distinct pairs."""
    d = _pairwise_distances(e.flatten(1).float())
    mu = d[d > 0].mean()
    return d / mu


def rkd_angle_potential(e: torch.Tensor) -> torch.Tensor:
    """psi_A(i, j, k) = <e_ij, e_kj>, unit difference vectors around the apex j.

    Computed from the Gram matrix: <e_i - e_j, e_k - e_j> = G_ik - G_ij - G_kj + G_jj, divided by the two
    distances, so the cost is O(B^2 D + B^3) rather than O(B^3 D). Entries with i == j or k == j are 0.
    """
    e = e.flatten(1).float()
    e = e - e.mean(0, keepdim=True)  # translation-invariant anyway; centring keeps the Gram differences accurate
    g = e @ e.t()
    sq = g.diagonal()
    d = (sq[:, None] + sq[None, :] - 2 * g).clamp_min(1e-12).sqrt()
    num = g[None, :, :] - g[:, :, None] - g[:, None, :] + sq[:, None, None]  # [j, i, k]
    den = d[:, :, None] * d[:, None, :]
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    apex = eye[:, :, None] | eye[:, None, :]
    return torch.where(apex, torch.zeros_like(num), num / den)


def rkd_distance_loss(student_feat, teacher_feat):
    with torch.no_grad():
        t = rkd_distance_potential(teacher_feat)
    return F.smooth_l1_loss(rkd_distance_potential(student_feat), t)


def rkd_angle_loss(student_feat, teacher_feat):
    with torch.no_grad():
        t = rkd_angle_potential(teacher_feat)
    return F.smooth_l1_loss(rkd_angle_potential(student_feat), t)


def attention_map(feat: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis: mean of squared activations over channels, flattened, L2-normalised."""
    return F.normalize(feat.float().pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student_feat, teacher_feat):
    s, t = attention_map(student_feat), attention_map(teacher_feat)
    if s.shape != t.shape:  # different spatial sizes: bring the student's map to the teacher's
        side = int(round(t.shape[1] ** 0.5))
        s_side = int(round(s.shape[1] ** 0.5))
        s = F.normalize(F.interpolate(s.view(-1, 1, s_side, s_side), size=(side, side), mode="bilinear",
                                      align_corners=False).flatten(1), dim=1)
    return (s - t).pow(2).mean()
