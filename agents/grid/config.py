"""Config of the tabular agents on ``GrammarGrid-v0`` (a tyro dataclass; this module imports no
torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ALGOS = ("q_learning", "sarsa", "random")


@dataclass
class TabularConfig:
    """Tabular RLDF agent on GrammarGrid-v0 (Marathe, RLDF, Algorithm 1)."""

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
    """exponent of the visit schedule; in (0.5, 1] it meets Σα = ∞, Σα² < ∞ (Marathe, §3)."""
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


def check_config(cfg: TabularConfig) -> None:
    """Reject settings outside the ranges the algorithms are defined for."""
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
