"""Evaluation of the direct fine-tuning agents: held-out images with fixed seeds and noise.

The same prompts, seeds and step noise before and after training, so each after-image has a
base-model twin. Each image gets the reward's exact score (not a smooth stand-in), the objective
the agent differentiates, the world oracle's prompt following and the independent judge's (the
reward-hacking check: a proxy that rises while the judge falls is being gamed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def load_readers(oracle: bool, judge: bool, device: Any) -> dict[str, Any]:
    """``{"oracle": ..., "judge": ...}`` hard prompt-following readers (those that load)."""
    from diffenvs.rewards import OracleReward

    readers: dict[str, Any] = {}
    if oracle:
        readers["oracle"] = OracleReward(soft=False, device=device)
    if judge:
        from diffenvs.models import load_judge
        from diffenvs.models.errors import ModelNotFoundError

        try:
            readers["judge"] = OracleReward(soft=False, oracle=load_judge(device=device or "cpu"))
        except (ModelNotFoundError, FileNotFoundError, ValueError) as err:  # no judge here
            print(f"[direct] no judge for evaluation: {err}")
    return readers


@torch.no_grad()
def generate(
    diff: Any, unet: Any, prompts: list[str], seeds: list[int], batch_size: int
) -> torch.Tensor:
    """Float images (N, 3, H, W) from full sampler chains of ``unet`` (no graph)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        p, s = prompts[i : i + batch_size], seeds[i : i + batch_size]
        x_T, noise = diff.initial_noise(s)
        latents = diff.rollout(unet, diff.encode_prompts(p), x_T, noise).latents
        out.append(diff.decode(latents).float())
    return torch.cat(out)


@torch.no_grad()
def evaluate(
    diff: Any,
    unet: Any,
    reward: Any,
    prompts: list[str],
    seed: int,
    readers: dict[str, Any],
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Rewards, objective values, prompt-following accuracies and uint8 images on fixed samples."""
    seeds = [seed + i for i in range(len(prompts))]
    images = generate(diff, unet, prompts, seeds, batch_size)
    result = {
        "rewards": reward.evaluate(images, prompts).rewards.cpu().numpy(),
        "objective": reward.differentiable_score(images, prompts).float().cpu().numpy(),
        "images": (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(),
    }
    for name, reader in readers.items():
        acc = reader.evaluate(images, prompts).details["accuracy"].float().cpu().numpy()
        result["accuracy" if name == "oracle" else f"{name}_accuracy"] = acc
    return result


def summary(result: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of every per-image column (no images)."""
    return {k: float(np.nanmean(v)) for k, v in result.items() if k != "images"}
