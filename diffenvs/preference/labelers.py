"""Synthetic labelers: the world oracle standing in for a person with a taste.

``SyntheticLabeler("blurred")`` prefers images the oracle reads as blurred; ``follow_prompt``
adds a preference for images that show what their prompt says, as a careful person would. Noise
is Gumbel noise on the utilities (a Bradley-Terry / Plackett-Luce labeler); utilities closer than
``tie_margin`` are ties. Everything is seeded, so a labelled set is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffenvs.preference.data import RankedSet, dense_ranks


class SyntheticLabeler:
    """Ranks each task's images by oracle utility (plus noise); also answers single comparisons."""

    def __init__(
        self,
        preference: str = "blurred",
        *,
        follow_prompt: float = 1.0,
        noise: float = 0.05,
        tie_margin: float = 0.02,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        from diffenvs.rewards import OracleReward

        if noise < 0 or tie_margin < 0 or follow_prompt < 0:
            raise ValueError(
                "noise, tie_margin and follow_prompt must be >= 0 "
                f"(got {noise}, {tie_margin}, {follow_prompt})."
            )
        self.preference = preference
        self.wants = OracleReward(target=preference, soft=True, device=device)
        self.follows = OracleReward(soft=True, device=device) if follow_prompt else None
        self.follow_prompt, self.noise, self.tie_margin = follow_prompt, noise, tie_margin
        self.rng = np.random.default_rng(seed)
        self.name = f"synthetic:{preference}"

    @torch.no_grad()
    def utility(self, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """Noise-free utility: P(preferred attribute) + follow_prompt x P(prompt's attributes)."""
        u = self.wants.evaluate(images, list(prompts)).rewards.double().cpu().numpy()
        if self.follows is not None:
            follow = self.follows.evaluate(images, list(prompts)).rewards.double().cpu().numpy()
            u = u + self.follow_prompt * follow
        return u

    def _noisy(self, u: np.ndarray) -> np.ndarray:
        return u + self.noise * self.rng.gumbel(size=u.shape) if self.noise else u

    def rank(self, task: RankedSet, images: np.ndarray | None = None) -> RankedSet:
        """The task with ``ranks`` filled in (images are read from disk unless given)."""
        images = task.load_images() if images is None else images
        u = self._noisy(self.utility(images, [task.prompt] * len(images)))
        n = len(images)
        task.ranks = dense_ranks(u.tolist(), self.tie_margin)
        task.labeler = self.name
        # What binary insertion sort would need: sum over k of ceil(log2(k + 1)).
        task.n_comparisons = int(sum(np.ceil(np.log2(np.arange(1, n) + 1))))
        return task

    def compare(self, left: np.ndarray, right: np.ndarray, prompt: str) -> str:
        """One answer as the labeling app takes it: ``"left"``, ``"right"`` or ``"tie"``."""
        u = self._noisy(self.utility(np.stack([left, right]), [prompt, prompt]))
        if abs(u[0] - u[1]) <= self.tie_margin:
            return "tie"
        return "left" if u[0] > u[1] else "right"
