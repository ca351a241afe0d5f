"""``PromptAppend-v0`` helpers shared by every prompt agent (SQL, REINFORCE, the baselines and the
SB3/Tianshou adapters).

* :class:`PromptEnvArgs` — the env settings every prompt agent takes (``--env.tasks`` ... on the
  command line) and :func:`make_env`.
* :func:`decode` — one episode with a given choice rule (greedy decoding of a trained policy).
* :func:`final_report` — the numbers every agent reports for the prompts it ends with: image
  similarity to the target (Gudibande & Zhu, eq. 4) on held-out *evaluation* seeds, next to the
  seed prompt's and the ground truth's, so a prompt that only fits the training seeds' noise does
  not look good.

This module imports no torch: agent configs import :class:`PromptEnvArgs` from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np


@dataclass
class PromptEnvArgs:
    """PromptAppend-v0 settings shared by the prompt agents."""

    tasks: str = "world:test"
    """'world:train', 'world:test', 'world:all' or a .jsonl task file."""
    task: int | None = 0
    """optimise this one task (per task, as Naik et al.); None: train across the whole task set."""
    vocabulary: str = "default"
    """'default' (modifiers + a few words), 'extended' (+ colours and shapes, 26 words),
    'captions' (Naik et al.) or comma-separated words."""
    n_appends: int = 2
    reward_mode: Literal["terminal", "per_step"] = "terminal"
    lambda_image: float = 1.0
    lambda_text: float = 0.0
    generation_seeds: tuple[int, ...] = (0, 1)
    eval_seeds: tuple[int, ...] = (100, 101, 102, 103)
    """seeds of the final evaluation (never seen in training)."""
    model: str = "world"
    """'world', 'renderer' (exact and fast) or a pipeline folder."""
    num_inference_steps: int = 10
    extra: dict[str, Any] = field(default_factory=dict)
    """more gym.make keyword arguments."""

    def kwargs(self) -> dict[str, Any]:
        vocab: Any = self.vocabulary
        if vocab not in ("default", "extended", "captions"):
            vocab = [w.strip() for w in vocab.split(",")]
        return {
            "tasks": self.tasks,
            "task": self.task,
            "vocabulary": vocab,
            "n_appends": self.n_appends,
            "reward_mode": self.reward_mode,
            "lambda_image": self.lambda_image,
            "lambda_text": self.lambda_text,
            "generation_seeds": self.generation_seeds,
            "model": self.model,
            "num_inference_steps": self.num_inference_steps,
            **self.extra,
        }


def make_env(args: PromptEnvArgs, **overrides: Any) -> gym.Env:
    import diffenvs  # noqa: F401  (registers the environments)

    return gym.make("PromptAppend-v0", **{**args.kwargs(), **overrides})


def task_indices(env: gym.Env) -> list[int]:
    """The tasks an agent optimises: the env's fixed task, or every task of its set."""
    u = env.unwrapped
    return [u.task_index] if u.task_index is not None else list(range(len(u.tasks)))


def decode(env: gym.Env, choose: Callable[[np.ndarray, np.ndarray], int], task: int) -> list[int]:
    """Run one episode on ``task`` choosing ``choose(obs, mask)``; the appended word indices."""
    obs, _ = env.reset(options={"task": task})
    done = False
    while not done:
        obs, _, done, _, _ = env.step(choose(obs, env.unwrapped.action_masks()))
    # The env's own record: with masked_action="redirect" it may differ from the choices.
    return list(env.unwrapped.tokens)


def final_report(
    env: gym.Env, prompts: dict[int, str], eval_seeds: Sequence[int], **extra: Any
) -> dict[str, Any]:
    """Per task: the final prompt, its image similarity on ``eval_seeds`` (and the training reward),
    next to the seed prompt's and the ground truth's."""
    u = env.unwrapped
    rows = []
    for index, prompt in prompts.items():
        env.reset(options={"task": index})
        task = u.task
        refs = [task.seed_prompt] + ([task.ground_truth] if task.ground_truth else [])
        s = u.score([prompt, *refs], eval_seeds)["image_similarity"]
        rows.append(
            {
                "task": task.name,
                "category": task.category,
                "seed_prompt": task.seed_prompt,
                "ground_truth": task.ground_truth,
                "prompt": prompt,
                "appended": prompt[len(task.seed_prompt) :].lstrip(", "),
                "similarity": float(s[0]),
                "seed_similarity": float(s[1]),
                "ground_truth_similarity": float(s[2]) if len(s) > 2 else None,
                "train_reward": float(u.score(prompt)["reward"][0]),
            }
        )
    return {"tasks": rows, "similarity": float(np.mean([r["similarity"] for r in rows])), **extra}
