"""Tabular Q-learning, SARSA and a random agent for ``GrammarGrid-v0`` (Marathe, "Reinforcement
Learning from Diffusion Feedback: Q* for Image Search" (RLDF), Algorithm 1).

One file, top to bottom: environment → Q-table → ε-greedy and step-size schedules → greedy
evaluation with the Table 3 statistics → training loop → checkpoint (the config is
:class:`agents.grid.config.TabularConfig`). Run it with

    python -m agents.grid.tabular --algo q_learning --model renderer --detector exact

The Q-table is indexed by the flat grid state (``np.ravel_multi_index`` of the observation), so it
works for any ``Discrete`` or ``MultiDiscrete`` observation space. It is saved as safetensors,
atomically, with the visit counts and the number of finished episodes, and ``--resume`` continues
from it.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from agents.common.grid import episode_statistics, parse_target, run_episode
from agents.common.runs import run_dir
from agents.common.seeding import seed_everything
from agents.grid.config import TabularConfig, check_config
from diffenvs.io import load_tensors, save_tensors, write_json

PROGRESS_FIELDS = (
    "episode",
    "return",
    "length",
    "success",
    "final_distance",
    "epsilon",
    "alpha",
    "time_s",
)


def make_env(cfg: TabularConfig) -> gym.Env:
    import diffenvs  # noqa: F401  (registers the environments)

    kwargs: dict[str, Any] = {
        "grammar": cfg.grammar,
        "model": cfg.model,
        "reward": cfg.reward,
        "detector": cfg.detector,
        "target_encoder": cfg.target_encoder,
        **cfg.env_kwargs,
    }
    if cfg.target is not None:
        kwargs["target"] = parse_target(cfg.target)
    return gym.make(cfg.env_id, max_episode_steps=cfg.max_episode_steps, **kwargs)


# --------------------------------------------------------------------------------------------
# The Q-table


def state_index(obs: Any, nvec: np.ndarray) -> int:
    """Flat Q-table row of an observation (Discrete or MultiDiscrete)."""
    return int(np.ravel_multi_index(np.asarray(obs, dtype=np.int64).reshape(-1), nvec))


def table_shape(env: gym.Env) -> tuple[np.ndarray, int]:
    space = env.observation_space
    if isinstance(space, gym.spaces.Discrete):
        nvec = np.array([space.n])
    elif isinstance(space, gym.spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec).reshape(-1)
    else:
        raise ValueError(
            f"Tabular agents need a Discrete or MultiDiscrete observation space, got {space}. "
            "Use GrammarGrid-v0 with observation='coords' (or 'coords_target')."
        )
    n_states = int(np.prod(nvec, dtype=np.int64))
    if n_states > 20_000_000:
        raise ValueError(f"The Q-table would have {n_states} rows; use a smaller grid or a DQN.")
    return nvec, n_states


def load_checkpoint(path: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """The Q-table, visit counts and finished episodes of an earlier run's ``q_table.safetensors``."""
    ckpt = load_tensors(path)
    missing = sorted({"q", "visits", "episodes_done"} - set(ckpt))
    if missing:
        raise ValueError(
            f"{path} is not a tabular-agent checkpoint (missing {missing}); pass the "
            "q_table.safetensors of an earlier agents.grid.tabular run."
        )
    if tuple(ckpt["q"].shape) != shape:
        raise ValueError(
            f"{path} holds a Q-table of shape {tuple(ckpt['q'].shape)}, but this environment needs "
            f"{shape}; resume with the same grammar and observation settings."
        )
    q = ckpt["q"].double().numpy().copy()
    visits = ckpt["visits"].double().numpy().copy()
    return q, visits, int(ckpt["episodes_done"].item())


# --------------------------------------------------------------------------------------------
# Behaviour policy and step sizes


def epsilon_at(cfg: TabularConfig, episode: int) -> float:
    if cfg.epsilon_final is None:
        return cfg.epsilon
    frac = min(1.0, episode / max(1, cfg.episodes - 1))
    return cfg.epsilon + frac * (cfg.epsilon_final - cfg.epsilon)


