"""Two baselines for ``PromptAppend-v0`` that need no learning.

* :func:`random_search` — ``budget`` distinct random prompts, keep the best by reward.
* :func:`clip_greedy` — Naik et al.'s (ImagePrompt) "CLIP-ranked prompt": append, one at a time,
  the word whose prompt's CLIP *text* embedding is closest to the target image; it costs no reward
  evaluation.

    python -m agents.prompt.baselines --method random --budget 48
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import tyro

from agents.common.prompt_env import final_report, make_env, task_indices
from agents.common.seeding import seed_everything
from agents.prompt.config import BaselineConfig
from diffenvs.io import write_json


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
    image, one at a time (Naik et al.'s CLIP-ranked prompt; no image is generated)."""
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


def train(cfg: BaselineConfig) -> dict[str, Any]:
    """Run the baseline and report its prompts (nothing is trained; the name is the contract's)."""
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
    print(json.dumps(train(tyro.cli(BaselineConfig)), indent=2, default=str))
