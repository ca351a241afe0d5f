"""What a latent-mode PPO rollout step costs with and without the env's base-model pass (issue 20).

Runs the PPO agent's rollout (:func:`agents.ppo.rollout.run_episodes`, a fresh policy copied
from the world UNet) on ``DiffusionDenoise-v0`` made with ``base_step="auto"`` (no KL term: the
env runs no UNet, one guided pass per step, the policy's) and ``base_step="always"`` (the base
model too: two guided passes per step), interleaved, and reports the median seconds per rollout,
samples/s and the UNet forward calls per step of each.

    python benchmarks/ppo_rollout_cost.py                    # 16 images x 10 steps, 5 repeats
    python benchmarks/ppo_rollout_cost.py --repeats 2 --num-envs 8
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro

import diffenvs  # noqa: F401  (registers the environments)
from agents.ppo.config import PPOConfig
from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
from agents.ppo.rollout import run_episodes
from diffenvs.envs.denoise_prompts import make_prompt_source

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ppo" / "rollout_cost.md"


@dataclass
class Args:
    num_envs: int = 16
    num_steps: int = 10
    repeats: int = 5
    threads: int = 1
    out: str = str(OUT)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    source = make_prompt_source("world")
    rng = np.random.default_rng(0)
    prompts = [source.sample(rng) for _ in range(args.num_envs)]
    setups = {}
    counts: dict[int, int] = {}  # forward calls per module (the envs share one base UNet)

    def count(module: torch.nn.Module, *_: object) -> None:
        counts[id(module)] = counts.get(id(module), 0) + 1

    for mode in ("auto", "always"):
        envs = gym.make_vec("DiffusionDenoise-v0", num_envs=args.num_envs, num_steps=args.num_steps,
                            action_mode="latent", reward="jpeg_compressibility",
                            base_step=mode)  # fmt: skip
        sampler = envs.unwrapped.sampler
        policy = DiffusionActorCritic(build_policy_unet(sampler.unet, PPOConfig(finetune="full")),
                                      sampler)  # fmt: skip
        setups[mode] = (envs, policy, {}, [])
    hooked = {id(s[1].sampler.unet): s[1].sampler.unet for s in setups.values()}
    hooked |= {id(s[1].unet): s[1].unet for s in setups.values()}
    for module in hooked.values():
        module.register_forward_hook(count)
    run_episodes(setups["auto"][1], setups["auto"][0], prompts, 0, 0)  # warm-up
    for r in range(args.repeats):
        for envs, policy, calls, times in setups.values():
            before = dict(counts)
            t0 = time.perf_counter()
            run_episodes(policy, envs, prompts, r, r)
            times.append(time.perf_counter() - t0)
            for name, module in (("base", policy.sampler.unet), ("policy", policy.unet)):
                calls[name] = counts.get(id(module), 0) - before.get(id(module), 0)
    lines = [
        f"{args.num_envs} images x {args.num_steps} steps per rollout, {args.repeats} interleaved "
        f"repeats, {args.threads} thread(s); medians.",
        "",
        "| base_step | s / rollout | samples/s | base UNet calls / step | policy UNet calls / step |",
        "|---|---|---|---|---|",
    ]
    for mode, (_, _, calls, times) in setups.items():
        med = statistics.median(times)
        lines.append(
            f"| {mode} | {med:.2f} | {args.num_envs / med:.2f} | "
            f"{calls['base'] / args.num_steps:.1f} | {calls['policy'] / args.num_steps:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
