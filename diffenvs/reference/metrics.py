"""How far a policy is from the exact optimum of a reference task.

* :func:`sliced_wasserstein`: sliced Wasserstein-2 distance between two sample sets (the mean over
  random unit directions of the squared 1-D W2 of the projections, square-rooted).
* :func:`knn_kl_divergence`: the k-nearest-neighbour estimate of KL(P || Q) from samples of both
  (Wang, Kulkarni & Verdú, "Divergence estimation for multidimensional densities via
  k-nearest-neighbor distances", 2009).
* :func:`sample_policy`: x_0 samples of any denoiser (e.g. a fine-tuned copy of ``sampler.unet``)
  run through the env's sampler, with the *exact* path KL to the base sampler
  ``Σ_k E ||μ_θ,k - μ_base,k||² / (2σ_k²)`` (both steps share σ_k). By the chain rule of KL the
  path KL is an upper bound on the KL between the two samplers' x_0 distributions, with equality
  when the policy's reverse process given x_0 is the base's (as for the optimal, h-transformed one).
* :func:`distance_report`: expected reward, path KL, and the distances of a sample set to exact
  samples of p*_β, next to the calibration of :func:`calibration_report` (p* against itself: the
  estimators' noise floor; the base mixture and the base sampler against p*: where training starts).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffenvs.logprob import gaussian_kl
from diffenvs.reference.tasks import ReferenceTask


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0
) -> float:
    """Sliced W2 between samples x (n, d) and y (m, d); quantiles matched at max(n, m) levels."""
    x, y = x.double().reshape(len(x), -1), y.double().reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"Samples of different dimension: {x.shape[1]} vs {y.shape[1]}.")
    g = torch.Generator().manual_seed(int(seed))
    theta = torch.randn((int(projections), x.shape[1]), dtype=torch.float64, generator=g)
    theta = theta / theta.norm(dim=1, keepdim=True)
    px, py = (x @ theta.T).sort(0).values, (y @ theta.T).sort(0).values
    n = max(len(px), len(py))
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n

    def at(p: torch.Tensor) -> torch.Tensor:
        if len(p) == n:
            return p
        pos = levels * len(p) - 0.5
        lo = pos.floor().clamp(0, len(p) - 1).long()
        hi = (lo + 1).clamp(max=len(p) - 1)
        w = (pos - lo.double()).clamp(0, 1)[:, None]
        return p[lo] * (1 - w) + p[hi] * w

    return float(((at(px) - at(py)) ** 2).mean().sqrt())


def _kth_distance(a: torch.Tensor, b: torch.Tensor, k: int, exclude_self: bool) -> torch.Tensor:
    out = []
    for chunk in a.split(2048):
        d = torch.cdist(chunk, b)
        kk = k + 1 if exclude_self else k
        out.append(d.topk(kk, dim=1, largest=False).values[:, -1])
    return torch.cat(out)


def knn_kl_divergence(x: torch.Tensor, y: torch.Tensor, k: int = 5) -> float:
    """kNN estimate of KL(P || Q) in nats from x ~ P (n, d) and y ~ Q (m, d) (Wang et al. 2009).

    ``d/n Σ_i log(ν_k(i) / ρ_k(i)) + log(m / (n - 1))`` with ρ_k(i) the distance from x_i to its
    k-th neighbour among the other x, ν_k(i) to its k-th neighbour among y. Consistent but biased
    at finite n (more so in higher d): compare against :func:`calibration_report`'s floor.
    """
    x, y = x.double().reshape(len(x), -1), y.double().reshape(len(y), -1)
    n, m, d = len(x), len(y), x.shape[1]
    if n <= k or m < k:
        raise ValueError(
            f"knn_kl_divergence needs more than k={k} samples of each, got {n} and {m}."
        )
    rho = _kth_distance(x, x, k, exclude_self=True).clamp_min(1e-300)
    nu = _kth_distance(x, y, k, exclude_self=False).clamp_min(1e-300)
    return float(d * torch.log(nu / rho).mean() + math.log(m / (n - 1)))


@torch.no_grad()
def sample_policy(
    sampler: Any,
    unet: Any,
    n: int,
    *,
    condition: int = 0,
    seed: int = 0,
    batch: int = 4096,
) -> dict[str, torch.Tensor]:
    """Run ``unet`` (a policy copy of ``sampler.unet``, or ``sampler.unet`` itself) through the
    sampler from fresh noise: ``{"samples": x_0 (n, d), "path_kl": (n,)}`` (float64); ``path_kl``
    is the exact per-trajectory KL of the policy's steps to the base model's steps."""
    g = torch.Generator().manual_seed(int(seed))
    device = sampler.unet.device
    samples, kls = [], []
    n_cond = int(sampler.embed_shape[-1])
    for start in range(0, int(n), int(batch)):
        b = min(int(batch), int(n) - start)
        x = torch.randn((b, *sampler.latent_shape), generator=g).to(device)
        embeds = torch.zeros((b, *sampler.embed_shape), device=device)
        embeds[..., condition % n_cond] = 1.0
        kl = torch.zeros(b, dtype=torch.float64)
        for k in range(sampler.num_steps):
            kk = torch.full((b,), k, dtype=torch.long, device=device)
            dist = sampler.distribution(sampler.model_output(unet, x, kk, embeds), x, kk)
            if unet is not sampler.unet:
                base = sampler.distribution(
                    sampler.model_output(sampler.unet, x, kk, embeds), x, kk
                )
                kl += gaussian_kl(dist.mean, base.mean, dist.std).double().cpu()
            x = dist.sample(torch.randn(x.shape, generator=g).to(device))
        samples.append(x.reshape(b, -1).double().cpu())
        kls.append(kl)
    return {"samples": torch.cat(samples), "path_kl": torch.cat(kls)}


def calibration_report(
    task: ReferenceTask,
    beta: float,
    base_samples: torch.Tensor,
    n: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Reference values of the distances to p*_β at sample size ``n`` (that of ``base_samples``).

    ``pstar_vs_pstar``: two independent exact samples of p* (the estimators' noise floor);
    ``mixture_vs_pstar``: exact base-mixture samples; ``sampler_vs_pstar``: the base *sampler*'s
    samples (where fine-tuning starts); ``sampler_vs_mixture``: the sampler's discretisation error.
    """
    n = len(base_samples) if n is None else int(n)
    g = torch.Generator().manual_seed(int(seed) + 12345)
    opt = task.optimum(beta)
    ref, ref2 = opt.sample(n, g), opt.sample(n, g)
    mix = task.base.sample(n, g)
    base = base_samples[:n].double()
    out: dict[str, float] = {}
    for name, a, b in (
        ("pstar_vs_pstar", ref2, ref),
        ("mixture_vs_pstar", mix, ref),
        ("sampler_vs_pstar", base, ref),
        ("sampler_vs_mixture", base, task.base.sample(n, g)),
    ):
        out[f"sw2_{name}"] = sliced_wasserstein(a, b, seed=seed)
        out[f"knn_kl_{name}"] = knn_kl_divergence(a, b)
    return out


def distance_report(
    task: ReferenceTask,
    beta: float,
    samples: torch.Tensor,
    path_kl: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Expected reward, KL to the base, and distance to p*_β of a policy's ``samples`` (n, d)."""
    x = samples.double().reshape(len(samples), -1)
    r = task.reward(x)
    point = task.point(beta)
    ref = task.optimum(beta).sample(len(x), torch.Generator().manual_seed(int(seed) + 777))
    out = {
        "beta": float(beta),
        "n": float(len(x)),
        "reward_mean": float(r.mean()),
        "reward_sem": float(r.std() / math.sqrt(len(x))),
        "objective": float(r.mean())
        - beta * (float(path_kl.mean()) if path_kl is not None else 0.0),
        "optimum_reward": point.expected_reward,
        "optimum_kl": point.kl,
        "optimum_objective": point.expected_reward - beta * point.kl,
        "sw2_to_pstar": sliced_wasserstein(x, ref, seed=seed),
        "knn_kl_to_pstar": knn_kl_divergence(x, ref),
    }
    if path_kl is not None:
        out["path_kl"] = float(path_kl.double().mean())
    return out
