"""Gaussian reverse-step distributions of DDIM (eta > 0) and DDPM samplers, and their log-probs.

One reverse step of a stochastic sampler is a diagonal Gaussian (Kristiansen & Vågen 2023, §5.1):

    x_{t-1} ~ N(mean(model_output, x_t, t), std_t^2 I)

so a policy that outputs ``x_{t-1}`` has a closed-form log-likelihood. The functions here compute
that Gaussian with the *same formulas and operation order* as diffusers' ``DDIMScheduler.step`` and
``DDPMScheduler.step`` (so ``mean + std * noise`` is what ``scheduler.step`` returns for the same
noise), but batched over per-sample timesteps and differentiable in ``model_output``: any agent
(PPO on a diffusion policy, a critic, an env) can score its own actions with them.

Everything takes ``(model_output, timestep, sample)`` like ``scheduler.step``; ``timestep`` may be
a Python int, a 0-d tensor or a ``(B,)`` tensor (one timestep per sample, e.g. a PPO minibatch mixing
steps). Epsilon, v-prediction and sample prediction are supported. Log-probabilities are summed over
all non-batch dimensions (the joint log-likelihood of the latent, Kristiansen & Vågen 2023, §5.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SCHEDULER_KINDS = ("ddim", "ddpm")
_DDPM_VARIANCES = ("fixed_small", "fixed_small_log", "fixed_large")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def scheduler_kind(scheduler: Any) -> str:
    """``"ddim"`` or ``"ddpm"`` for a diffusers scheduler; a clear error for any other sampler."""
    from diffusers import DDIMScheduler, DDPMScheduler

    # DDIM first: neither class derives from the other, but subclasses of either are accepted.
    if isinstance(scheduler, DDIMScheduler):
        kind = "ddim"
    elif isinstance(scheduler, DDPMScheduler):
        kind = "ddpm"
    else:
        raise ValueError(
            f"{type(scheduler).__name__} is not supported for step log-probabilities: only "
            "DDIMScheduler (with eta > 0) and DDPMScheduler define a Gaussian reverse step. Build "
            "one with DDIMScheduler.from_config(pipe.scheduler.config) or DDPMScheduler.from_config(...)."
        )
    config = scheduler.config
    if getattr(config, "thresholding", False):
        raise ValueError(
            "Schedulers with thresholding=True (dynamic thresholding of the predicted x_0) are not "
            "supported; load the scheduler with thresholding=False (SD checkpoints use False)."
        )
    if config.prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(
            f"prediction_type {config.prediction_type!r} is not supported; use 'epsilon', "
            "'v_prediction' or 'sample'."
        )
    if kind == "ddpm" and config.variance_type not in _DDPM_VARIANCES:
        raise ValueError(
            f"DDPM variance_type {config.variance_type!r} is not supported; use one of "
            f"{list(_DDPM_VARIANCES)} (learned variances would make the step depend on an extra "
            "model output)."
        )
    if scheduler.num_inference_steps is None:
        raise ValueError(
            "The scheduler has no timesteps yet: call scheduler.set_timesteps(num_inference_steps) first."
        )
    return kind


def _as_timesteps(timestep: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"timestep must be an int, a 0-d tensor or one timestep per sample (shape ({batch},)); "
            f"got shape {tuple(t.shape)}."
        )
    return t.long()


def previous_timestep(scheduler: Any, timestep: int | torch.Tensor) -> torch.Tensor:
    """The timestep each sample moves to, as the scheduler's own ``step`` computes it (-1 = past 0)."""
    t = torch.as_tensor(timestep).long()
    if scheduler_kind(scheduler) == "ddim":
        # DDIMScheduler.step always uses a constant stride, whatever the timestep spacing.
        return t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    schedule = scheduler.timesteps.to(t.device).long()
    flat = t.reshape(-1)
    match = flat[:, None] == schedule[None, :]
    if not bool(match.any(1).all()):
        missing = sorted({int(x) for x, ok in zip(flat, match.any(1), strict=True) if not ok})
        raise ValueError(
            f"Timesteps {missing} are not in the DDPM schedule {schedule.tolist()}; pass timesteps "
            "from scheduler.timesteps (after set_timesteps with the same number of steps)."
        )
    index = match.float().argmax(1)
    padded = torch.cat([schedule, schedule.new_tensor([-1])])
    return padded[index + 1].reshape(t.shape)


