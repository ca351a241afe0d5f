"""Gaussian policy steps of a flow-matching sampler (SD3, FLUX): the Flow-GRPO SDE and CPS.

A flow-matching model predicts a velocity v = dx/dσ along the straight path
x_σ = (1 - σ) x_0 + σ ε. The sampler of the diffusers pipelines is the deterministic Euler step
(an ODE step, no log-probability):

    x_{σ'} = x_σ + (σ' - σ) v,      σ' < σ the next sigma of the schedule (dt = σ' - σ < 0).

Liu et al., "Flow-GRPO: Training Flow Matching Models via Online RL" (eq. 8-9), replace it by the
Euler-Maruyama step of the reverse SDE that has the same marginals. With the noise estimate
ε̂ = x + (1 - σ) v (which equals ε on the straight path) the score is -ε̂/σ, and one step is the
Gaussian

    x_{σ'} ~ N(x + dt · (v + s_σ² / (2σ) · ε̂),  (s_σ √(-dt))² I),   s_σ = a · √(σ / (1 - σ)),

where ``a`` is ``noise_level`` (Flow-GRPO uses 0.7). At σ = 1 the pipeline's first step would
divide by zero; as Flow-GRPO does, ``1 - σ`` there is replaced by ``1 - σ_1``, σ_1 the schedule's
second sigma. With ``a = 0`` the step is the Euler step exactly.

Wang & Yu, "Coefficients-Preserving Sampling for Reinforcement Learning with Flow Matching" (CPS)
keep the coefficients of x_0 and of the noise on the straight path: with x̂_0 = x - σ v,

    x_{σ'} ~ N((1 - σ') x̂_0 + √(σ'² - s²) · ε̂,  s² I),     s = σ' · sin(a π / 2),  0 <= a <= 1,

so the total noise weight is σ' (what the next latent of the path carries); its final step
(σ' = 0) is deterministic.

Both means are linear in (x, v): mean = A_k x + B_k v with per-step scalars A_k, B_k and a per-step
std s_k, computed once per schedule in float64 from the scheduler's sigmas and stored in float32
(:class:`FlowCoefficients`), so an ODE step (A = 1, B = dt) is bit for bit
``FlowMatchEulerDiscreteScheduler.step``. Distributions are :class:`diffenvs.logprob.StepDistribution`
(the DDIM family's type): log-probabilities summed over the latent's dimensions (Flow-GRPO averages
them; the sum is the joint log-likelihood), std 0 (an ODE step, CPS's last step) has log-prob 0.
:func:`step_kl` is the closed-form KL between two such Gaussians.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffenvs.logprob import StepDistribution

SDE_TYPES = ("sde", "cps")
"""``"sde"``: Flow-GRPO's SDE step; ``"cps"``: Wang & Yu's coefficients-preserving step."""

#: The largest per-step std of an SDE step (latents have unit scale); see :func:`flow_coefficients`.
MAX_SDE_STD = 5.0

_FIELDS = ("x_coeff", "v_coeff", "std", "sigma", "sigma_next", "timestep", "prev_timestep")


@dataclass
class FlowCoefficients:
    """Per-step scalars of flow Gaussian steps, one row per step: mean = x_coeff·x + v_coeff·v."""

    sde_type: str
    x_coeff: torch.Tensor  # (T,) A_k
    v_coeff: torch.Tensor  # (T,) B_k
    std: torch.Tensor  # (T,) s_k (0: a deterministic, ODE step)
    sigma: torch.Tensor  # (T,) σ of x_t
    sigma_next: torch.Tensor  # (T,) σ' of x_{t-1}
    timestep: torch.Tensor  # (T,) the scheduler timestep of x_t (σ · num_train_timesteps)
    prev_timestep: torch.Tensor  # (T,) the timestep of x_{t-1} (0 at the end)

    def __getitem__(self, index: Any) -> FlowCoefficients:
        """The coefficients of a subset of steps (an int or a (B,) index tensor)."""
        return FlowCoefficients(self.sde_type, *(getattr(self, f)[index] for f in _FIELDS))

    def to(self, device: torch.device | str) -> FlowCoefficients:
        return FlowCoefficients(self.sde_type, *(getattr(self, f).to(device) for f in _FIELDS))


def check_noise_level(noise_level: Any, num_steps: int, sde_type: str) -> list[float]:
    """``noise_level`` as one float per step, or a clear error (>= 0, finite; <= 1 for CPS)."""
    if sde_type not in SDE_TYPES:
        raise ValueError(f"Unknown sde_type {sde_type!r}; use one of {list(SDE_TYPES)}.")
    if isinstance(noise_level, bool):
        raise TypeError(f"noise_level must be a number or a list of numbers, got {noise_level!r}.")
    if isinstance(noise_level, int | float):
        levels = [float(noise_level)] * int(num_steps)
    elif isinstance(noise_level, Sequence | torch.Tensor) and not isinstance(noise_level, str):
        levels = [float(x) for x in noise_level]
        if len(levels) != int(num_steps):
            raise ValueError(
                f"noise_level has {len(levels)} values but there are {num_steps} steps; give one "
                "number (every step) or one per step (0 makes a step the deterministic ODE step)."
            )
    else:
        raise TypeError(
            f"noise_level must be a number or a list of numbers, got {type(noise_level).__name__}."
        )
    top = 1.0 if sde_type == "cps" else 100.0
    bad = [x for x in levels if not (math.isfinite(x) and 0.0 <= x <= top)]
    if bad:
        raise ValueError(
            f"noise_level values must be in [0, {top:g}] for sde_type={sde_type!r}, got {bad[:3]} "
            "(Flow-GRPO uses 0.7; 0 is the deterministic Euler (ODE) step)."
        )
    return levels


def flow_coefficients(
    sigmas: torch.Tensor,
    noise_level: float | Sequence[float],
    *,
    sde_type: str = "sde",
    num_train_timesteps: int = 1000,
    timesteps: torch.Tensor | None = None,
) -> FlowCoefficients:
    """:class:`FlowCoefficients` of every step of a schedule.

    Args:
        sigmas: the scheduler's ``sigmas`` after ``set_timesteps``: T + 1 values, the last 0.
        noise_level: ``a``, one number or one per step (0: the Euler/ODE step).
        sde_type: ``"sde"`` (Flow-GRPO) or ``"cps"`` (coefficients-preserving).
        num_train_timesteps: scales σ to the timestep the model reads.
        timesteps: the scheduler's own ``timesteps`` (T,), reported as each step's timestep;
            default σ · num_train_timesteps.
    """
    n = len(sigmas) - 1
    levels = torch.tensor(check_noise_level(noise_level, n, sde_type), dtype=torch.float64)
    s32 = sigmas.detach().to("cpu", torch.float32)
    s = s32.double()
    sigma, nxt = s[:-1], s[1:]
    dt = nxt - sigma  # exact in float64 for float32 inputs: rounds to the pipeline's dt
    if sde_type == "sde":
        # Flow-GRPO's guard at σ = 1 (the first step of a shifted schedule).
        sigma_1 = s[1] if n > 1 else torch.zeros((), dtype=torch.float64)
        one_minus = 1 - torch.where(sigma == 1, sigma_1, sigma)
        s2 = levels**2 * sigma / one_minus  # s_σ²
        corr = torch.where(levels > 0, s2 / (2 * sigma), torch.zeros_like(s2))
        x_coeff = 1 + dt * corr
        v_coeff = dt * (1 + corr * (1 - sigma))
        std = torch.sqrt(s2) * torch.sqrt(-dt)
        # s_σ grows like 1/√(1 - σ): a schedule whose sigmas stay within a hair of 1 for several
        # steps (FLUX's resolution shift on tiny images) gives steps of std ≫ 1 that wreck x.
        wild = (levels > 0) & (std > MAX_SDE_STD)
        if bool(wild.any()):
            k = int(wild.nonzero()[0])
            raise ValueError(
                f"The Flow-GRPO SDE step {k} has std {float(std[k]):.3g} (σ = {float(sigma[k]):.6f}, "
                f"noise level {float(levels[k]):g}): with σ this close to 1 the step's noise "
                f"√(σ/(1-σ)) explodes. Use sde_type='cps' (bounded by σ'), a smaller noise level, "
                "or a noise window (a per-step noise_level) that is 0 on these steps."
            )
    else:
        std = nxt * torch.sin(levels * math.pi / 2)
        c = torch.sqrt((nxt**2 - std**2).clamp_min(0))
        x_coeff = (1 - nxt) + c  # x̂_0 = x - σ v, ε̂ = x + (1 - σ) v
        v_coeff = -sigma * (1 - nxt) + c * (1 - sigma)
        ode = levels == 0  # the Euler step itself, bit for bit
        x_coeff = torch.where(ode, torch.ones_like(x_coeff), x_coeff)
        v_coeff = torch.where(ode, dt, v_coeff)
    t = s32[:-1] * num_train_timesteps if timesteps is None else timesteps.detach().cpu().float()
    prev_t = torch.cat([t[1:], t.new_zeros(1)])
    return FlowCoefficients(
        sde_type,
        x_coeff.float(),
        v_coeff.float(),
        std.float(),
        s32[:-1].clone(),
        s32[1:].clone(),
        t,
        prev_t,
    )


def flow_distribution(
    coeffs: FlowCoefficients, model_output: torch.Tensor, sample: torch.Tensor
) -> StepDistribution:
    """The Gaussian of x_{t-1} for velocity ``model_output`` at x_t = ``sample`` (B, C, h, w),
    ``coeffs`` holding one row per sample; in float32 (float64 for float64 inputs) whatever the
    model's dtype. Differentiable in ``model_output``."""
    if model_output.shape != sample.shape:
        raise ValueError(
            f"model_output has shape {tuple(model_output.shape)} but sample has shape "
            f"{tuple(sample.shape)}; they must match (the velocity of every latent value)."
        )
    if coeffs.std.reshape(-1).shape[0] != sample.shape[0]:
        raise ValueError(
            f"Got step coefficients for {coeffs.std.reshape(-1).shape[0]} samples but "
            f"{sample.shape[0]} samples."
        )
    shape = (-1, *([1] * (sample.ndim - 1)))
    # At least float32, as the scheduler's step and Flow-GRPO compute it (half-precision models).
    dtype, device = torch.promote_types(sample.dtype, torch.float32), sample.device
    sample = sample.to(dtype)

    def c(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(shape).to(device=device, dtype=dtype)

    v = model_output.to(dtype)
    return StepDistribution(
        mean=c(coeffs.x_coeff) * sample + c(coeffs.v_coeff) * v,
        std=coeffs.std.reshape(-1).to(device=device, dtype=dtype),
        pred_original_sample=sample - c(coeffs.sigma) * v,
        timestep=coeffs.timestep.reshape(-1),
        prev_timestep=coeffs.prev_timestep.reshape(-1),
    )


def step_kl(policy: StepDistribution, base: StepDistribution) -> torch.Tensor:
    """Closed-form KL(policy || base) (B,) between two diagonal Gaussian steps, summed over dims.

    KL = n·(log(s_b / s_p) + s_p² / (2 s_b²) - 1/2) + ||μ_p - μ_b||² / (2 s_b²); with a shared std
    (a policy and the base model at the same step) it is ||μ_p - μ_b||² / (2 s²), the KL term of
    Flow-GRPO. Computed in float64; rows where either std is 0 (deterministic steps) count as 0.
    Works for any :class:`~diffenvs.logprob.StepDistribution` (DDIM and DDPM steps too).
    """
    mp, mb = policy.mean.double(), base.mean.double()
    if mp.shape != mb.shape:
        raise ValueError(f"The means differ in shape: {tuple(mp.shape)} vs {tuple(mb.shape)}.")
    n = math.prod(mp.shape[1:])
    sp, sb = policy.std.double().reshape(-1), base.std.double().reshape(-1)
    ok = (sp > 0) & (sb > 0)
    sp_safe = torch.where(ok, sp, torch.ones_like(sp))
    sb_safe = torch.where(ok, sb, torch.ones_like(sb))
    sq = (mp - mb).pow(2).flatten(1).sum(1)
    kl = n * (torch.log(sb_safe / sp_safe) + sp_safe**2 / (2 * sb_safe**2) - 0.5)
    kl = kl + sq / (2 * sb_safe**2)
    return torch.where(ok, kl, torch.zeros_like(kl)).to(policy.mean.dtype)
