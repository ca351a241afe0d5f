"""Configs of the Tianshou 2 adapters (tyro dataclasses; this module imports no torch or
Tianshou)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agents.common.prompt_env import PromptEnvArgs


@dataclass
class TianshouDenoiseConfig:
    """Tianshou 2 PPO in noise mode on DiffusionDenoise-v0."""

    model: str = "world"
    prompts: str = "world"
    reward: str = "colourfulness"
    num_steps: int = 10
    num_envs: int = 8
    guidance_scale: float = 4.0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    epoch_num_steps: int = 800
    """env steps per epoch (summed over envs)."""
    collection_step_num_env_steps: int = 80
    """env steps between updates: num_envs x num_steps = one episode per env."""
    update_step_num_repetitions: int = 4
    batch_size: int = 40
    learning_rate: float = 1e-5
    """small: the Gaussian spans every latent dimension, so tiny mean shifts move the PPO ratio a lot."""
    max_grad_norm: float | None = 0.5
    """clip each update's gradient norm (as Stable-Baselines3's PPO does); None: no clipping."""
    eval_episodes: int = 16
    eval_seed: int = 1_000_000
    seed: int = 0
    device: str = "cpu"
    output_dir: str = "runs/tianshou_denoise"
    run_name: str | None = None
    save: bool = True
    progress: bool = True


@dataclass
class TianshouGrammarConfig:
    """Tianshou 2 DQN on GrammarGrid-v0."""

    grammar: str = "default"
    model: str = "world"
    """image source: 'world', 'renderer', or a pipeline folder/hub id."""
    reward: str = "multi_semantic"
    detector: str = "oracle"
    target: str | None = None
    observation: str = "coords"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int = 100
    num_train_envs: int = 4
    epochs: int = 6
    epoch_num_steps: int = 10_000
    """environment steps per epoch (all training envs together)."""
    collection_step_num_env_steps: int = 16
    gradient_steps_per_sample: float = 0.25
    batch_size: int = 64
    buffer_size: int = 50_000
    learning_rate: float = 1e-3
    gamma: float = 0.9
    target_update_freq: int = 500
    hidden: tuple[int, ...] = (128, 128)
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 20_000
    test_episodes: int = 10
    """episodes of Tianshou's own test step after every epoch."""
    eval_episodes: int = 100
    eval_seed: int = 1_000_000
    seed: int = 0
    output_dir: str = "runs/tianshou_grammar"
    run_name: str | None = None
    save: bool = True
    progress: bool = True


@dataclass
class TianshouPromptConfig:
    """Tianshou 2 DQN or PPO on PromptAppend-v0."""

    algo: Literal["dqn", "ppo"] = "dqn"
    env: PromptEnvArgs = field(default_factory=PromptEnvArgs)
    budget: int = 48
    """reward evaluations (episodes with the terminal reward)."""
    num_train_envs: int = 1
    """training envs in a DummyVectorEnv (they share the image cache)."""
    epochs: int = 2
    collection_step_num_env_steps: int = 8
    batch_size: int = 16
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (128,)
    eps_start: float = 1.0
    eps_end: float = 0.05
    gradient_steps_per_sample: float = 2.0
    """DQN: gradient steps per collected env step (the MLP is cheap next to a reward evaluation)."""
    n_step_return_horizon: int | None = None
    """DQN: rewards summed before bootstrapping; None: n_appends, so every target is the episode's
    return (the reward is terminal) and nothing is bootstrapped from an untrained Q."""
    target_update_freq: int = 50
    """DQN: gradient steps between target-network copies (0: no target network)."""
    seed: int = 0
    threads: int = 1
    output_dir: str = "runs/tianshou_prompt"
    run_name: str | None = None
    save: bool = True
    progress: bool = False
