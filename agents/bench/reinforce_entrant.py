"""REINFORCE on the diffusion policy: the leaderboard's smallest complete entrant, and the template.

Copy this file to put your own algorithm on the leaderboard: keep ``name``, ``summary`` and the
signature of ``train``, replace the update. It uses only the env's public side: the vector env
of ``DiffusionDenoise-v0`` in latent mode (the action is x_{t-1}) and ``env.unwrapped.sampler``,
whose ``model_output`` / ``distribution`` give the Gaussian of x_{t-1} for any copy of its UNet.

The algorithm (Williams, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning"; for diffusion: Black et al., DDPO's DDPO_SF): sample images with the
policy, give every step of an image that image's advantage (its reward minus the mean of its
prompt group, divided by the group's std), and take one gradient step on
``-(advantage * log π(x_{t-1} | x_t)).mean()``, the log-prob averaged over the latent's dimensions.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from agents.bench.entrants import Budget, CurvePoint, Diverged, Trained
from agents.bench.tasks import Task


class ReinforceEntrant:
    name = "reinforce"
    summary = "REINFORCE with per-prompt baselines, one gradient step per batch (the template)"

    def __init__(
        self, learning_rate: float = 1e-4, images_per_update: int = 16, samples_per_prompt: int = 4
    ) -> None:
        self.learning_rate = learning_rate
        self.images_per_update = images_per_update
        self.samples_per_prompt = samples_per_prompt

    def advantages(self, rewards):
        """Per-image advantages from a batch's rewards (B,), in groups of ``samples_per_prompt``
        consecutive images of one prompt: the reward minus its group's mean, over the group's
        std. Override this to try another baseline (``examples/bench_my_agent.py`` does)."""
        r = rewards.reshape(-1, self.samples_per_prompt)
        return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).reshape(-1)

    def train(self, task: Task, budget: Budget, seed: int, run_dir: Path) -> Trained:
        import gymnasium as gym
        import numpy as np
        import torch

        import diffenvs  # noqa: F401  (registers the environments)
        from diffenvs.envs.denoise_prompts import make_prompt_source
        from diffenvs.envs.validate import ACTION_LIMIT

        # The task's recipe (batch size, learning rate for its scale) wins over the defaults.
        n = int(task.recipe.get("images_per_update", self.images_per_update))
        group = int(task.recipe.get("samples_per_prompt", self.samples_per_prompt))
        learning_rate = float(task.recipe.get("learning_rate", self.learning_rate))
        self.samples_per_prompt = group
        if budget.images < n:
            raise ValueError(f"A budget of {budget.images} images is less than one batch of {n}.")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        envs = gym.make_vec(
            task.env_id,
            num_envs=n,
            vectorization_mode="vector_entry_point",
            prompts=make_prompt_source(task.prompts),
            action_mode="latent",  # the policy hands the env x_{t-1}
            **task.env_options(),
        )
        sampler = envs.unwrapped.sampler
        policy = copy.deepcopy(sampler.unet).requires_grad_(True)  # never train the env's copy
        optimizer = torch.optim.AdamW(policy.parameters(), lr=learning_rate)
        prompts = make_prompt_source(task.prompts)
        curve: list[CurvePoint] = []
        start, images = time.perf_counter(), 0
        while images + n <= budget.images and time.perf_counter() - start < budget.seconds:
            # 1. Sample a batch with the current policy; remember every step's (x_t, x_{t-1}).
            batch = [
                p for p in (prompts.sample(rng) for _ in range(n // group)) for _ in range(group)
            ]
            obs, _ = envs.reset(seed=int(rng.integers(2**31)), options={"prompts": batch})
            embeds = torch.as_tensor(obs["prompt_embeds"])
            steps = []
            for k in range(sampler.num_steps):
                x = torch.as_tensor(obs["latent"])
                ks = torch.full((n,), k)
                with torch.no_grad():
                    dist = sampler.distribution(sampler.model_output(policy, x, ks, embeds), x, ks)
                    prev = dist.sample(torch.randn_like(x))
                if not bool(torch.isfinite(prev).all()) or float(prev.abs().max()) > ACTION_LIMIT:
                    # Nothing regularises the policy here (no KL): report it, don't crash.
                    raise Diverged(f"x_t left [-{ACTION_LIMIT:g}, {ACTION_LIMIT:g}]", curve)
                obs, _, _, _, info = envs.step(prev.numpy())
                steps.append((x, ks, prev))
            rewards = torch.as_tensor(info["terminal_reward"], dtype=torch.float32)
            # 2. Advantages: one number per image, given to every step of it.
            adv = self.advantages(rewards)
            # 3. One gradient step on the score-function estimator, step by step (small graphs).
            optimizer.zero_grad(set_to_none=True)
            dims = float(np.prod(sampler.latent_shape))
            for x, ks, prev in steps:
                out = sampler.model_output(policy, x, ks, embeds)
                log_prob = sampler.distribution(out, x, ks).log_prob(prev) / dims
                (-(adv * log_prob).mean() / len(steps)).backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            images += n
            curve.append(CurvePoint(images, time.perf_counter() - start, float(rewards.mean())))
        config = {
            "learning_rate": learning_rate,
            "images_per_update": n,
            "samples_per_prompt": group,
        }
        return Trained(policy.eval(), curve, config)
