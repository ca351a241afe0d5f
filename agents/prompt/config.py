"""Configs of the ``PromptAppend-v0`` agents (tyro dataclasses; this module imports no torch).

:class:`SQLConfig` for :mod:`agents.prompt.sql`, :class:`ReinforceConfig` for
:mod:`agents.prompt.reinforce`, :class:`BaselineConfig` for :mod:`agents.prompt.baselines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.common.prompt_env import PromptEnvArgs


@dataclass
class SQLConfig:
    """Soft Q-Learning (RLPrompt) on PromptAppend-v0."""

    env: PromptEnvArgs = field(default_factory=PromptEnvArgs)
    budget: int = 48
    """reward evaluations to spend (terminal reward: one per episode)."""
    episodes_per_batch: int = 4
    updates_per_batch: int = 8
    minibatch: int = 16
    """episodes per gradient step, sampled from the replay buffer (all episodes so far)."""
    hidden: tuple[int, ...] = (256,)
    q_head: Literal["mlp", "candidates"] = "mlp"
    """``mlp``: one Q-value per word from the observation (RLPrompt). ``candidates``: every word
    scored by one shared network from its own features, including the CLIP text-image
    similarity of the prompt it would make (Naik et al.'s prior), plus a learned per-word bias;
    the env is made with ``observe_candidates=True``."""
    prior_weight: float = 0.3
    """``candidates`` head: initial weight of the z-scored CLIP similarity added to Q (0: the
    policy starts uniform)."""
    learning_rate: float = 1e-3
    gamma: float = 1.0
    temperature: float = 0.3
    """τ of the soft values and of the sampling policy (0.3 beat 0.5 and 1.0 at a 48-evaluation
    budget on the extended-vocabulary benchmark)."""
    epsilon: float = 0.2
    """share of uniformly random (allowed) actions in the behaviour policy, decaying to 0."""
    polyak: float = 0.05
    """target network update rate ρ: θ̄ ← (1 − ρ)θ̄ + ρθ after every gradient step."""
    loss: Literal["mix", "single", "multi"] = "mix"
    reward_shaping: Literal["zscore", "linear", "none"] = "zscore"
    reward_scale: float = 3.0
    reward_min: float = 0.0
    reward_max: float = 1.0
    explore_untried: bool = True
    """the behaviour policy never picks a word after which every completion was already evaluated
    on the task (so no word sequence is evaluated twice while untried ones remain): with fixed
    generation seeds the reward is deterministic, so a repeat would spend an evaluation and teach
    nothing new."""
    output: Literal["best_seen", "greedy"] = "best_seen"
    """the prompt to report per task: the best-rewarded one evaluated in training (what random
    search reports, so both use the same information) or the greedy decoding of the Q-head."""
    seed: int = 0
    threads: int = 1
    output_dir: str = "runs/sql"
    run_name: str | None = None
    evaluate: bool = True
    """decode and score the final prompt of every training task on the evaluation seeds (off when
    the Q-head is judged elsewhere, e.g. on unseen tasks: benchmarks/prompt_append_transfer.py)."""
    save: bool = True
    progress: bool = True


@dataclass
class ReinforceConfig:
    """REINFORCE (Naik et al., ImagePrompt) on PromptAppend-v0."""

    env: PromptEnvArgs = field(default_factory=PromptEnvArgs)
    budget: int = 48
    """reward evaluations to spend."""
    episodes_per_iter: int = 8
    hidden: int = 128
    learning_rate: float = 3e-3
    baseline: bool = True
    """subtract the batch's mean return (and divide by its std) from the returns."""
    entropy_coef: float = 0.01
    seed: int = 0
    threads: int = 1
    output_dir: str = "runs/reinforce"
    run_name: str | None = None
    save: bool = True
    progress: bool = True


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
