"""Reference tasks: a base mixture, a reward, and their exact KL-regularised optima.

``make_mixture("ring")`` / ``make_mixture("random:4", dim=8)`` build the base distributions,
``make_quadratic_reward("linear:1,0", dim=2)`` the rewards, and :class:`ReferenceTask` ties them
together: ``task.optimum(β)`` is the exact p*_β ∝ p_base exp(r/β) (a Gaussian mixture you can
sample), ``task.frontier(betas)`` the exact reward-vs-KL frontier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffenvs.reference.mixture import GaussianMixture, OptimumPoint, QuadraticReward, optimum_point

MIXTURES = ("ring", "ring:K", "random", "random:K")
REWARDS = ("linear", "linear:w1,...,wd", "quadratic", "quadratic:c1,...,cd[@scale]")


def make_mixture(spec: object = "ring", dim: int = 2, seed: int = 0) -> GaussianMixture:
    """A base mixture from a name, or a :class:`GaussianMixture` as is.

    * ``"ring"`` / ``"ring:K"``: 2-D, K (8) equal components of std 0.3 on the circle of radius 2.
    * ``"random"`` / ``"random:K"``: ``dim``-D, K (4) components with means ~ N(0, 2² I), std 0.5,
      weights ~ Dirichlet(2) (drawn with ``seed``; the same task for the same arguments).
    """
    if isinstance(spec, GaussianMixture):
        if spec.dim != dim:
            raise ValueError(f"The mixture is {spec.dim}-D but dim={dim}; pass dim={spec.dim}.")
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"model must be a mixture name {list(MIXTURES)} or a GaussianMixture, got {type(spec).__name__}."
        )
    name, _, arg = spec.partition(":")
    if arg and not (arg.isdigit() and int(arg) >= 1):
        raise ValueError(
            f"Mixture {spec!r}: the number of components after ':' must be a positive integer."
        )
    if name == "ring":
        if dim != 2:
            raise ValueError(
                f"The 'ring' mixture is 2-D; got dim={dim}. Use 'random' for d-D tasks."
            )
        k = int(arg or 8)
        ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        means = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
        return GaussianMixture(torch.ones(k), means, torch.full((k,), 0.3**2))
    if name == "random":
        k = int(arg or 4)
        g = torch.Generator().manual_seed(int(seed))
        means = 2.0 * torch.randn((k, dim), dtype=torch.float64, generator=g)
        w = torch.as_tensor(np.random.default_rng(seed).gamma(2.0, size=k))
        return GaussianMixture(w, means, torch.full((k,), 0.5**2))
    raise ValueError(
        f"Unknown mixture {spec!r}; use one of {list(MIXTURES)} or pass a GaussianMixture."
    )


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as err:
        raise ValueError(f"{what}: {text!r} is not a comma-separated list of numbers.") from err
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: every number must be finite, got {text!r}.")
    return values


def make_quadratic_reward(spec: object = "linear", dim: int = 2) -> QuadraticReward:
    """A reward with a closed-form optimum from a spec, or a :class:`QuadraticReward` as is.

    * ``"linear"`` (r = x_1) or ``"linear:w1,...,wd"`` (r = wᵀx).
    * ``"quadratic"`` (r = -½ ||x - c||², c = (1, 1, 0, ...)) or ``"quadratic:c1,...,cd"``, with
      an optional ``@scale`` (r = -½ scale ||x - c||²), e.g. ``"quadratic:1,1@4"``.
    """
    if isinstance(spec, QuadraticReward):
        spec.check_dim(dim)
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"reward must be a spec string {list(REWARDS)} or a QuadraticReward, got {type(spec).__name__}."
        )
    name, _, arg = spec.partition(":")
    if name == "linear":
        w = _numbers(arg, f"reward {spec!r}") if arg else [1.0] + [0.0] * (dim - 1)
        reward = QuadraticReward.linear(w, name=spec)
    elif name == "quadratic":
        centre_text, _, scale_text = arg.partition("@")
        centre = (
            _numbers(centre_text, f"reward {spec!r}")
            if centre_text
            else ([1.0, 1.0] + [0.0] * (dim - 2))[:dim]
        )
        scale = _numbers(scale_text, f"reward {spec!r} scale")[0] if scale_text else 1.0
        reward = QuadraticReward.target(centre, scale, name=spec)
    else:
        raise ValueError(
            f"Unknown reference reward {spec!r}; use one of {list(REWARDS)} (rewards whose "
            "KL-regularised optimum is known in closed form), or pass a QuadraticReward."
        )
    reward.check_dim(dim)
    return reward


@dataclass(frozen=True, eq=False)
class ReferenceTask:
    """A base mixture and a reward: everything about the optimum that is known exactly."""

    base: GaussianMixture
    reward: QuadraticReward

    @property
    def dim(self) -> int:
        return self.base.dim

    def optimum(self, beta: float) -> GaussianMixture:
        """p*_β ∝ p_base exp(r/β), the maximiser of E_q[r] - β KL(q || p_base)."""
        return self.base.tilt(self.reward, beta)

    def point(self, beta: float) -> OptimumPoint:
        """(E_{p*_β}[r], KL(p*_β || p_base)) in closed form."""
        return optimum_point(self.base, self.reward, beta)

    def frontier(self, betas: object) -> list[OptimumPoint]:
        """The exact reward-vs-KL frontier at each β of ``betas``."""
        return [self.point(float(b)) for b in np.asarray(betas, dtype=np.float64).reshape(-1)]

    def base_reward(self) -> float:
        """E_{p_base}[r], exact."""
        return self.base.expected_reward(self.reward)
