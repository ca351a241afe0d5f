"""Tabular Q-learning, SARSA and a random agent for ``GrammarGrid-v0`` (RLDF, seed 003 Algorithm 1).

One file, top to bottom: config → environment → ε-greedy and step-size schedules → training loop →
greedy evaluation with the Table 3 statistics → checkpoint. Run it with

    python -m agents.tabular --algo q_learning --model renderer --detector exact

The Q-table is indexed by the flat grid state (``np.ravel_multi_index`` of the observation), so it
works for any ``Discrete`` or ``MultiDiscrete`` observation space. It is saved as safetensors,
atomically, with the visit counts and the number of finished episodes, and ``--resume`` continues
from it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

import diffenvs  # noqa: F401  (registers the environments)
from diffenvs.io import load_tensors, save_tensors, write_json

ALGOS = ("q_learning", "sarsa", "random")


@dataclass
class TabularConfig:
    """Tabular RLDF agent on GrammarGrid-v0 (seed 003, Algorithm 1)."""

    algo: Literal["q_learning", "sarsa", "random"] = "q_learning"
    """q_learning (off-policy max backup), sarsa (on-policy backup) or random (no learning)."""
    env_id: str = "GrammarGrid-v0"
    grammar: str = "default"
    """grammar preset (default, default_9x, modifiers, tiny), grammar text, or a .json/.txt file."""
    model: str = "world"
    """image source: 'world' (the embedded text-to-image model), 'renderer', or a pipeline."""
    reward: str = "multi_semantic"
    """multi_semantic (1, eq. 2-4), partial_semantic (2, eq. 5) or clip (3, eq. 6)."""
    detector: str = "oracle"
    """who reads the images for the semantic rewards: 'oracle' or 'exact' (the prompt itself)."""
    target: str | None = None
    """target: coordinates '1,2,3,4', a prompt, or an image file; default the grid's centre."""
    target_encoder: str = "oracle"
    """how an image target becomes coordinates: 'oracle' or 'clip' (zero-shot)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """extra gym.make keyword arguments (e.g. goal_reward, boundary)."""
    episodes: int = 5000
    """training episodes (the default grid has 864 states × 8 actions to fill in)."""
    max_episode_steps: int = 100
    gamma: float = 0.9
    """discount factor γ."""
    epsilon: float = 0.1
    """exploration rate ε of the ε-greedy behaviour policy (Table 3 uses 0.01 and 0.1)."""
    epsilon_final: float | None = None
    """if set, ε decays linearly from `epsilon` to this over the training episodes."""
    alpha: float = 0.5
    """step size α."""
    alpha_schedule: Literal["constant", "linear", "visits"] = "constant"
    """constant α; linear decay to alpha_final; or visits: α / n(s,a)^alpha_power (Robbins-Monro)."""
    alpha_final: float = 0.05
    alpha_power: float = 0.8
    """exponent of the visit schedule; in (0.5, 1] it meets Σα = ∞, Σα² < ∞ (seed 003 §3)."""
    q_init: float = 0.01
    """Q starts uniform in q_init_mean ± q_init (Algorithm 1: 'initialize Q randomly')."""
    q_init_mean: float = 0.0
    """centre of the initial Q-values; above the true values (≤ 0 with relative rewards) it makes
    the agent try every action of a state before trusting any (optimism)."""
    eval_episodes: int = 100
    """greedy evaluation episodes after training, from fixed random starts."""
    eval_seed: int = 1_000_000
    """reset seed of the first evaluation episode (kept apart from the training seeds)."""
    seed: int = 0
    output_dir: str = "runs/tabular"
    run_name: str | None = None
    """sub-folder of output_dir; default '<algo>_<reward>_eps<ε>_seed<seed>'."""
    save: bool = True
    """write progress.csv, eval.json and the Q-table; False keeps everything in memory."""
    tensorboard: bool = False
    """also log to TensorBoard in the run folder."""
    resume: str | None = None
    """a Q-table safetensors file to continue training from."""
    progress: bool = True
    """show a tqdm progress bar."""


def make_env(cfg: TabularConfig) -> gym.Env:
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


def parse_target(text: str) -> Any:
    """'1,2,3,4' → coordinates; anything else (a prompt or an image path) is passed through."""
    parts = [p.strip() for p in text.split(",")]
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return text


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


def check_config(cfg: TabularConfig) -> None:
    if cfg.algo not in ALGOS:
        raise ValueError(f"Unknown algo {cfg.algo!r}; use one of {list(ALGOS)}.")
    for name in ("epsilon", "epsilon_final", "gamma"):
        v = getattr(cfg, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}={v} must lie in [0, 1].")
    if cfg.alpha <= 0 or cfg.alpha > 1:
        raise ValueError(f"alpha={cfg.alpha} must lie in (0, 1].")
    if cfg.episodes < 0 or cfg.eval_episodes < 0 or cfg.max_episode_steps < 1:
        raise ValueError("episodes and eval_episodes must be >= 0 and max_episode_steps >= 1.")


def evaluate(
    cfg: TabularConfig, env: gym.Env, q: np.ndarray, nvec: np.ndarray, episodes: int | None = None
) -> list[dict[str, Any]]:
    """Greedy episodes (the random agent acts randomly) from fixed starts; one
    :func:`run_episode` record each."""
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


def run_episode(env: gym.Env, act: Callable[[Any], int], seed: int) -> dict[str, Any]:
    """One ``GrammarGrid-v0`` episode from ``env.reset(seed=seed)`` with ``act(obs) -> action``.

    The record holds the per-step distances to the target (start included), success, length,
    return, and the matched fine/coarse semantics at the start and at the end; every grid agent
    evaluates with it, so their statistics compare.
    """
    obs, info = env.reset(seed=seed)
    start, distances, ret, length, done = info, [info["distance"]], 0.0, 0, False
    while not done:
        obs, r, terminated, truncated, info = env.step(int(act(obs)))
        ret, length = ret + float(r), length + 1
        distances.append(info["distance"])
        done = terminated or truncated
    return {
        "distances": distances,
        "success": bool(info["is_success"]),
        "length": length,
        "return": ret,
        "fine_start": start.get("fine_matches"),
        "fine_end": info.get("fine_matches"),
        "scene_start": start.get("scene_match"),
        "scene_end": info.get("scene_match"),
    }


def episode_statistics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Seed 003 Table 3's statistics, averaged over evaluation episodes.

    D_f, D_max, D_min, std (ρ), var (σ²): the final, largest and smallest distance to the target
    (in grid steps) along an episode and the spread of the distances along it. Conv.: the share of
    episodes that reach the target. F/C semantic gain: matched fine (object) slots and coarse
    (scene) slot at the end minus at the start of the episode. Plus success rate, episode length
    and return.
    """
    if not records:
        return {}

    def mean(xs: list[float]) -> float:
        xs = [x for x in xs if x is not None]
        return float(np.mean(xs)) if xs else float("nan")

    d = [np.asarray(r["distances"], dtype=np.float64) for r in records]
    return {
        "D_f": mean([x[-1] for x in d]),
        "D_max": mean([x.max() for x in d]),
        "D_min": mean([x.min() for x in d]),
        "std": mean([x.std() for x in d]),
        "var": mean([x.var() for x in d]),
        "conv": mean([float(r["success"]) for r in records]),
        "fine_gain": mean(
            [
                r["fine_end"] - r["fine_start"]
                for r in records
                if r["fine_end"] is not None and r["fine_start"] is not None
            ]
        ),
        "coarse_gain": mean(
            [
                int(r["scene_end"]) - int(r["scene_start"])
                for r in records
                if r["scene_end"] is not None and r["scene_start"] is not None
            ]
        ),
        "success_rate": mean([float(r["success"]) for r in records]),
        "steps": mean([r["length"] for r in records]),
        "steps_success": mean([r["length"] for r in records if r["success"]]),
        "return": mean([r["return"] for r in records]),
    }


