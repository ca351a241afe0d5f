"""One held-out evaluation for every entrant: the same prompts, x_T and step noise for all.

For a denoiser (the base model's or an entrant's fine-tuned copy) it runs ``task.eval_episodes``
episodes of the task's env in latent mode with the base model's step reported, and measures:

* the task's reward (mean, std) on the final images;
* the KL to the base model: the sum over the T steps of the closed-form KL between the policy's
  and the base model's Gaussian steps (same σ_t), per image, averaged — the path KL, an upper
  bound of the KL between the two models' image distributions;
* the image diversity across prompts (:func:`agents.ppo.evaluate.image_diversity`);
* with the world: the independent judge's prompt following on the held-out prompts, and its
  reading of the reward's own target where the reward is a proxy (``task.independent_target``).

On a reference task (an exact diffusion model of a Gaussian mixture) the images are points: it
measures instead the distance of ``task.eval_episodes`` samples to exact samples of the optimum
p*_β (sliced Wasserstein-2 and a kNN KL estimate, :mod:`diffenvs.reference.metrics`), the
objective E[r] - β·KL against its optimum, and, for the base model, the estimators' noise floor
(two exact samples of p*_β compared).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from agents.bench.tasks import Task


def make_eval_envs(task: Task, num_envs: int = 8, action_mode: str = "latent") -> Any:
    """The task's vector env, in latent mode reporting the base model's step (for the KL); in
    noise mode for a noise-mode policy (whose KL needs no base step)."""
    import gymnasium as gym

    import diffenvs  # noqa: F401  (registers the environments)
    from diffenvs.envs.denoise_prompts import make_prompt_source

    base = {"base_step": "always"} if action_mode == "latent" else {}
    return gym.make_vec(
        task.env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        prompts=make_prompt_source(task.prompts),
        action_mode=action_mode,
        **base,
        **task.env_options(),
    )


def eval_prompts(task: Task, seed: int) -> list[str]:
    from diffenvs.envs.denoise_prompts import make_prompt_source

    source, rng = make_prompt_source(task.eval_prompts), np.random.default_rng(seed)
    return [source.sample(rng) for _ in range(task.eval_episodes)]


@torch.no_grad()
def rollout_denoiser(
    denoiser: Any, envs: Any, prompts: list[str], seed: int
) -> dict[str, np.ndarray]:
    """Rewards, path KLs and images of ``denoiser`` on ``prompts`` with fixed seeds and noise."""
    from agents.ppo.policy import DiffusionActorCritic
    from agents.ppo.rollout import run_episodes

    policy = DiffusionActorCritic(denoiser, envs.unwrapped.sampler)
    per = envs.num_envs
    rewards, kls, images = [], [], []
    for c in range(math.ceil(len(prompts) / per)):
        chunk = prompts[c * per : (c + 1) * per]
        padded = chunk + [chunk[-1]] * (per - len(chunk))
        out = run_episodes(policy, envs, padded, seed + c * per, seed + c)
        n = len(chunk)
        rewards.append(out["rewards"].numpy()[:n])
        kls.append(out["exact_kl"].sum(1).numpy()[:n])
        images.append(out["images"][:n])
    return {
        "rewards": np.concatenate(rewards).astype(np.float64),
        "kl": np.concatenate(kls).astype(np.float64),
        "images": np.concatenate(images),
    }


def judge_readings(task: Task, images: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """The independent judge's prompt following and its reading of the task's target."""
    if not task.world_only:
        return {}
    from diffenvs.models import load_judge
    from diffenvs.rewards.pretrained import OracleReward

    judge = load_judge()
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    out = {}
    follow = OracleReward(oracle=judge, soft=False)
    out["prompt_following"] = float(follow.compute(x, prompts)[1]["accuracy"].mean())
    if task.independent_target is not None:
        target = OracleReward(task.independent_target, oracle=judge, soft=False)
        score, details = target.compute(x, prompts)
        checked = details["n_attributes"] > 0
        out["independent"] = float(score[checked].mean()) if bool(checked.any()) else float("nan")
    return out


def summarise(result: dict[str, np.ndarray], task: Task, prompts: list[str]) -> dict[str, float]:
    from agents.ppo.evaluate import image_diversity

    r = result["rewards"]
    out = {
        "reward_mean": float(r.mean()),
        "reward_std": float(r.std()),
        "kl_to_base": float(result["kl"].mean()),
        "diversity": image_diversity(result["images"], prompts),
        "n": float(len(r)),
    }
    return out | judge_readings(task, result["images"], prompts)


def reference_summary(task: Task, denoiser: Any, envs: Any, seed: int) -> dict[str, float]:
    """Reward, path KL and distance to p*_β of ``denoiser``'s samples on a reference task."""
    from diffenvs.reference import calibration_report, distance_report, sample_policy

    sampler, reference = envs.unwrapped.sampler, envs.unwrapped.task
    beta = float(task.kl_coef if task.kl_coef is not None else 1.0)
    out = sample_policy(sampler, denoiser, task.eval_episodes, seed=seed)
    report = distance_report(reference, beta, out["samples"], out["path_kl"], seed=seed)
    summary = {
        "reward_mean": report["reward_mean"],
        "reward_std": report["reward_sem"] * report["n"] ** 0.5,
        "kl_to_base": float(out["path_kl"].mean()),
        "diversity": float("nan"),
        "n": report["n"],
        **{
            k: report[k] for k in ("objective", "optimum_objective", "optimum_reward", "optimum_kl")
        },
        "sw2_to_pstar": report["sw2_to_pstar"],
        "knn_kl_to_pstar": report["knn_kl_to_pstar"],
    }
    if denoiser is sampler.unet:
        floor = calibration_report(reference, beta, out["samples"], seed=seed)
        summary["sw2_noise_floor"] = floor["sw2_pstar_vs_pstar"]
    return summary