def alpha_at(cfg: TabularConfig, episode: int, visits: float) -> float:
    if cfg.alpha_schedule == "constant":
        return cfg.alpha
    if cfg.alpha_schedule == "linear":
        frac = min(1.0, episode / max(1, cfg.episodes - 1))
        return cfg.alpha + frac * (cfg.alpha_final - cfg.alpha)
    return cfg.alpha / max(1.0, visits) ** cfg.alpha_power


def greedy(q_row: np.ndarray, rng: np.random.Generator) -> int:
    """argmax with random tie-breaking (ties are common before a row is updated)."""
    best = np.flatnonzero(q_row == q_row.max())
    return int(best[0]) if len(best) == 1 else int(rng.choice(best))


def act(
    cfg: TabularConfig, q: np.ndarray, s: int, eps: float, rng: np.random.Generator, n: int
) -> int:
    if cfg.algo == "random" or rng.random() < eps:
        return int(rng.integers(n))
    return greedy(q[s], rng)


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    cfg: TabularConfig, env: gym.Env, q: np.ndarray, nvec: np.ndarray, episodes: int | None = None
) -> list[dict[str, Any]]:
    """Greedy episodes (the random agent acts randomly) from fixed starts; one
    :func:`agents.common.grid.run_episode` record each."""
    # Starts are the same for every run (comparable); action noise (random agent, greedy ties)
    # depends on the run's seed.
    rng = np.random.default_rng([cfg.eval_seed, cfg.seed])
    n_actions = int(env.action_space.n)

    def act(obs: Any) -> int:
        if cfg.algo == "random":
            return int(rng.integers(n_actions))
        return greedy(q[state_index(obs, nvec)], rng)

    episodes = cfg.eval_episodes if episodes is None else episodes
    return [run_episode(env, act, cfg.eval_seed + i) for i in range(episodes)]


# --------------------------------------------------------------------------------------------
# Training


def open_progress(cfg: TabularConfig, out: Path, resumed: bool) -> tuple[Any, Any, Any]:
    """The run folder's config.json, progress.csv (appended to on resume) and TensorBoard writer;
    ``(None, None, None)`` when nothing is saved."""
    if not cfg.save:
        return None, None, None
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    csv_file = (out / "progress.csv").open("a" if resumed else "w", newline="")
    csv_writer = csv.DictWriter(csv_file, fieldnames=list(PROGRESS_FIELDS))
    if not resumed:
        csv_writer.writeheader()
    tb = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"))
    return csv_file, csv_writer, tb


