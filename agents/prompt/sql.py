"""Soft Q-Learning for ``PromptAppend-v0``: RLPrompt (Deng et al.) as Gudibande & Zhu extended it
to text-to-image models.

One file, top to bottom: Q-network → soft values and path-consistency losses → reward shaping →
episode collection → training loop → greedy decoding → report and checkpoint (the config is
:class:`agents.prompt.config.SQLConfig`).

* **Q-network.** A trainable MLP head whose outputs are the Q-values (logits) of the vocabulary,
  on top of frozen features: the env's observation holds the world CLIP text encoder's embedding of
  the current prompt, the target image's CLIP embedding, and the appended words (multi-hot).
  ``--q-head candidates``: one network scores each word from its own features, starting at the
  CLIP text-image similarity of the prompt the word would make (Naik et al.'s prior).
* **Soft values.** ``V(s) = τ·logsumexp(Q(s, ·)/τ)`` over the allowed (unmasked) words, policy
  ``π(a|s) = exp((Q(s, a) − V(s))/τ)``, advantage ``A = Q − V``.
* **Losses** (Guo et al.'s path consistency, as RLPrompt mixes them): single-step
  ``½(−V̄(s_t) + r_t + γV̄(s_{t+1}) − A_θ(s_t, a_t))²`` and multi-step
  ``½(−V̄(s_t) + Σ_l γ^l (r_{t+l} − A_θ(s_{t+l}, a_{t+l})))²`` with ``V̄`` from a Polyak-averaged
  target network and ``V = 0`` after the last append.
* **Reward shaping.** ``zscore``: per task, ``(r − mean)/std`` over every reward seen on that task
  so far (RLPrompt's per-input normalisation), times ``reward_scale``; ``linear``: maps
  ``[reward_min, reward_max]`` to ``[0, reward_scale]``.

    python -m agents.prompt.sql --budget 48 --env.task 0
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch import nn
from tqdm.auto import tqdm

from agents.common.prompt_env import decode, final_report, make_env, task_indices
from agents.common.runs import config_json, run_dir
from agents.common.seeding import seed_everything
from agents.prompt.config import SQLConfig
from diffenvs.io import save_tensors, write_json

# --------------------------------------------------------------------------------------------
# Q-network and soft values


class QHead(nn.Module):
    """MLP from the (frozen) observation features to one Q-value per vocabulary word."""

    def __init__(self, obs_dim: int, n_words: int, hidden: tuple[int, ...] = (256,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_words))
        self.mlp = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs)


class CandidateQHead(nn.Module):
    """Q(s, w) for every word ``w`` by one network over per-word features.

    The observation must end with the ``V`` CLIP text-image similarities of the prompts one more
    word would make (``observe_candidates=True``). Each word's input is the state context, a
    learned word embedding and its similarity (raw and z-scored over the vocabulary); the z-score
    also enters Q directly with a learned weight, so the untrained policy already follows the CLIP
    prior and learning corrects it where the prior is wrong.
    """

    def __init__(
        self, obs_dim: int, n_words: int, hidden: int = 256, prior_weight: float = 0.3
    ) -> None:
        super().__init__()
        if obs_dim <= n_words:
            raise ValueError(
                f"CandidateQHead needs an observation that ends with the {n_words} candidate "
                f"similarities, but it has only {obs_dim} entries; make the env with "
                "observe_candidates=True."
            )
        self.n_words = n_words
        self.context = nn.Linear(obs_dim - n_words, hidden)
        self.word = nn.Parameter(0.1 * torch.randn(n_words, hidden))
        self.similarity = nn.Linear(2, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.prior = nn.Parameter(torch.tensor(float(prior_weight)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        state, sims = obs[..., : -self.n_words], obs[..., -self.n_words :]
        # The floor keeps near-equal similarities from blowing the z-score up (without it the
        # loss diverged in a renderer run).
        z = (sims - sims.mean(-1, keepdim=True)) / (sims.std(-1, keepdim=True) + 0.02)
        features = self.similarity(torch.stack([sims, z], dim=-1))
        h = torch.relu(self.context(state)[..., None, :] + self.word + features)
        return self.out(h)[..., 0] + self.prior * z


def sql_env_options(cfg: SQLConfig) -> dict[str, Any]:
    """Env options the Q-head needs (also for envs that decode a trained head)."""
    return {"observe_candidates": True} if cfg.q_head == "candidates" else {}


def make_q_head(cfg: SQLConfig, obs_dim: int, n_words: int) -> nn.Module:
    if cfg.q_head == "candidates":
        return CandidateQHead(obs_dim, n_words, cfg.hidden[0], cfg.prior_weight)
    return QHead(obs_dim, n_words, cfg.hidden)


def soft_value(q: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """``τ·logsumexp(Q/τ)`` over allowed actions (``mask`` True)."""
    return tau * torch.logsumexp(q.masked_fill(~mask, -1e9) / tau, dim=-1)


def pcl_losses(
    net: nn.Module, target: nn.Module, batch: dict[str, torch.Tensor], gamma: float, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single- and multi-step path-consistency losses of a batch of equal-length episodes.

    ``batch``: ``obs`` (B, T, F) before each append, ``mask`` (B, T, V), ``action`` (B, T) and
    shaped ``reward`` (B, T).
    """
    obs, mask, act, rew = batch["obs"], batch["mask"], batch["action"], batch["reward"]
    q = net(obs)
    adv = q.gather(-1, act[..., None])[..., 0] - soft_value(q, mask, tau)  # A_θ(s_t, a_t)
    with torch.no_grad():
        v_bar = soft_value(target(obs), mask, tau)  # V̄(s_t)
        v_next = torch.cat([v_bar[:, 1:], torch.zeros_like(v_bar[:, :1])], dim=1)  # V̄(s_T) = 0
    single = 0.5 * (-v_bar + rew + gamma * v_next - adv).pow(2)
    T = rew.shape[1]
    discount = gamma ** torch.arange(T, dtype=rew.dtype)
    multi = []
    for t in range(T):
        path = ((rew[:, t:] - adv[:, t:]) * discount[: T - t]).sum(dim=1)
        multi.append(0.5 * (-v_bar[:, t] + path).pow(2))
    return single.mean(), torch.stack(multi, dim=1).mean()