@dataclass
class StepDistribution:
    """The Gaussian ``N(mean, std^2 I)`` of ``x_{t-1}`` given ``x_t``, for a batch.

    ``std`` has shape (B,): one scale per sample (it depends only on the timestep). A sample whose
    ``std`` is 0 has a deterministic step (DDPM at t = 0): its log-probability is defined as 0.
    """

    mean: torch.Tensor  # (B, *latent)
    std: torch.Tensor  # (B,)
    pred_original_sample: torch.Tensor  # (B, *latent), the model's estimate of x_0
    timestep: torch.Tensor  # (B,)
    prev_timestep: torch.Tensor  # (B,)

    def _std(self) -> torch.Tensor:
        return self.std.reshape(-1, *([1] * (self.mean.ndim - 1)))

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """``x_{t-1} = mean + std * noise``: what ``scheduler.step`` returns for this noise."""
        return self.mean + self._std() * noise

    def log_prob(self, prev_sample: torch.Tensor) -> torch.Tensor:
        """Log-density of ``prev_sample`` summed over all non-batch dims, shape (B,)."""
        return gaussian_log_prob(prev_sample, self.mean, self.std)

    def noise_of(self, prev_sample: torch.Tensor) -> torch.Tensor:
        """The standard-normal noise that would have produced ``prev_sample`` (0 where std = 0)."""
        std = self._std()
        safe = torch.where(std > 0, std, torch.ones_like(std))
        return torch.where(std > 0, (prev_sample - self.mean) / safe, torch.zeros_like(self.mean))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log N(x; mean, std^2 I) summed over non-batch dims; ``std`` is per sample, shape (B,).

    Rows with ``std == 0`` (a deterministic step) get 0 rather than -inf/NaN.
    """
    if x.shape != mean.shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but the mean has shape {tuple(mean.shape)}."
        )
    dims = tuple(range(1, x.ndim))
    n = math.prod(x.shape[1:])
    std = std.to(x.dtype)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    z2 = (((x - mean) / safe.reshape(-1, *([1] * (x.ndim - 1)))) ** 2).sum(dims)
    log_prob = -0.5 * z2 - n * (torch.log(safe) + _HALF_LOG_2PI)
    return torch.where(std > 0, log_prob, torch.zeros_like(log_prob))


def noise_log_prob(noise: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log-density (B,) of ``x = mean + std * noise`` under N(mean, std^2 I), from the noise alone.

    Equal to ``gaussian_log_prob(x, mean, std)`` without forming ``x - mean`` (so it is cheaper and
    free of cancellation); with ``std = 1`` it is the standard normal's log-density of the noise.
    """
    dims = tuple(range(1, noise.ndim))
    n = math.prod(noise.shape[1:])
    std = std.to(noise.dtype)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    log_prob = -0.5 * (noise**2).sum(dims) - n * (torch.log(safe) + _HALF_LOG_2PI)
    return torch.where(std > 0, log_prob, torch.zeros_like(log_prob))


@dataclass
class StepCoefficients:
    """The per-sample scalars of one sampler step, shape (B, 1, 1, 1), in the scheduler's float32.

    They depend only on the timesteps, so an environment computes them once per schedule
    (:func:`step_coefficients`) and indexes them; :func:`distribution_from_coefficients` then
    applies them to a model output. Expressions and their order follow diffusers exactly.
    """

    kind: str  # "ddim" or "ddpm"
    config: Any  # the scheduler config (prediction type, clipping)
    sqrt_alpha: torch.Tensor  # sqrt(a_t)
    sqrt_beta: torch.Tensor  # sqrt(1 - a_t)
    x0_coeff: torch.Tensor  # multiplies the predicted x_0 in the mean
    second_coeff: torch.Tensor  # multiplies eps (DDIM's direction) or x_t (DDPM's posterior)
    std: torch.Tensor  # (B,)
    timestep: torch.Tensor  # (B,)
    prev_timestep: torch.Tensor  # (B,)

    def __getitem__(self, index: Any) -> StepCoefficients:
        """The coefficients of a subset of samples (e.g. one row per step of a schedule)."""
        return StepCoefficients(
            self.kind, self.config, *(getattr(self, f)[index] for f in _COEFF_FIELDS)
        )

    def to(self, device: torch.device | str) -> StepCoefficients:
        return StepCoefficients(
            self.kind, self.config, *(getattr(self, f).to(device) for f in _COEFF_FIELDS)
        )


