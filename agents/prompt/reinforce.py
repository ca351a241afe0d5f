"""REINFORCE for ``PromptAppend-v0``: the policy of Naik, Bharadwaj & Bharadwaj (ImagePrompt).

One file, top to bottom: policy network → episode collection → policy-gradient update → greedy
decoding → report and checkpoint (the config is :class:`agents.prompt.config.ReinforceConfig`).

* **Policy.** ImagePrompt's two-layer network (input → 128, ReLU → one logit per word, softmax)
  over the env's flat observation (CLIP embeddings of the current prompt and of the target, and the
  appended words); masked words get probability 0, so no word is appended twice.
* **Update.** Each iteration collects ``episodes_per_iter`` episodes (ImagePrompt: 20) and
  minimises ``−Σ_t log π(a_t|s_t)·(G_t − b)`` with ``G_t`` the return from step ``t`` (γ = 1) and
  ``b`` the batch's mean return (``baseline``), minus a small entropy bonus. ImagePrompt pays the
  similarity at every step (``--env.reward-mode per_step``); the default here is the terminal
  reward, so that every agent spends the same reward evaluations per episode.
* **Decoding.** Greedy: the most likely allowed word at each step (as ImagePrompt).

    python -m agents.prompt.reinforce --budget 48 --env.task 0
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch
import tyro
from torch import nn
from tqdm.auto import tqdm

from agents.common.prompt_env import decode, final_report, make_env, task_indices
from agents.common.runs import config_json, run_dir
from agents.common.seeding import seed_everything
from agents.prompt.config import ReinforceConfig
from diffenvs.io import save_tensors, write_json


class Policy(nn.Module):
    """ImagePrompt's policy: Linear(obs → hidden) → ReLU → Linear(hidden → words), softmax."""

    def __init__(self, obs_dim: int, n_words: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_words))

    def forward(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.mlp(obs).masked_fill(~mask, -1e9))


def train(cfg: ReinforceConfig) -> dict[str, Any]:
    """Train, decode and report (a training loop, documented as such: it reads top to bottom)."""
    seed_everything(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg.env)
    obs, _ = env.reset(seed=cfg.seed)
    u = env.unwrapped
    if not isinstance(obs, np.ndarray):
        raise ValueError("REINFORCE needs observation='flat' (a Box observation).")
    policy = Policy(obs.shape[0], int(env.action_space.n), cfg.hidden)
    optim = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    tasks = task_indices(env)
    log: list[dict[str, float]] = []
    best: dict[int, tuple[float, str]] = {}
    start = time.perf_counter()
    bar = tqdm(total=cfg.budget, disable=not cfg.progress, desc="REINFORCE reward evaluations")
    while u.reward_evaluations < cfg.budget:
        # --- collect a batch of episodes with the current stochastic policy
        obs_l, mask_l, act_l, ret_l = [], [], [], []
        for _ in range(cfg.episodes_per_iter):
            if u.reward_evaluations >= cfg.budget:
                break
            task = int(rng.choice(tasks))
            obs, _ = env.reset(options={"task": task})
            rewards: list[float] = []
            done = False
            while not done:
                mask = u.action_masks()
                with torch.no_grad():
                    dist = policy(torch.as_tensor(obs)[None], torch.as_tensor(mask)[None])
                a = int(dist.sample()[0])
                obs_l.append(obs)
                mask_l.append(mask)
                act_l.append(a)
                obs, r, done, _, info = env.step(a)
                rewards.append(float(r))
            ret_l += list(np.cumsum(rewards[::-1])[::-1])  # G_t, γ = 1
            if sum(rewards) > best.get(task, (-np.inf, ""))[0]:
                best[task] = (sum(rewards), info["prompt"])
        bar.update(u.reward_evaluations - bar.n)
        # --- one policy-gradient step on the batch
        returns = torch.as_tensor(np.asarray(ret_l), dtype=torch.float32)
        adv = returns
        if cfg.baseline and len(returns) > 1:
            adv = (returns - returns.mean()) / (returns.std() + 1e-6)
        dist = policy(
            torch.as_tensor(np.stack(obs_l), dtype=torch.float32),
            torch.as_tensor(np.stack(mask_l)),
        )
        logp = dist.log_prob(torch.as_tensor(act_l))
        loss = -(logp * adv).mean() - cfg.entropy_coef * dist.entropy().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        log.append(
            {
                "reward_evaluations": u.reward_evaluations,
                "loss": float(loss.detach()),
                "return_mean": float(returns.mean()),
                "time_s": time.perf_counter() - start,
            }
        )
    bar.close()
    train_time = time.perf_counter() - start
    spent = u.reward_evaluations

    # --- greedy decoding and the report
    def choose(obs: np.ndarray, mask: np.ndarray) -> int:
        with torch.no_grad():
            return int(
                policy(torch.as_tensor(obs)[None], torch.as_tensor(mask)[None]).probs.argmax()
            )

    prompts = {t: u.prompt_of(decode(env, choose, t)) for t in tasks}
    report = final_report(
        env,
        prompts,
        cfg.env.eval_seeds,
        reward_evaluations=spent,
        train_time_s=train_time,
        best_seen={t: p for t, (_, p) in best.items()},
        cache_hit_rate=u.cache_stats.hit_rate,
    )
    out = run_dir(cfg.output_dir, cfg.run_name, f"reinforce_seed{cfg.seed}")
    if cfg.save:
        save_tensors(
            dict(policy.state_dict()),
            out / "policy.safetensors",
            metadata={"config": config_json(cfg), "vocabulary": json.dumps(u.vocabulary)},
        )
        write_json(out / "report.json", report)
        write_json(out / "progress.json", log)
    return {
        "policy": policy,
        "report": report,
        "log": log,
        "run_dir": str(out) if cfg.save else None,
    }


if __name__ == "__main__":
    result = train(tyro.cli(ReinforceConfig))
    print(json.dumps(result["report"], indent=2, default=str))
