"""Boundary checks of the denoising environment (``DiffusionDenoise-v0`` and its vector env).

The policy is in ``docs/validation.md``: constructor values are checked before any model loads,
the schedule once the scheduler is known, and every latent the env produces must be finite, so a
NaN never reaches a reward (where it would read as a number, e.g. colourfulness 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffenvs.errors import (
    ArgumentTypeError,
    NonFiniteError,
    check_bool,
    check_int,
    check_number,
    check_seed,
    summarise,
)

#: Largest classifier-free guidance scale accepted (Stable Diffusion uses 1-20; far beyond that
#: the guided output overflows).
MAX_GUIDANCE_SCALE = 1000.0


def check_denoise_arguments(
    num_envs: Any, num_steps: Any, eta: Any, guidance_scale: Any, kl_coef: Any, device: Any
) -> None:
    """Types and ranges of the core's numeric constructor arguments (before any model loads)."""
    from diffenvs.models.devices import check_device

    check_int("num_envs", num_envs, 1, 1_000_000)
    check_int("num_steps", num_steps, 1)
    check_number("eta", eta, 0.0, 1.0)
    check_number("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE_SCALE)
    check_number("kl_coef", kl_coef, 0.0, 1e6)
    check_device(device)


def check_schedule(scheduler: Any, num_steps: int) -> None:
    """``num_steps`` must not exceed the scheduler's training steps (each step is one of them)."""
    n_train = int(scheduler.config.num_train_timesteps)
    if int(num_steps) > n_train:
        raise ValueError(
            f"num_steps must be in [1, {n_train}] (the scheduler's num_train_timesteps: each "
            f"sampling step is at least one training step), got {num_steps}."
        )


def check_reset_seeds(seeds: list[Any]) -> list[int | None]:
    """Reset seeds: ``None`` or ints in 0..2**63-1 (torch's and numpy's common range)."""
    return [check_seed("reset seed", s) for s in seeds]


def check_step_latents(prev: torch.Tensor, actions: torch.Tensor, mode: str) -> None:
    """x_{t-1} after applying ``actions`` must be finite; otherwise the step is refused."""
    if bool(torch.isfinite(prev).all()):
        return
    biggest = float(actions.detach().abs().max())
    raise NonFiniteError(
        f"The {mode} action (largest |value| {biggest:.3g}) makes the next latent x_(t-1) "
        f"non-finite in {prev.dtype} ({_count(prev)}); keep actions in a sane range (the base "
        "sampler's noise is standard normal). The step was not applied."
    )


def check_base_output(core: Any, ids: np.ndarray, mean: torch.Tensor, x0: torch.Tensor) -> None:
    """The base model's Gaussian for the next action must be finite. If not, the latent was out
    of the model's range: the episodes of ``ids`` end (``reset()`` starts new ones) and the step
    raises :class:`NonFiniteError` instead of carrying NaN to the reward."""
    if bool(torch.isfinite(mean).all()) and bool(torch.isfinite(x0).all()):
        return
    rows = np.asarray(ids)
    latents = core.latents[core._rows(rows)]
    core.step_index[rows] = core.num_steps  # these episodes cannot continue
    raise NonFiniteError(
        f"The base model's output is non-finite ({_count(mean)} in the next mean) for the current "
        f"latent ({summarise(latents)}): an earlier action drove the latent out of the model's "
        "range. The episode has ended; call reset()."
    )


def check_decoded(images: torch.Tensor) -> None:
    """The decoded final image must be finite before it is scored."""
    if not bool(torch.isfinite(images).all()):
        raise NonFiniteError(
            f"The decoded image of the finished episode is non-finite ({_count(images)}): the "
            "final latent was out of the VAE's range. Call reset() to start a new episode."
        )


def _count(x: torch.Tensor) -> str:
    return f"{int(torch.isnan(x).sum())} NaN, {int(torch.isinf(x).sum())} inf values"


def check_reset_prompt(prompt: Any) -> None:
    """A prompt given to ``reset(options={"prompt": ...})``: ``None`` (draw one) or non-empty text."""
    if prompt is None:
        return
    if not isinstance(prompt, str):
        raise ArgumentTypeError(f"A reset prompt must be a str, got {type(prompt).__name__}.")
    if not prompt.strip():
        raise ValueError(
            f"A reset prompt must be non-empty text, got {prompt!r}; pass a prompt or leave "
            "options['prompt'] out to draw one from the prompt set."
        )


def check_append_arguments(
    *,
    tasks: list[Any],
    task: Any,
    n_appends: Any,
    vocab_size: Any,
    lambdas: tuple[Any, Any],
    generation_seeds: Any,
    target_seed: Any,
    num_inference_steps: Any,
    guidance_scale: Any,
    separator: Any,
    flags: dict[str, Any],
) -> list[int]:
    """``PromptAppend-v0``'s numeric and flag arguments; returns the generation seeds as ints."""
    if task is not None:
        check_task_index("task", task, len(tasks))
    check_int("n_appends", n_appends, 1, 10_000)
    check_int("vocab_size", vocab_size, 1, 100_000)
    check_number("lambda_image", lambdas[0], -1e6, 1e6)
    if check_number("lambda_text", lambdas[1], -1e6, 1e6) and any(
        t.ground_truth is None for t in tasks
    ):
        raise ValueError(
            "lambda_text > 0 needs a ground-truth prompt for every task (eq. 5), but some "
            "tasks have none; set lambda_text=0 or add ground_truth to the task file."
        )
    if isinstance(generation_seeds, str) or not hasattr(generation_seeds, "__iter__"):
        raise ArgumentTypeError(
            f"generation_seeds must be a list of ints, got {summarise(generation_seeds)}."
        )
    seeds = [check_seed("generation seed", s, allow_none=False) for s in generation_seeds]
    if not seeds:
        raise ValueError("generation_seeds is empty; give at least one seed, e.g. (0, 1).")
    check_seed("target_seed", target_seed, allow_none=False)
    check_int("num_inference_steps", num_inference_steps, 1, 1000)
    check_number("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE_SCALE)
    if not isinstance(separator, str):
        raise ArgumentTypeError(f"separator must be a str, got {summarise(separator)}.")
    for name, value in flags.items():
        check_bool(name, value)
    return seeds


def check_task_index(name: str, index: Any, n_tasks: int) -> int:
    """A task index in ``0..n_tasks-1``."""
    check_int(name, index)
    if not 0 <= int(index) < n_tasks:
        raise ValueError(
            f"{name}={int(index)} is out of range: the set has {n_tasks} tasks (0..{n_tasks - 1})."
        )
    return int(index)


#: Largest |value| accepted in a denoising action or a given initial latent. In noise mode an
#: action is standard-normal noise (|a| > 1e4 has probability 0); in latent mode x_{t-1} is O(1).
#: Larger values only drive the model out of its range (NaN latents, or finite garbage images).
ACTION_LIMIT = 1e4


def check_action_range(x: torch.Tensor, what: str, rows: np.ndarray | None = None) -> None:
    """Every value of ``x`` (of ``rows`` when given; already checked finite) must lie in
    [-ACTION_LIMIT, ACTION_LIMIT]."""
    if rows is not None:
        x = x[torch.as_tensor(np.asarray(rows), dtype=torch.long)]
    if x.numel() == 0:
        return
    biggest = float(x.detach().abs().max())
    if biggest > ACTION_LIMIT:
        raise ValueError(
            f"{what} must lie in [-{ACTION_LIMIT:g}, {ACTION_LIMIT:g}], got values up to |{biggest:.3g}|"
            " (the env's nominal bound is action_space.high; standard-normal noise never comes "
            "near the limit)."
        )
