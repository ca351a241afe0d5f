"""Constructor checks of the denoising env's batched core (:mod:`diffenvs.envs.denoise_core`).

They run before any model loads, so a wrong argument fails fast with a message that says what to
pass instead.
"""

from __future__ import annotations

import numpy as np

ACTION_MODES = ("noise", "latent")
BASE_STEPS = ("always", "auto", "never")
"""When the frozen base model runs in latent mode (noise mode always runs it):

* ``"always"``: on every latent, so infos carry the base model's Gaussian and log-prob (the
  default; one guided UNet pass per step).
* ``"auto"``: only when the env itself needs it, i.e. for a KL penalty (``kl_coef > 0``);
  otherwise a latent-mode step runs no UNet at all.
* ``"never"``: as ``"auto"``, but a configuration that would need the base model is an error.
"""


def check_core_arguments(
    num_envs: int,
    action_mode: str,
    num_steps: int,
    kl_coef: float,
    guidance_scale: float,
    negative_prompt: str | None,
    base_step: str = "always",
) -> None:
    """Fail before any model loads on a constructor argument the core cannot use."""
    if base_step not in BASE_STEPS:
        raise ValueError(f"Unknown base_step {base_step!r}; use one of {list(BASE_STEPS)}.")
    if base_step == "never" and action_mode == "noise":
        raise ValueError(
            "base_step='never' needs action_mode='latent': in noise mode the base model's step "
            "is what turns the noise action into x_{t-1}, so it runs every step."
        )
    if base_step == "never" and kl_coef > 0:
        raise ValueError(
            f"base_step='never' cannot give a KL penalty (kl_coef={kl_coef}): the penalty needs "
            "the base model's log-prob of every action. Use base_step='auto' or kl_coef=0."
        )
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    if action_mode not in ACTION_MODES:
        raise ValueError(f"Unknown action_mode {action_mode!r}; use one of {list(ACTION_MODES)}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}.")
    if not np.isfinite(kl_coef) or kl_coef < 0:
        raise ValueError(f"kl_coef must be a finite number >= 0, got {kl_coef}.")
    if not np.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale}.")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(
            f"negative_prompt must be a str or None, got {type(negative_prompt).__name__}."
        )