_COEFF_FIELDS = (
    "sqrt_alpha",
    "sqrt_beta",
    "x0_coeff",
    "second_coeff",
    "std",
    "timestep",
    "prev_timestep",
)


def step_coefficients(
    scheduler: Any,
    timestep: int | torch.Tensor,
    *,
    eta: float = 1.0,
    prev_timestep: torch.Tensor | None = None,
    batch: int | None = None,
) -> StepCoefficients:
    """:class:`StepCoefficients` of a DDIM (``eta`` > 0) or DDPM step at ``timestep`` ((B,) or scalar)."""
    kind = scheduler_kind(scheduler)
    if kind == "ddim" and not eta > 0:
        raise ValueError(
            f"DDIM with eta={eta} is deterministic, so its steps have no log-probability; use eta > 0 "
            "(eta=1.0 as in DDPO) or the DDPM scheduler."
        )
    ac = scheduler.alphas_cumprod
    n = batch if batch is not None else max(1, torch.as_tensor(timestep).numel())
    t = _as_timesteps(timestep, n, ac.device)
    prev_t = (
        previous_timestep(scheduler, t)
        if prev_timestep is None
        else _as_timesteps(prev_timestep, n, ac.device)
    )
    final = scheduler.final_alpha_cumprod if kind == "ddim" else scheduler.one
    a_t = ac[t].reshape(-1, 1, 1, 1)
    a_prev = torch.where(prev_t >= 0, ac[prev_t.clamp(min=0)], final.to(ac.device)).reshape(
        -1, 1, 1, 1
    )
    b_t, b_prev = 1 - a_t, 1 - a_prev
    if kind == "ddim":
        variance = (b_prev / b_t) * (1 - a_t / a_prev)
        std = eta * variance ** (0.5)
        x0_coeff = a_prev ** (0.5)
        second = (1 - a_prev - std**2) ** (0.5)
    else:
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        x0_coeff = (a_prev ** (0.5) * beta_t) / b_t
        second = alpha_t ** (0.5) * b_prev / b_t
        variance = torch.clamp(b_prev / b_t * beta_t, min=1e-20)
        variance_type = scheduler.config.variance_type
        if variance_type == "fixed_small":
            std = variance**0.5
        elif variance_type == "fixed_small_log":
            std = torch.exp(0.5 * torch.log(variance))
        else:  # fixed_large
            std = beta_t**0.5
        # DDPMScheduler adds no noise at t = 0: that step is deterministic.
        std = torch.where(t.reshape(std.shape) > 0, std, torch.zeros_like(std))
    return StepCoefficients(
        kind, scheduler.config, a_t**0.5, b_t**0.5, x0_coeff, second, std.reshape(-1), t, prev_t
    )