# --------------------------------------------------------------------------------------------
# Reward shaping


class RewardShaper:
    """Per-task running statistics of raw rewards, and the shaping that uses them."""

    def __init__(self, cfg: SQLConfig) -> None:
        self.cfg = cfg
        self.seen: dict[int, list[float]] = defaultdict(list)

    def observe(self, task: int, rewards: np.ndarray, final: bool) -> None:
        self.seen[task].append(float(rewards[-1] if final else rewards.sum()))

    def __call__(self, task: int, rewards: np.ndarray, paid: np.ndarray) -> np.ndarray:
        """Shape raw rewards (paid steps only: the terminal step, or every step)."""
        c = self.cfg
        if c.reward_shaping == "none":
            return rewards
        if c.reward_shaping == "linear":
            shaped = (rewards - c.reward_min) / (c.reward_max - c.reward_min) * c.reward_scale
        else:
            seen = np.asarray(self.seen[task])
            std = seen.std() if len(seen) > 1 else 1.0
            shaped = (rewards - seen.mean()) / max(std, 1e-3) * c.reward_scale
        return np.where(paid, shaped, 0.0)


# --------------------------------------------------------------------------------------------
# Acting


def act(net: nn.Module, obs: np.ndarray, mask: np.ndarray, tau: float, eps: float, rng: Any) -> int:
    """Sample from the soft policy (with ε-uniform exploration), allowed words only."""
    allowed = np.flatnonzero(mask)
    if rng.random() < eps:
        return int(rng.choice(allowed))
    with torch.no_grad():
        q = net(torch.as_tensor(obs)[None])[0].numpy().astype(np.float64)
    logits = q[allowed] / tau
    p = np.exp(logits - logits.max())
    return int(rng.choice(allowed, p=p / p.sum()))


def exhausted_words(
    tried: set[tuple[int, ...]], prefix: list[int], mask: np.ndarray, n_appends: int
) -> np.ndarray:
    """Bool (V,): allowed words after which every completion of ``prefix`` is in ``tried``."""
    n = len(prefix)
    # Completions of prefix + [w]: ordered picks of the remaining appends from the words still
    # allowed after w.
    completions = math.perm(int(mask.sum()) - 1, n_appends - n - 1)
    counts = Counter(seq[n] for seq in tried if list(seq[:n]) == prefix)
    out = np.zeros(mask.shape, bool)
    for w, c in counts.items():
        out[w] = mask[w] and c >= completions
    return out