def train(cfg: TabularConfig, env: gym.Env | None = None) -> dict[str, Any]:
    """Train, evaluate and (if cfg.save) write the run folder. Returns the results.

    The training loop, documented as such: it reads top to bottom. ``env`` may be passed to reuse
    one built elsewhere (it must match ``cfg``'s environment). The returned dict holds ``q`` (the
    table), ``train`` (one row per episode), ``eval`` (the Table 3 statistics), ``eval_records``,
    ``train_time_s`` and ``run_dir``.
    """
    check_config(cfg)
    # Seed everything this process might draw from; the env is seeded through reset(seed=...).
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    env = make_env(cfg) if env is None else env
    nvec, n_states = table_shape(env)
    n_actions = int(env.action_space.n)
    q = cfg.q_init_mean + rng.uniform(-cfg.q_init, cfg.q_init, size=(n_states, n_actions))
    visits = np.zeros((n_states, n_actions))
    first_episode = 0
    out = run_dir(
        cfg.output_dir, cfg.run_name, f"{cfg.algo}_{cfg.reward}_eps{cfg.epsilon}_seed{cfg.seed}"
    )
    if cfg.resume:
        q, visits, first_episode = load_checkpoint(cfg.resume, q.shape)
        # A resumed run draws fresh randomness, still determined by (seed, episodes done).
        rng = np.random.default_rng([cfg.seed, first_episode])
    csv_file, csv_writer, tb = open_progress(cfg, out, resumed=bool(first_episode))

    log_rows: list[dict[str, Any]] = []
    start_time = time.perf_counter()
    bar = tqdm(
        range(first_episode, cfg.episodes),
        disable=not cfg.progress,
        desc=f"{cfg.algo} {cfg.reward} ε={cfg.epsilon}",
        leave=False,
    )
    for episode in bar:
        eps = epsilon_at(cfg, episode)
        obs, info = env.reset(seed=cfg.seed * 1_000_003 + episode)
        s = state_index(obs, nvec)
        a = act(cfg, q, s, eps, rng, n_actions)
        ret, length, alpha, done = 0.0, 0, cfg.alpha, False
        while not done:
            obs, r, terminated, truncated, info = env.step(a)
            s2 = state_index(obs, nvec)
            a2 = act(cfg, q, s2, eps, rng, n_actions)
            if cfg.algo != "random":
                visits[s, a] += 1
                alpha = alpha_at(cfg, episode, visits[s, a])
                # Truncation (time limit) is not a terminal state: keep bootstrapping there.
                if terminated:
                    bootstrap = 0.0
                elif cfg.algo == "q_learning":
                    bootstrap = q[s2].max()
                else:  # SARSA backs up the action it will actually take next
                    bootstrap = q[s2, a2]
                q[s, a] += alpha * (r + cfg.gamma * bootstrap - q[s, a])
            s, a = s2, a2
            ret += float(r)
            length += 1
            done = terminated or truncated
        row = {
            "episode": episode,
            "return": ret,
            "length": length,
            "success": int(bool(info["is_success"])),
            "final_distance": info["distance"],
            "epsilon": eps,
            "alpha": alpha,
            "time_s": round(time.perf_counter() - start_time, 4),
        }
        log_rows.append(row)
        if csv_writer is not None:
            csv_writer.writerow(row)
        if tb is not None:
            for key in ("return", "length", "success", "final_distance", "epsilon", "alpha"):
                tb.add_scalar(f"train/{key}", row[key], episode)
        if cfg.progress and episode % 10 == 0:
            recent = log_rows[-50:]
            bar.set_postfix(
                success=f"{np.mean([x['success'] for x in recent]):.2f}",
                len=f"{np.mean([x['length'] for x in recent]):.1f}",
                refresh=False,  # the bar redraws on its own schedule, not every 10 episodes
            )
    train_time = time.perf_counter() - start_time
    if csv_file is not None:
        csv_file.close()

    records = evaluate(cfg, env, q, nvec)
    stats = episode_statistics(records)
    stats["train_time_s"] = train_time
    stats["train_steps"] = float(sum(r["length"] for r in log_rows))
    if cfg.save:
        save_run(out, cfg, q, visits, max(cfg.episodes, first_episode), nvec, stats, tb)
    return {
        "q": q,
        "visits": visits,
        "train": log_rows,
        "eval": stats,
        "eval_records": records,
        "train_time_s": train_time,
        "run_dir": str(out) if cfg.save else None,
    }


# --------------------------------------------------------------------------------------------
# Checkpoint


def save_run(
    out: Path,
    cfg: TabularConfig,
    q: np.ndarray,
    visits: np.ndarray,
    episodes_done: int,
    nvec: np.ndarray,
    stats: dict[str, float],
    tb: Any,
) -> None:
    """``q_table.safetensors`` (what ``--resume`` reads) and eval.json; closes TensorBoard."""
    meta = {
        "algo": cfg.algo,
        "env_id": cfg.env_id,
        "observation_nvec": json.dumps([int(x) for x in nvec]),
        "config": json.dumps(asdict(cfg)),
    }
    save_tensors(
        {
            "q": torch.from_numpy(q),
            "visits": torch.from_numpy(visits),
            "episodes_done": torch.tensor(episodes_done),
        },
        out / "q_table.safetensors",
        metadata=meta,
    )
    write_json(out / "eval.json", stats)
    if tb is not None:
        for key, value in stats.items():
            tb.add_scalar(f"eval/{key}", value, cfg.episodes)
        tb.close()


if __name__ == "__main__":
    result = train(tyro.cli(TabularConfig))
    summary = {k: round(v, 3) for k, v in result["eval"].items()}
    print(json.dumps(summary, indent=2))
    if result["run_dir"]:
        print(f"run folder: {os.path.abspath(result['run_dir'])}")