def main(cfg: TabularConfig, env: gym.Env | None = None) -> dict[str, Any]:
    """Train, evaluate and (if cfg.save) write the run folder. Returns the results.

    ``env`` may be passed to reuse one built elsewhere (it must match ``cfg``'s environment).
    The returned dict holds ``q`` (the table), ``train`` (one row per episode), ``eval`` (the
    Table 3 statistics), ``eval_records``, ``train_time_s`` and ``run_dir``.
    """
    check_config(cfg)
    # Seed everything this process might draw from; the env is seeded through reset(seed=...).
    torch.set_num_threads(1)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    env = make_env(cfg) if env is None else env
    nvec, n_states = table_shape(env)
    n_actions = int(env.action_space.n)
    q = cfg.q_init_mean + rng.uniform(-cfg.q_init, cfg.q_init, size=(n_states, n_actions))
    visits = np.zeros((n_states, n_actions))
    first_episode = 0

    run_name = cfg.run_name or f"{cfg.algo}_{cfg.reward}_eps{cfg.epsilon}_seed{cfg.seed}"
    run_dir = Path(cfg.output_dir) / run_name
    if cfg.resume:
        ckpt = load_tensors(cfg.resume)
        missing = sorted({"q", "visits", "episodes_done"} - set(ckpt))
        if missing:
            raise ValueError(
                f"{cfg.resume} is not a tabular-agent checkpoint (missing {missing}); pass the "
                "q_table.safetensors of an earlier agents.tabular run."
            )
        if tuple(ckpt["q"].shape) != q.shape:
            raise ValueError(
                f"{cfg.resume} holds a Q-table of shape {tuple(ckpt['q'].shape)}, but this environment needs "
                f"{q.shape}; resume with the same grammar and observation settings."
            )
        q = ckpt["q"].double().numpy().copy()
        visits = ckpt["visits"].double().numpy().copy()
        first_episode = int(ckpt["episodes_done"].item())
        # A resumed run draws fresh randomness, still determined by (seed, episodes done).
        rng = np.random.default_rng([cfg.seed, first_episode])

    writer = None
    log_rows: list[dict[str, Any]] = []
    csv_file = None
    if cfg.save:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", asdict(cfg))
        csv_file = (run_dir / "progress.csv").open("a" if first_episode else "w", newline="")
        csv_writer = csv.DictWriter(
            csv_file,
            fieldnames=[
                "episode",
                "return",
                "length",
                "success",
                "final_distance",
                "epsilon",
                "alpha",
                "time_s",
            ],
        )
        if not first_episode:
            csv_writer.writeheader()
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))

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
        if csv_file is not None:
            csv_writer.writerow(row)
        if writer is not None:
            for key in ("return", "length", "success", "final_distance", "epsilon", "alpha"):
                writer.add_scalar(f"train/{key}", row[key], episode)
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
                "episodes_done": torch.tensor(max(cfg.episodes, first_episode)),
            },
            run_dir / "q_table.safetensors",
            metadata=meta,
        )
        write_json(run_dir / "eval.json", stats)
        if writer is not None:
            for key, value in stats.items():
                writer.add_scalar(f"eval/{key}", value, cfg.episodes)
            writer.close()
    return {
        "q": q,
        "visits": visits,
        "train": log_rows,
        "eval": stats,
        "eval_records": records,
        "train_time_s": train_time,
        "run_dir": str(run_dir) if cfg.save else None,
    }


if __name__ == "__main__":
    config = tyro.cli(TabularConfig)
    result = main(config)
    summary = {k: round(v, 3) for k, v in result["eval"].items()}
    print(json.dumps(summary, indent=2))
    if result["run_dir"]:
        print(f"run folder: {os.path.abspath(result['run_dir'])}")
