"""What GRPO needs of the env's sampler beyond the PPO policy: the deterministic (ODE) step outside
the SDE window, and a guidance-free copy of the sampler.

Only the public :class:`~diffenvs.sampler.BaseSampler` interface is used (``model_output``,
``distribution``, ``coefficients``, ``num_steps``), so a sampler of another family that offers the
same interface works unchanged: the DDIM family (SD 1.x/2.x) and the flow-matching family (SD3,
FLUX), whose deterministic steps :func:`ode_sampler` builds from the sampler's coefficients.

The env takes one ``eta`` for every step, so the window's ODE steps are computed here, in the agent,
and handed to the env as latent-mode actions (the env accepts any finite x_{t-1}).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


def ode_sampler(sampler: Any) -> Any:
    """A copy of ``sampler`` whose every step is the sampler's deterministic (ODE) step: its
    ``distribution(...).mean`` is that step's x_{t-1} and its std is 0.

    * DDIM (``StepCoefficients``): the eta = 0 step ``sqrt(a_prev) x0 + sqrt(1 - a_prev) eps``
      with the same predicted x_0 and ε as the stochastic step (``scheduler.step(..., eta=0)``).
      The env's coefficients at eta > 0 hold ``second = sqrt(1 - a_prev - σ²)`` and σ, so the
      eta = 0 weight of ε is ``sqrt(second² + σ²)``.
    * Flow matching (coefficients with ``x_coeff``/``v_coeff``, :mod:`diffenvs.flow_logprob`): the
      Euler step ``x + (σ' - σ) v`` of the diffusers pipeline (noise level 0).
    * A sampler that knows its own deterministic step may provide ``ode_sampler()`` instead.
    """
    own = getattr(sampler, "ode_sampler", None)
    if callable(own):
        return own()
    coeffs = getattr(sampler, "coefficients", None)
    if hasattr(coeffs, "v_coeff"):  # a flow-matching schedule
        dt = coeffs.sigma_next.double() - coeffs.sigma.double()
        ode = dataclasses.replace(
            coeffs,
            x_coeff=torch.ones_like(coeffs.x_coeff),
            v_coeff=dt.to(coeffs.v_coeff.dtype).reshape(coeffs.v_coeff.shape),
            std=torch.zeros_like(coeffs.std),
        )
    elif getattr(sampler, "scheduler_name", None) == "ddim":
        second = (
            coeffs.second_coeff.double() ** 2
            + coeffs.std.double().reshape(coeffs.second_coeff.shape) ** 2
        )
        ode = dataclasses.replace(
            coeffs,
            second_coeff=second.sqrt().to(coeffs.second_coeff.dtype),
            std=torch.zeros_like(coeffs.std),
        )
    else:
        raise ValueError(
            "A window of SDE steps needs the sampler's deterministic step outside the window; the "
            f"{getattr(sampler, 'scheduler_name', type(sampler).__name__)!r} sampler has none "
            "(DDPM's posterior has no ODE form). Use scheduler 'ddim' or a flow model, or "
            "sde_window=None (every step stochastic)."
        )
    return dataclasses.replace(sampler, coefficients=ode)


def deterministic_step(
    sampler: Any, model_output: torch.Tensor, latents: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """x_{t-1} of the deterministic step at step indices ``k`` (B,) for a model output of
    ``sampler``'s model (pass the :func:`ode_sampler` of the policy's sampler, built once)."""
    return sampler.distribution(model_output, latents, k).mean


def unguided_sampler(sampler: Any) -> Any:
    """A copy of ``sampler`` that runs without classifier-free guidance: every field named
    ``negative_*`` (the unconditional embeddings) set to None and ``guidance_scale`` to 1.

    A guidance-distilled UNet (``timestep_cond``) keeps its guidance embedding: its guidance is a
    model input, not a second pass.
    """
    if not dataclasses.is_dataclass(sampler) or not hasattr(sampler, "guidance_scale"):
        raise ValueError(
            f"cfg_free needs a sampler dataclass with a guidance_scale field; "
            f"{type(sampler).__name__} has none. Train with cfg_free=False."
        )
    names = [f.name for f in dataclasses.fields(sampler)]
    changes: dict[str, Any] = {n: None for n in names if n.startswith("negative_")}
    changes["guidance_scale"] = 1.0
    return dataclasses.replace(sampler, **changes)


def window_steps(num_steps: int, window: int, start: int) -> list[int]:
    """The step indices of the SDE window ``[start, start + window)``."""
    if not (1 <= window <= num_steps and 0 <= start <= num_steps - window):
        raise ValueError(
            f"A window of {window} steps starting at step {start} does not fit in {num_steps} steps."
        )
    return list(range(start, start + window))