def greedy(net: nn.Module) -> Any:
    """``choose(obs, mask)`` for :func:`agents.common.prompt_env.decode`: the best allowed Q."""

    def choose(obs: np.ndarray, mask: np.ndarray) -> int:
        with torch.no_grad():
            q = net(torch.as_tensor(obs)[None])[0].numpy()
        return int(np.flatnonzero(mask)[np.argmax(q[mask])])

    return choose


def collect_episode(
    env: gym.Env,
    net: nn.Module,
    cfg: SQLConfig,
    task: int,
    eps: float,
    rng: np.random.Generator,
    tried: set[tuple[int, ...]],
) -> tuple[dict[str, Any], str]:
    """One episode on ``task`` with the behaviour policy; the episode's arrays and final prompt."""
    u = env.unwrapped
    obs, _ = env.reset(options={"task": task})
    ep: dict[str, Any] = {"task": task, "obs": [], "mask": [], "action": [], "reward": []}
    done = False
    while not done:
        mask = u.action_masks()
        behaviour_mask = mask  # the soft values are over what the env allows
        if cfg.explore_untried:
            fresh = mask & ~exhausted_words(tried, list(u.tokens), mask, u.n_appends)
            behaviour_mask = fresh if fresh.any() else mask
        a = act(net, obs, behaviour_mask, cfg.temperature, eps, rng)
        ep["obs"].append(obs)
        ep["mask"].append(mask)
        ep["action"].append(a)
        obs, r, done, _, info = env.step(a)
        ep["reward"].append(float(r))
    ep = {k: np.asarray(v) if k != "task" else v for k, v in ep.items()}
    return ep, info["prompt"]


def replay_batch(
    episodes: list[dict[str, Any]], shaper: RewardShaper, paid: np.ndarray
) -> dict[str, torch.Tensor]:
    """Stack equal-length episodes into the tensors :func:`pcl_losses` takes."""
    return {
        "obs": torch.as_tensor(np.stack([e["obs"] for e in episodes]), dtype=torch.float32),
        "mask": torch.as_tensor(np.stack([e["mask"] for e in episodes])),
        "action": torch.as_tensor(np.stack([e["action"] for e in episodes])),
        "reward": torch.as_tensor(
            np.stack([shaper(e["task"], e["reward"], paid) for e in episodes]),
            dtype=torch.float32,
        ),
    }


# --------------------------------------------------------------------------------------------
# Training