@torch.no_grad()
def rollout_noise_policy(
    policy: Any, envs: Any, prompts: list[str], seed: int
) -> dict[str, np.ndarray]:
    """As :func:`rollout_denoiser` for a noise-mode policy (``envs`` in noise mode): the same
    env seeds and step noise z, the action mean + std·z, and the path KL of N(mean, std²) to the
    base sampler's N(0, I) (equal to the KL of the two x_{t-1} Gaussians)."""
    per, steps = envs.num_envs, envs.num_steps
    rewards, kls, images = [], [], []
    for c in range(math.ceil(len(prompts) / per)):
        chunk = prompts[c * per : (c + 1) * per]
        padded = chunk + [chunk[-1]] * (per - len(chunk))
        gen = torch.Generator().manual_seed(seed + c)  # run_episodes' noise seed
        obs, _ = envs.reset(seed=seed + c * per, options={"prompts": padded})
        kl = torch.zeros(per, dtype=torch.float64)
        for _ in range(steps):
            mean, std = policy(obs)
            z = torch.randn(mean.shape, generator=gen)
            per_dim = -torch.log(std) + (std**2 + mean**2) / 2 - 0.5
            kl += per_dim.flatten(1).sum(1).double()
            obs, _, terminated, _, info = envs.step((mean + std * z).numpy())
        if not terminated.all():
            raise RuntimeError("Episodes did not end after num_steps steps.")
        n = len(chunk)
        rewards.append(np.asarray(info["terminal_reward"], dtype=np.float64)[:n])
        kls.append(kl.numpy()[:n])
        images.append(np.stack(list(info["image"]))[:n])
    return {
        "rewards": np.concatenate(rewards),
        "kl": np.concatenate(kls),
        "images": np.concatenate(images),
    }


def evaluate_noise_policy(task: Task, policy: Any, seed: int) -> dict[str, float]:
    """The held-out summary of a noise-mode policy (see :class:`agents.bench.entrants.Trained`)."""
    envs = make_eval_envs(task, action_mode="noise")
    prompts = eval_prompts(task, seed)
    return summarise(rollout_noise_policy(policy, envs, prompts, seed), task, prompts)


def evaluate_denoiser(task: Task, denoiser: Any, envs: Any, seed: int) -> dict[str, float]:
    """The held-out summary of ``denoiser`` (``envs.unwrapped.sampler.unet`` for the base model)."""
    if task.is_reference:
        return reference_summary(task, denoiser, envs, seed)
    prompts = eval_prompts(task, seed)
    return summarise(rollout_denoiser(denoiser, envs, prompts, seed), task, prompts)
