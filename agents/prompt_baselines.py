"""Shared pieces of the ``PromptAppend-v0`` agents, and two baselines that need no learning.

* :class:`PromptEnvArgs` — the env settings every prompt agent takes (``--env.tasks`` ... on the
  command line) and :func:`make_env`.
* :func:`final_report` — the numbers every agent reports for the prompts it ends with: image
  similarity to the target (eq. 4) on held-out *evaluation* seeds, next to the seed prompt's and the
  ground truth's, so a prompt that only fits the training seeds' noise does not look good.
* :func:`random_search` — ``budget`` distinct random prompts, keep the best by reward.
* :func:`clip_greedy` — seed 001's "CLIP-ranked prompt": append, one at a time, the word whose
  prompt's CLIP *text* embedding is closest to the target image; it costs no reward evaluation.

    python -m agents.prompt_baselines --method random --budget 48
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import tyro

import diffenvs  # noqa: F401  (registers the environments)
from diffenvs.io import write_json


@dataclass
class PromptEnvArgs:
    """PromptAppend-v0 settings shared by the prompt agents."""

    tasks: str = "world:test"
    """'world:train', 'world:test', 'world:all' or a .jsonl task file."""
    task: int | None = 0
    """optimise this one task (per-task, as seed 001); None: train across the whole task set."""
    vocabulary: str = "default"
    """'default' (modifiers + a few words), 'extended' (+ colours and shapes, 26 words),
    'captions' (seed 001) or comma-separated words."""
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
    return gym.make("PromptAppend-v0", **{**args.kwargs(), **overrides})


def seed_everything(seed: int, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_indices(env: gym.Env) -> list[int]:
    u = env.unwrapped
    return [u.task_index] if u.task_index is not None else list(range(len(u.tasks)))


def decode(env: gym.Env, choose: Callable[[np.ndarray, np.ndarray], int], task: int) -> list[int]:
    """Run one episode on ``task`` choosing ``choose(obs, mask)``; the appended word indices."""
    obs, _ = env.reset(options={"task": task})
    done = False
    while not done:
        obs, _, done, _, _ = env.step(choose(obs, env.unwrapped.action_masks()))
    return list(env.unwrapped._tokens)


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


def random_search(env: gym.Env, budget: int, rng: np.random.Generator) -> dict[int, str]:
    """Per task, ``budget`` random prompts (distinct while there are untried ones); the best."""
    u = env.unwrapped
    best: dict[int, str] = {}
    for index in task_indices(env):
        start = u.reward_evaluations
        seen: set[tuple[int, ...]] = set()
        top = (-np.inf, "")
        while u.reward_evaluations - start < budget:
            for _ in range(100):  # rejection sampling of an untried word sequence
                env.reset(options={"task": index})
                tokens: list[int] = []
                for _ in range(u.n_appends):
                    mask = u.action_masks()
                    mask[tokens] = False
                    tokens.append(int(rng.choice(np.flatnonzero(mask))))
                if tuple(tokens) not in seen:
                    break
            seen.add(tuple(tokens))
            reward = 0.0
            for t in tokens:
                _, r, _, _, _ = env.step(t)
                reward += float(r)
            if reward > top[0]:
                top = (reward, u.prompt)
        best[index] = top[1]
    return best


def clip_greedy(env: gym.Env) -> dict[int, str]:
    """Per task, append the words whose prompt's CLIP text embedding is closest to the target
    image, one at a time (seed 001's CLIP-ranked prompt; no image is generated)."""
    u = env.unwrapped
    out: dict[int, str] = {}
    for index in task_indices(env):
        env.reset(options={"task": index})
        tokens: list[int] = []
        for _ in range(u.n_appends):
            mask = u.action_masks()
            mask[tokens] = False
            sims = np.where(mask, u.candidate_similarities(tokens), -np.inf)
            tokens.append(int(np.argmax(sims)))
        out[index] = u.prompt_of(tokens)
    return out


@dataclass
class BaselineConfig:
    """A non-learning baseline on PromptAppend-v0."""

    method: Literal["random", "clip_greedy"] = "random"
    env: PromptEnvArgs = field(default_factory=PromptEnvArgs)
    budget: int = 48
    """reward evaluations per task (random search)."""
    seed: int = 0
    threads: int = 1
    output_dir: str = "runs/prompt_baselines"
    save: bool = False


def main(cfg: BaselineConfig) -> dict[str, Any]:
    seed_everything(cfg.seed, cfg.threads)
    env = make_env(cfg.env)
    env.reset(seed=cfg.seed)
    if cfg.method == "random":
        prompts = random_search(env, cfg.budget, np.random.default_rng(cfg.seed))
    else:
        prompts = clip_greedy(env)
    evals = env.unwrapped.reward_evaluations
    report = final_report(env, prompts, cfg.env.eval_seeds, reward_evaluations=evals)
    if cfg.save:
        write_json(Path(cfg.output_dir) / f"{cfg.method}_seed{cfg.seed}.json", report)
    return report


if __name__ == "__main__":
    print(json.dumps(main(tyro.cli(BaselineConfig)), indent=2, default=str))
