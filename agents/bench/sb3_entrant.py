"""Stable-Baselines3 PPO in noise mode as a leaderboard entrant: a generic RL library, unchanged.

The policy does not fine-tune the diffusion model: it is SB3's ``MultiInputPolicy`` (a small CNN
over x_t, the timestep and the prompt, :mod:`agents.adapters.sb3.denoise`) that picks each
sampler step's noise in ``DiffusionDenoise-v0``'s noise mode, so x_{t-1} = μ_base(x_t) + σ_t·a.
Its Gaussian starts at mean ≈ 0, std 1: the base sampler. The leaderboard evaluates it through
:class:`SB3NoisePolicy` with the same x_T and step noise z as every other entrant
(a = mean + std·z), and its KL to the base model is the closed-form KL of N(mean, std²) to
N(0, I) per step, which equals the KL of the two x_{t-1} Gaussians (the same affine map of both).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agents.bench.entrants import Budget, CurvePoint, Diverged, Trained
from agents.bench.tasks import Task


class SB3NoisePolicy:
    """An SB3 Gaussian policy as the leaderboard's noise-mode policy: ``(mean, std)`` of the noise
    for a batch of the env's observations, each shaped like the latent."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy.eval()

    def __call__(self, obs: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        with torch.no_grad():
            obs_t, _ = self.policy.obs_to_tensor(obs)
            dist = self.policy.get_distribution(obs_t).distribution
            shape = obs["latent"].shape
            return dist.mean.reshape(shape).float(), dist.stddev.reshape(shape).float()


class SB3PPOEntrant:
    name = "sb3-ppo"
    summary = "Stable-Baselines3 PPO in noise mode (a CNN policy picks each step's noise)"

    def __init__(self, learning_rate: float = 1e-4, n_epochs: int = 4, num_envs: int = 8) -> None:
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs
        self.num_envs = num_envs

    def cannot_run(self, task: Task) -> str | None:
        if task.env_id != "DiffusionDenoise-v0":
            return f"the SB3 adapter wraps DiffusionDenoise-v0's vector env, not {task.env_id}"
        return None

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained:
        import numpy as np
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback

        from agents.adapters.sb3.denoise import denoise_policy_kwargs, make_sb3_vec_env
        from agents.common.seeding import seed_everything
        from diffenvs.envs.denoise_prompts import make_prompt_source

        reason = self.cannot_run(task)
        if reason is not None:
            raise ValueError(f"{self.name} cannot run task {task.name!r}: {reason}.")
        per_update = int(task.recipe.get("images_per_update", 16))
        if budget.images < per_update or per_update % self.num_envs:
            raise ValueError(
                f"{self.name} needs a budget of at least one update ({per_update} images, a "
                f"multiple of its {self.num_envs} envs); got {budget.images}."
            )
        seed_everything(seed)
        steps = task.num_steps
        options = task.env_options() | {"prompts": make_prompt_source(task.prompts)}
        venv = make_sb3_vec_env(self.num_envs, action_mode="noise", **options)
        venv.seed(seed)
        model = PPO(
            "MultiInputPolicy",
            venv,
            learning_rate=float(task.recipe.get("learning_rate", self.learning_rate)),
            n_steps=per_update // self.num_envs * steps,
            batch_size=per_update * steps // 4,
            n_epochs=self.n_epochs,
            gamma=1.0,  # one reward at the end of a fixed-length episode
            gae_lambda=0.95,
            policy_kwargs=denoise_policy_kwargs(),
            seed=seed,
            device="cpu",
            verbose=0,
        )
        curve: list[CurvePoint] = []
        start = time.perf_counter()

        class Curve(BaseCallback):
            """One curve point per rollout (update): the mean terminal reward of its episodes."""

            def __init__(self) -> None:
                super().__init__()
                self.rewards: list[float] = []
                self.images = 0

            def _on_step(self) -> bool:
                for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                    if done:
                        self.rewards.append(float(info["terminal_reward"]))
                        self.images += 1
                return time.perf_counter() - start < budget.seconds

            def _on_rollout_end(self) -> None:
                if self.rewards:
                    seconds = time.perf_counter() - start
                    curve.append(CurvePoint(self.images, seconds, float(np.mean(self.rewards))))
                self.rewards = []

        try:
            model.learn(total_timesteps=budget.images // per_update * per_update * steps,
                        callback=Curve())  # fmt: skip
        except ValueError as err:  # SB3's Gaussian refuses NaN means: the update blew up
            if all(bool(p.isfinite().all()) for p in model.policy.parameters()):
                raise
            raise Diverged("the policy's weights became non-finite", curve) from err
        venv.close()
        config = {
            "learning_rate": model.learning_rate,
            "images_per_update": per_update,
            "n_epochs": self.n_epochs,
            "num_envs": self.num_envs,
            "batch_size": model.batch_size,
        }
        return Trained(None, curve, config, noise_policy=SB3NoisePolicy(model.policy))
