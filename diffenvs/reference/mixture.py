"""Gaussian mixtures: densities, exact samples, the exact denoiser of any Gaussian noising path, and
the closed-form KL-regularised optimum of a quadratic reward.

A mixture ``p(x) = Σ_k π_k N(x; μ_k, Σ_k)`` noised by a Gaussian path ``x_t = a_t x_0 + s_t ε``
(DDPM/DDIM: ``a = sqrt(ᾱ_t)``, ``s = sqrt(1 - ᾱ_t)``; rectified flow: ``a = 1 - t``, ``s = t``)
stays a mixture, ``p_t(x) = Σ_k π_k N(x; a μ_k, a² Σ_k + s² I)``, so its score and the posterior
mean ``E[x_0 | x_t]`` are closed-form (:meth:`GaussianMixture.posterior_mean`): an *exact*
diffusion model of a known distribution.

For a reward ``r(x) = bᵀx - ½ xᵀQx + c`` (:class:`QuadraticReward`: linear when Q = 0) the
KL-regularised optimum ``p*(x) ∝ p(x) exp(r(x)/β)`` is again a Gaussian mixture
(:meth:`GaussianMixture.tilt`): component k becomes ``N(μ'_k, Σ'_k)`` with
``Σ'_k⁻¹ = Σ_k⁻¹ + Q/β`` and ``μ'_k = Σ'_k (Σ_k⁻¹ μ_k + b/β)``, reweighted by
``π'_k ∝ π_k Z_k``, ``log Z_k = ½ log(|Σ'_k|/|Σ_k|) + ½ μ'_kᵀΣ'_k⁻¹μ'_k - ½ μ_kᵀΣ_k⁻¹μ_k + c/β``.
Then ``log E_p[exp(r/β)] = log Σ_k π_k Z_k`` and ``KL(p* || p) = E_{p*}[r]/β - log E_p[exp(r/β)]``,
both exact (:func:`optimum_point`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LOG_2PI = math.log(2 * math.pi)


def _as_f64(x: object, what: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must hold finite numbers, got {t.tolist()}.")
    return t


class GaussianMixture:
    """``Σ_k π_k N(μ_k, Σ_k)`` in d dimensions (float64 parameters, any-dtype inputs).

    Args:
        weights: (K,) non-negative, normalised here.
        means: (K, d).
        covs: (K, d, d) symmetric positive definite, or (K,) / (K, d) for isotropic / diagonal.
    """

    def __init__(self, weights: object, means: object, covs: object) -> None:
        w = _as_f64(weights, "weights").reshape(-1)
        mu = _as_f64(means, "means")
        if mu.ndim != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError(
                f"means must have shape (K, d) with K = {w.shape[0]} weights, got {tuple(mu.shape)}."
            )
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {w.tolist()}.")
        k, d = mu.shape
        c = _as_f64(covs, "covs")
        if c.shape == (k,):
            c = c[:, None, None] * torch.eye(d, dtype=torch.float64)
        elif c.shape == (k, d):
            c = torch.diag_embed(c)
        if c.shape != (k, d, d):
            raise ValueError(
                f"covs must have shape (K,), (K, d) or (K, d, d) = ({k}, {d}, {d}), got {tuple(c.shape)}."
            )
        c = 0.5 * (c + c.transpose(1, 2))
        lam, vec = torch.linalg.eigh(c)
        if not bool((lam > 0).all()):
            raise ValueError(
                "Every component covariance must be positive definite; smallest eigenvalue "
                f"{float(lam.min()):.3g}."
            )
        self.weights, self.means, self.covs = w / w.sum(), mu, c
        self.eigvals, self.eigvecs = lam, vec  # Σ_k = U_k diag(λ_k) U_kᵀ
        self.chol = torch.linalg.cholesky(c)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"

    # ------------------------------------------------------------------------------------------
    def _noised_log_terms(
        self, x: torch.Tensor, a: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π_k N(x; a μ_k, a²Σ_k + s²I) (N, K), rotated residuals z (N, K, d), variances (N, K, d))."""
        dtype = x.dtype
        a2, s2 = (a * a)[:, None, None], (s * s)[:, None, None]
        mu, vec = (
            self.means.to(dtype=dtype, device=x.device),
            self.eigvecs.to(dtype=dtype, device=x.device),
        )
        lam = self.eigvals.to(dtype=dtype, device=x.device)
        y = x[:, None, :] - a[:, None, None] * mu[None]  # (N, K, d)
        z = torch.einsum("nkd,kde->nke", y, vec)  # Uᵀ y
        var = a2 * lam[None] + s2  # (N, K, d)
        log_n = -0.5 * ((z * z) / var).sum(-1) - 0.5 * torch.log(var).sum(-1)
        log_n = log_n - 0.5 * self.dim * _LOG_2PI
        log_w = torch.log(self.weights.to(dtype=dtype, device=x.device)).clamp_min(-1e30)
        return log_n + log_w[None], z, var

    @staticmethod
    def _per_sample(v: object, n: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
        return t.expand(n) if t.ndim == 0 else t.reshape(n)

    def log_prob(self, x: torch.Tensor, a: object = 1.0, s: object = 0.0) -> torch.Tensor:
        """log p_t(x) (N,) of the mixture noised to ``x = a x_0 + s ε`` (``a=1, s=0``: the mixture)."""
        n = x.shape[0]
        terms, _, _ = self._noised_log_terms(
            x, self._per_sample(a, n, x), self._per_sample(s, n, x)
        )
        return torch.logsumexp(terms, 1)

    def posterior_mean(self, x: torch.Tensor, a: object, s: object) -> torch.Tensor:
        """E[x_0 | x_t = x] (N, d) for ``x_t = a x_0 + s ε``; ``a``, ``s`` scalars or (N,)."""
        n = x.shape[0]
        a_t, s_t = self._per_sample(a, n, x), self._per_sample(s, n, x)
        terms, z, var = self._noised_log_terms(x, a_t, s_t)
        gamma = torch.softmax(terms, 1)  # (N, K) responsibilities
        lam = self.eigvals.to(dtype=x.dtype, device=x.device)
        vec = self.eigvecs.to(dtype=x.dtype, device=x.device)
        # E[x_0 | x_t, k] = μ_k + a Σ_k (a² Σ_k + s² I)⁻¹ (x_t - a μ_k), in each component's eigenbasis.
        shrink = a_t[:, None, None] * lam[None] / var * z  # (N, K, d)
        delta = torch.einsum("nke,kde->nkd", shrink, vec)
        mu = self.means.to(dtype=x.dtype, device=x.device)
        return (gamma[:, :, None] * (mu[None] + delta)).sum(1)

    def score(self, x: torch.Tensor, a: object = 1.0, s: object = 0.0) -> torch.Tensor:
        """∇_x log p_t(x) (N, d), closed form (Tweedie: (a E[x_0|x] - x) / s² for s > 0)."""
        n = x.shape[0]
        a_t, s_t = self._per_sample(a, n, x), self._per_sample(s, n, x)
        terms, z, var = self._noised_log_terms(x, a_t, s_t)
        gamma = torch.softmax(terms, 1)
        vec = self.eigvecs.to(dtype=x.dtype, device=x.device)
        grad = torch.einsum("nke,kde->nkd", -z / var, vec)  # -C_k⁻¹ (x - a μ_k)
        return (gamma[:, :, None] * grad).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact float64 samples (n, d)."""
        k = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        eps = torch.randn((int(n), self.dim), dtype=torch.float64, generator=generator)
        return self.means[k] + torch.einsum("nde,ne->nd", self.chol[k], eps)

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    # ------------------------------------------------------------------------------------------
    def _tilted_components(
        self, reward: QuadraticReward, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log π_k Z_k (K,), tilted means (K, d), tilted covariances (K, d, d))."""
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number > 0, got {beta}.")
        reward.check_dim(self.dim)
        prec = torch.linalg.inv(self.covs)  # (K, d, d)
        new_prec = prec + reward.Q[None] / beta
        new_prec = 0.5 * (new_prec + new_prec.transpose(1, 2))
        lam = torch.linalg.eigvalsh(new_prec)
        if not bool((lam > 0).all()):
            raise ValueError(
                f"exp(r/β) with this quadratic reward and β={beta} is not integrable under the "
                "mixture (Σ_k⁻¹ + Q/β is not positive definite): use a larger β or a concave reward."
            )
        new_cov = torch.linalg.inv(new_prec)
        new_cov = 0.5 * (new_cov + new_cov.transpose(1, 2))
        h = torch.einsum("kde,ke->kd", prec, self.means) + reward.b[None] / beta
        new_mu = torch.einsum("kde,ke->kd", new_cov, h)
        log_z = (
            0.5 * (torch.logdet(new_cov) - torch.logdet(self.covs))
            + 0.5 * (new_mu * h).sum(1)
            - 0.5 * torch.einsum("kd,kde,ke->k", self.means, prec, self.means)
            + reward.c / beta
        )
        return torch.log(self.weights) + log_z, new_mu, new_cov

    def tilt(self, reward: QuadraticReward, beta: float) -> GaussianMixture:
        """The KL-regularised optimum p*_β ∝ p · exp(r/β), an exact Gaussian mixture."""
        log_w, mu, cov = self._tilted_components(reward, beta)
        return GaussianMixture(torch.softmax(log_w, 0), mu, cov)

    def log_partition(self, reward: QuadraticReward, beta: float) -> float:
        """log E_p[exp(r(x)/β)], exact."""
        log_w, _, _ = self._tilted_components(reward, beta)
        return float(torch.logsumexp(log_w, 0))

    def expected_reward(self, reward: QuadraticReward) -> float:
        """E_p[r(x)], exact: Σ_k π_k (bᵀμ_k - ½ (tr(QΣ_k) + μ_kᵀQμ_k) + c)."""
        reward.check_dim(self.dim)
        per = (
            self.means @ reward.b
            - 0.5 * torch.einsum("de,ked->k", reward.Q, self.covs)
            - 0.5 * torch.einsum("kd,de,ke->k", self.means, reward.Q, self.means)
        )
        return float((self.weights * per).sum() + reward.c)


@dataclass(frozen=True, eq=False)
class QuadraticReward:
    """``r(x) = bᵀx - ½ xᵀQx + c`` on flat samples (N, d); ``Q = 0`` is a linear reward."""

    b: torch.Tensor  # (d,)
    Q: torch.Tensor  # (d, d) symmetric
    c: float = 0.0
    name: str = "quadratic"

    @classmethod
    def linear(cls, weights: object, name: str = "linear") -> QuadraticReward:
        """``r(x) = wᵀx``."""
        w = _as_f64(weights, "linear reward weights").reshape(-1)
        return cls(w, torch.zeros(len(w), len(w), dtype=torch.float64), 0.0, name)

    @classmethod
    def target(cls, centre: object, scale: float = 1.0, name: str = "quadratic") -> QuadraticReward:
        """``r(x) = -½ scale ||x - centre||²``."""
        c = _as_f64(centre, "quadratic reward centre").reshape(-1)
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(
                f"The quadratic reward's scale must be a finite number > 0, got {scale}."
            )
        q = scale * torch.eye(len(c), dtype=torch.float64)
        return cls(scale * c, q, float(-0.5 * scale * (c @ c)), name)

    @property
    def dim(self) -> int:
        return int(self.b.shape[0])

    def check_dim(self, d: int) -> None:
        if self.dim != d or self.Q.shape != (d, d):
            raise ValueError(
                f"The reward {self.name!r} is defined on {self.dim}-D samples but the mixture is "
                f"{d}-D; give {d} numbers (e.g. 'linear:{','.join(['1'] + ['0'] * (d - 1))}')."
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """r(x) (N,) for samples (N, d) (any float dtype; computed in it)."""
        b, q = self.b.to(x), self.Q.to(x)
        return x @ b - 0.5 * ((x @ q) * x).sum(-1) + self.c


@dataclass(frozen=True)
class OptimumPoint:
    """The exact KL-regularised optimum at one β: the reward-vs-KL frontier's point."""

    beta: float
    expected_reward: float  # E_{p*_β}[r]
    kl: float  # KL(p*_β || p_base)
    log_partition: float  # log E_p[exp(r/β)]


def optimum_point(base: GaussianMixture, reward: QuadraticReward, beta: float) -> OptimumPoint:
    """(E_{p*}[r], KL(p* || p)) of p*_β ∝ p exp(r/β), in closed form.

    ``log p*/p = r/β - log E_p[exp(r/β)]``, so ``KL(p*||p) = E_{p*}[r]/β - log E_p[exp(r/β)]``.
    """
    tilted = base.tilt(reward, beta)
    er = tilted.expected_reward(reward)
    log_z = base.log_partition(reward, beta)
    return OptimumPoint(float(beta), er, max(0.0, er / beta - log_z), log_z)