def train(cfg: SQLConfig) -> dict[str, Any]:
    """Train the Q-head within ``cfg.budget`` reward evaluations, then report and save."""
    seed_everything(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg.env, **sql_env_options(cfg))
    obs, _ = env.reset(seed=cfg.seed)
    u = env.unwrapped
    if not isinstance(obs, np.ndarray):
        raise ValueError("SQL needs observation='flat' (a Box observation); drop --env.extra.")
    net = make_q_head(cfg, obs.shape[0], int(env.action_space.n))
    target = copy.deepcopy(net).requires_grad_(False)
    optim = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    shaper = RewardShaper(cfg)
    tasks = task_indices(env)
    # Steps that pay a reward: the last append, or every append.
    paid = np.zeros(u.n_appends, bool)
    paid[-1] = True
    if cfg.env.reward_mode == "per_step":
        paid[:] = True
    replay: list[dict[str, Any]] = []
    log: list[dict[str, float]] = []
    tried: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    evaluated: dict[int, dict[str, float]] = defaultdict(dict)  # task -> prompt -> return
    start = time.perf_counter()
    bar = tqdm(total=cfg.budget, disable=not cfg.progress, desc="SQL reward evaluations")
    while u.reward_evaluations < cfg.budget:
        # --- collect episodes with the soft policy
        eps = cfg.epsilon * max(0.0, 1.0 - u.reward_evaluations / cfg.budget)
        for _ in range(cfg.episodes_per_batch):
            if u.reward_evaluations >= cfg.budget:
                break
            task = int(rng.choice(tasks))
            ep, prompt = collect_episode(env, net, cfg, task, eps, rng, tried[task])
            shaper.observe(task, ep["reward"], final=cfg.env.reward_mode == "terminal")
            replay.append(ep)
            tried[task].add(tuple(int(a) for a in ep["action"]))
            evaluated[task][prompt] = float(ep["reward"].sum())
        bar.update(u.reward_evaluations - bar.n)
        # --- path-consistency updates on episodes from the replay buffer
        losses = []
        for _ in range(cfg.updates_per_batch):
            idx = rng.choice(len(replay), size=min(cfg.minibatch, len(replay)), replace=False)
            batch = replay_batch([replay[i] for i in idx], shaper, paid)
            single, multi = pcl_losses(net, target, batch, cfg.gamma, cfg.temperature)
            loss = {"single": single, "multi": multi, "mix": 0.5 * (single + multi)}[cfg.loss]
            optim.zero_grad()
            loss.backward()
            optim.step()
            with torch.no_grad():
                for p, p_bar in zip(net.parameters(), target.parameters(), strict=True):
                    p_bar.lerp_(p, cfg.polyak)
            losses.append(float(loss.detach()))
        recent = [float(e["reward"].sum()) for e in replay[-cfg.episodes_per_batch :]]
        log.append(
            {
                "reward_evaluations": u.reward_evaluations,
                "loss": float(np.mean(losses)),
                "return_mean": float(np.mean(recent)),
                "epsilon": eps,
                "time_s": time.perf_counter() - start,
            }
        )
    bar.close()
    train_time = time.perf_counter() - start
    report = sql_report(cfg, env, net, tasks, evaluated, train_time)
    out = run_dir(cfg.output_dir, cfg.run_name, f"sql_seed{cfg.seed}")
    if cfg.save:
        save_run(out, cfg, net, u.vocabulary, report, log)
    return {
        "net": net,
        "report": report,
        "log": log,
        "evaluated": dict(evaluated),
        "run_dir": str(out) if cfg.save else None,
    }


# --------------------------------------------------------------------------------------------
# Report and checkpoint


def sql_report(
    cfg: SQLConfig,
    env: gym.Env,
    net: nn.Module,
    tasks: list[int],
    evaluated: dict[int, dict[str, float]],
    train_time: float,
) -> dict[str, Any]:
    """The final report: the chosen prompt per task (best seen or greedy) and the greedy ones."""
    u = env.unwrapped
    spent = u.reward_evaluations
    report: dict[str, Any] = {
        "tasks": [],
        "reward_evaluations": spent,
        "train_time_s": train_time,
        "cache_hit_rate": u.cache_stats.hit_rate,
    }
    if not cfg.evaluate:
        return report
    greedy_prompts = {t: u.prompt_of(decode(env, greedy(net), t)) for t in tasks}
    best_seen = {t: max(seen, key=seen.get) for t, seen in evaluated.items()}
    prompts = {**greedy_prompts, **best_seen} if cfg.output == "best_seen" else greedy_prompts
    report = final_report(
        env,
        prompts,
        cfg.env.eval_seeds,
        reward_evaluations=spent,
        train_time_s=train_time,
        output=cfg.output,
        best_seen=best_seen,
        cache_hit_rate=u.cache_stats.hit_rate,
    )
    # The greedy decoding, scored the same way, whichever prompt the report leads with.
    report["greedy"] = (
        final_report(env, greedy_prompts, cfg.env.eval_seeds)["tasks"]
        if cfg.output == "best_seen"
        else report["tasks"]
    )
    return report


def save_run(
    out: Path,
    cfg: SQLConfig,
    net: nn.Module,
    vocabulary: list[str],
    report: dict[str, Any],
    log: list[dict[str, float]],
) -> None:
    """``q_head.safetensors`` (config and vocabulary in its metadata), report.json, progress.csv."""
    save_tensors(
        dict(net.state_dict()),
        out / "q_head.safetensors",
        metadata={"config": config_json(cfg), "vocabulary": json.dumps(vocabulary)},
    )
    write_json(out / "report.json", report)
    with (out / "progress.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log[0]) if log else ["reward_evaluations"])
        writer.writeheader()
        writer.writerows(log)


if __name__ == "__main__":
    result = train(tyro.cli(SQLConfig))
    print(json.dumps(result["report"], indent=2, default=str))
