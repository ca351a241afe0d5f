"""Configs of the Stable-Baselines3 adapters (tyro dataclasses; this module imports no torch or
SB3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agents.common.prompt_env import PromptEnvArgs


@dataclass
class SB3DenoiseConfig:
    """SB3 PPO (or A2C) in noise mode on DiffusionDenoise-v0: the policy picks each step's noise."""

    algo: Literal["ppo", "a2c"] = "ppo"
    model: str = "world"
    prompts: str = "world"
    """'world', 'world:heldout', or a prompt file."""
    reward: str = "colourfulness"
    num_steps: int = 10
    """sampler steps per episode (= episode length)."""
    num_envs: int = 8
    guidance_scale: float = 4.0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    total_timesteps: int = 4_000
    rollout_episodes: int = 1
    """episodes per env between updates (PPO n_steps = rollout_episodes * num_steps)."""
    learning_rate: float = 1e-5
    """small: the Gaussian spans every latent dimension, so tiny mean shifts move the PPO ratio a lot."""
    batch_size: int = 40
    n_epochs: int = 4
    eval_episodes: int = 16
    eval_seed: int = 1_000_000
    seed: int = 0
    device: str = "cpu"
    output_dir: str = "runs/sb3_denoise"
    run_name: str | None = None
    save: bool = True
    tensorboard: bool = False
    progress: bool = True


@dataclass
class SB3GrammarConfig:
    """An SB3 agent (DQN by default) on GrammarGrid-v0."""

    algo: Literal["dqn", "ppo", "a2c"] = "dqn"
    grammar: str = "default"
    model: str = "world"
    """image source: 'world', 'renderer', or a pipeline folder/hub id."""
    reward: str = "multi_semantic"
    detector: str = "oracle"
    target: str | None = None
    """coordinates '1,2,3,4', a prompt, or an image file; default the grid's centre."""
    observation: str = "coords"
    """'coords' or 'coords_target' (goal-conditioned)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int = 100
    total_timesteps: int = 60_000
    learning_rate: float = 1e-3
    gamma: float = 0.9
    net_arch: tuple[int, ...] = (128, 128)
    exploration_fraction: float = 0.3
    """DQN: share of training over which ε decays from 1 to exploration_final_eps."""
    exploration_final_eps: float = 0.05
    eval_episodes: int = 100
    eval_seed: int = 1_000_000
    seed: int = 0
    output_dir: str = "runs/sb3_grammar"
    run_name: str | None = None
    save: bool = True
    tensorboard: bool = False
    progress: bool = True


@dataclass
class SB3PromptConfig:
    """An SB3 agent (MaskablePPO by default) on PromptAppend-v0."""

    algo: Literal["maskable_ppo", "ppo", "dqn"] = "maskable_ppo"
    env: PromptEnvArgs = field(default_factory=PromptEnvArgs)
    budget: int = 48
    """reward evaluations (episodes with the terminal reward)."""
    n_steps: int = 16
    """PPO: env steps per rollout."""
    batch_size: int = 16
    n_epochs: int = 4
    learning_rate: float = 1e-3
    ent_coef: float = 0.01
    net_arch: tuple[int, ...] = (128,)
    seed: int = 0
    threads: int = 1
    output_dir: str = "runs/sb3_prompt"
    run_name: str | None = None
    save: bool = True
    progress: bool = False