def distribution_from_coefficients(
    coeffs: StepCoefficients, model_output: torch.Tensor, sample: torch.Tensor
) -> StepDistribution:
    """Apply precomputed :class:`StepCoefficients` to a model output for ``sample`` = x_t."""
    if model_output.shape != sample.shape:
        raise ValueError(
            f"model_output has shape {tuple(model_output.shape)} but sample has shape "
            f"{tuple(sample.shape)}; they must match (learned-variance outputs are not supported)."
        )
    if coeffs.std.shape[0] != sample.shape[0]:
        raise ValueError(
            f"Got step coefficients for {coeffs.std.shape[0]} samples but {sample.shape[0]} samples."
        )
    # Coefficients stay in the scheduler's float32 and are cast to the sample's dtype where they
    # multiply tensors, as diffusers' 0-d scalar coefficients are (same rounding in half precision).
    dtype, device, config = sample.dtype, sample.device, coeffs.config
    shape = (-1, *([1] * (sample.ndim - 1)))

    def c(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(shape).to(device=device, dtype=dtype)

    sqrt_a, sqrt_b = c(coeffs.sqrt_alpha), c(coeffs.sqrt_beta)
    if config.prediction_type == "epsilon":
        x0 = (sample - sqrt_b * model_output) / sqrt_a
        eps = model_output
    elif config.prediction_type == "sample":
        x0 = model_output
        eps = (sample - sqrt_a * x0) / sqrt_b
    else:  # v_prediction
        x0 = sqrt_a * sample - sqrt_b * model_output
        eps = sqrt_a * model_output + sqrt_b * sample
    if config.clip_sample:
        x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    second = eps if coeffs.kind == "ddim" else sample
    mean = c(coeffs.x0_coeff) * x0 + c(coeffs.second_coeff) * second
    return StepDistribution(
        mean=mean,
        std=coeffs.std.to(device=device, dtype=dtype),
        pred_original_sample=x0,
        timestep=coeffs.timestep,
        prev_timestep=coeffs.prev_timestep,
    )


def step_distribution(
    scheduler: Any,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    *,
    eta: float = 1.0,
    prev_timestep: torch.Tensor | None = None,
) -> StepDistribution:
    """The Gaussian of ``x_{t-1}`` for one DDIM (``eta`` > 0) or DDPM step.

    Args:
        scheduler: a ``DDIMScheduler`` or ``DDPMScheduler`` after ``set_timesteps``.
        model_output: the (guided) UNet output for ``sample`` (epsilon, v or x_0, per the config).
        timestep: the current timestep ``t``: an int, 0-d tensor, or a (B,) tensor.
        sample: ``x_t``, shape (B, C, H, W).
        eta: DDIM's noise weight (ignored for DDPM); 1.0 gives DDPM-like variance.
        prev_timestep: optional precomputed :func:`previous_timestep`.
    """
    coeffs = step_coefficients(
        scheduler, timestep, eta=eta, prev_timestep=prev_timestep, batch=sample.shape[0]
    )
    return distribution_from_coefficients(coeffs, model_output, sample)


def step_log_prob(
    scheduler: Any,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    prev_sample: torch.Tensor,
    *,
    eta: float = 1.0,
) -> torch.Tensor:
    """Log-probability (B,) of ``prev_sample`` = x_{t-1} under one sampler step from ``sample`` = x_t.

    Differentiable in ``model_output``: a diffusion-policy agent recomputes its UNet output and gets
    the gradient of its action log-likelihood, e.g. for the PPO ratio of Kristiansen & Vågen 2023, §5.3.
    """
    dist = step_distribution(scheduler, model_output, timestep, sample, eta=eta)
    return dist.log_prob(prev_sample)


def gaussian_kl(
    mean_policy: torch.Tensor, mean_base: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Exact KL(policy || base) (B,) between two sampler steps that share ``std`` (B,).

    Both steps are ``N(mean, std^2 I)`` with the same scheduler std, so the KL is
    ``||mean_policy - mean_base||^2 / (2 std^2)``: no sampling noise, unlike :func:`k3_kl`, whose
    estimate explodes once the summed log-ratio reaches tens of nats. Deterministic steps
    (std = 0) count as 0.
    """
    sq = (mean_policy.double() - mean_base.double()).pow(2).flatten(1).sum(1)
    var = std.double().pow(2)
    kl = torch.where(var > 0, sq / (2 * var.clamp_min(1e-300)), torch.zeros_like(sq))
    return kl.to(mean_policy.dtype)


def k3_kl(log_prob_policy: torch.Tensor, log_prob_base: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || base) from actions sampled by the policy.

    With ``r = p_base(a) / p_policy(a)``, ``k3 = (r - 1) - log r``: unbiased, always >= 0, and of
    lower variance than ``-log r`` (Kristiansen & Vågen 2023, eq. 5.3). Computed in float64 because summed latent
    log-probs differ by hundreds of nats when the policy drifts; ``log r`` is capped at 80 nats so
    the estimate stays finite.
    """
    log_r = (log_prob_base.double() - log_prob_policy.double()).clamp(max=80.0)
    return (torch.expm1(log_r) - log_r).to(log_prob_policy.dtype)
