"""Why PPO on JPEG compressibility (issue 20's set-up) did not learn: three measurements.

1. **Where the reward is decided.** For a fixed prompt and x_T, only the noise of sampler step k is
   redrawn (every other step's noise is held fixed); the spread of the JPEG reward across those
   draws says how much step k's action can change the reward.
2. **Where the policy gradient comes from.** The gradient of PPO's loss (at ratio 1, DDPO's
   per-prompt advantages, ``logprob_reduction="mean"``) of each step separately: its norm, the
   share of the squared norm that the low-noise steps (σ_t < 0.1) carry, and the cosine between
   the whole gradient and the gradient of the other steps.
3. **How far one optimiser step moves the policy.** One Adam step at the set-up's lr (3e-4, full
   fine-tuning) over the whole rollout, then the per-dimension log-ratio of every transition,
   per step: its mean and the k3 estimate of KL(old || new) per dimension, against the clip
   range (1e-4).

    python benchmarks/ppo_jpeg_diagnose.py            # ~3 min on one thread
    python benchmarks/ppo_jpeg_diagnose.py --pg-min-std 0.1

Writes ``benchmarks/results/ppo/jpeg/diagnose[_pgmin<x>].{json,md}``.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "ppo" / "jpeg"


@dataclass
class Args:
    draws: int = 8
    """Noise draws per prompt in the attribution (two prompts, so 2 x draws images per step)."""
    rollouts: int = 2
    """Rollouts (16 images each) whose per-step gradients are measured."""
    learning_rate: float = 3e-4
    pg_min_std: float = 0.0
    """The PPO option applied in the one-optimiser-step measurement (3)."""
    threads: int = 1


def _setup(args: Args):

    import diffenvs  # noqa: F401  (registers the environments)
    from agents.ppo.config import PPOConfig, resolve_config
    from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
    from agents.ppo.rollout import make_prompt_source
    from benchmarks.ppo_jpeg import world_prompts

    prompt_file = OUT / "diagnose_prompts.txt"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text("\n".join(world_prompts()) + "\n")
    cfg = resolve_config(
        PPOConfig(
            prompts=str(prompt_file),
            reward="jpeg_compressibility",
            num_steps=10,
            eta=1.0,
            guidance_scale=4.0,
            num_envs=16,
            samples_per_prompt=4,
            finetune="full",
            learning_rate=args.learning_rate,
            logprob_reduction="mean",
            clip_range=1e-4,
            pg_min_std=args.pg_min_std,
            eval_episodes=0,
            reward_norm="none",
            cpu=True,
            save=False,
        )
    )
    from agents.ppo.train import make_envs

    envs = make_envs(cfg, "cpu")  # no KL term in these set-ups: the env skips the base model
    sampler = envs.unwrapped.sampler
    model = DiffusionActorCritic(build_policy_unet(sampler.unet, cfg), sampler)
    return cfg, envs, model, make_prompt_source(cfg.prompts)


@torch.no_grad()
def step_attribution(envs, model, prompts: list[str], draws: int) -> dict:
    """Within-prompt reward std when only step k's noise is redrawn (x_T and other noise fixed)."""
    n, steps = envs.num_envs, envs.num_steps
    if n != 2 * draws:
        raise ValueError(f"step_attribution needs num_envs = 2 x draws, got {n} and {draws}.")
    gen = torch.Generator().manual_seed(0)
    shape = model.sampler.latent_shape
    x_T = torch.randn(2, *shape, generator=gen)[[0] * draws + [1] * draws]
    noise = [torch.randn(n, *shape, generator=gen) for _ in range(steps)]
    shared = [0] * draws + [draws] * draws  # one draw per prompt, repeated

    def episode(varied: int | None) -> np.ndarray:
        obs, _ = envs.reset(
            seed=0,
            options={
                "prompts": [prompts[0]] * draws + [prompts[1]] * draws,
                "latents": x_T.numpy(),
            },
        )
        embeds = torch.as_tensor(obs["prompt_embeds"])
        for k in range(steps):
            dist = model.distribution(torch.as_tensor(obs["latent"]), torch.full((n,), k), embeds)
            eps = noise[k] if varied in (k, -1) else noise[k][shared]
            obs, _, _, _, info = envs.step(dist.sample(eps).numpy())
        return np.asarray(info["terminal_reward"], dtype=np.float64)

    def spread(r: np.ndarray) -> float:
        return float(np.mean([r[:draws].std(), r[draws:].std()]))

    rows = [{"step": k, "reward_std": spread(episode(k))} for k in range(steps)]
    return {"per_step": rows, "all_noise_reward_std": spread(episode(-1))}


def gradient_shares(cfg, envs, model, source, rollouts: int) -> list[dict]:
    """Per-step norms of PPO's policy gradient at ratio 1 (mean reduction, per-prompt advantages)."""
    from agents.ppo.rollout import collect_rollout
    from agents.ppo.update import compute_advantages

    sigma = model.sampler.sigma
    out = []
    for seed in range(rollouts):
        buf = collect_rollout(model, envs, source, cfg, np.random.default_rng(seed), nullcontext)
        b, t = buf.shape
        terminal = (buf.rewards - buf.rewards.mean()) / buf.rewards.std()
        adv, _ = compute_advantages(terminal, torch.zeros(b, t), 0.0, buf, cfg, None)
        grads = []
        for k in range(t):
            model.zero_grad()
            lp, _, _ = model(
                buf.latents[:, k], torch.full((b,), k), buf.embeds, buf.next_latents[:, k]
            )
            ratio = torch.exp((lp - buf.log_probs[:, k]) / math.prod(buf.latents.shape[2:]))
            (-(adv[:, k] * ratio).mean()).backward()
            grads.append(
                torch.cat(
                    [p.grad.flatten() for p in model.parameters() if p.grad is not None]
                ).clone()
            )
        norms = torch.stack([g.norm() for g in grads])
        low = sigma < 0.1
        rest = torch.stack([g for g, lo in zip(grads, low, strict=True) if not lo]).sum(0)
        total = torch.stack(grads).sum(0)
        out.append(
            {
                "rollout": seed,
                "grad_norm_per_step": norms.tolist(),
                "low_noise_share_of_squared_norm": float(
                    (norms[low] ** 2).sum() / (norms**2).sum()
                ),
                "cosine_total_vs_other_steps": float(
                    torch.nn.functional.cosine_similarity(total, rest, dim=0)
                ),
            }
        )
    model.zero_grad()
    return out


def one_step_movement(cfg, envs, model, source) -> list[dict]:
    """Per step: mean per-dimension log-ratio and k3 KL per dimension after one Adam step."""
    from accelerate import Accelerator

    from agents.ppo.rollout import collect_rollout
    from agents.ppo.update import compute_advantages, make_optimizer, ppo_update

    accelerator = Accelerator(cpu=True)
    optimizer, scheduler = make_optimizer(model, cfg)
    buf = collect_rollout(model, envs, source, cfg, np.random.default_rng(100), nullcontext)
    b, t = buf.shape
    d = math.prod(buf.latents.shape[2:])
    terminal = (buf.rewards - buf.rewards.mean()) / buf.rewards.std()
    adv, _ = compute_advantages(terminal, torch.zeros(b, t), 0.0, buf, cfg, None)
    one_step = replace(cfg, minibatch_size=b * t, grad_accum_steps=1, num_epochs=1)
    ppo_update(
        model,
        optimizer,
        scheduler,
        buf,
        adv,
        None,
        one_step,
        accelerator,
        torch.Generator().manual_seed(0),
    )
    rows = []
    with torch.no_grad():
        for k in range(t):
            lp, _, _ = model(
                buf.latents[:, k], torch.full((b,), k), buf.embeds, buf.next_latents[:, k]
            )
            x = ((lp - buf.log_probs[:, k]) / d).double()
            rows.append(
                {
                    "step": k,
                    "sigma": float(model.sampler.sigma[k]),
                    "mean_log_ratio_per_dim": float(x.mean()),
                    "k3_per_dim": float((torch.expm1(x) - x).mean()),
                    "outside_clip": float((x.exp() - 1).abs().gt(cfg.clip_range).float().mean()),
                }
            )
    return rows


def report(res: dict) -> str:
    sig = res["sigma"]
    att = {r["step"]: r["reward_std"] for r in res["attribution"]["per_step"]}
    mov = {r["step"]: r for r in res["movement"]}
    g = res["gradients"]
    lines = [
        "# Why PPO on JPEG compressibility did not learn (issue 20's set-up)",
        "",
        f"Written by `python benchmarks/ppo_jpeg_diagnose.py --pg-min-std {res['pg_min_std']}`. "
        "Measured on: world v1.",
        "",
        "| step k | σ_t | reward std, only step k's noise redrawn (kB) | policy-gradient norm "
        "(mean over rollouts) | after one Adam step: mean log-ratio / dim | k3 KL / dim | "
        "outside clip 1e-4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in enumerate(sig):
        gn = float(np.mean([r["grad_norm_per_step"][k] for r in g]))
        m = mov[k]
        lines.append(
            f"| {k} | {s:.3f} | {att[k]:.3f} | {gn:.2e} | {m['mean_log_ratio_per_dim']:+.2e} | "
            f"{m['k3_per_dim']:.2e} | {m['outside_clip']:.2f} |"
        )
    all_std = res["attribution"]["all_noise_reward_std"]
    shares = ", ".join(f"{r['low_noise_share_of_squared_norm']:.3f}" for r in g)
    cosines = ", ".join(f"{r['cosine_total_vs_other_steps']:.2f}" for r in g)
    lines += [
        "",
        f"Every step's noise redrawn: reward std {all_std:.3f} kB (within a prompt, x_T fixed).",
        f"Share of the squared policy-gradient norm from steps with σ_t < 0.1: {shares} "
        f"(per rollout); cosine of the whole gradient with the other steps' gradient: {cosines}.",
        f"One Adam step at lr {res['learning_rate']:g}, pg_min_std {res['pg_min_std']}.",
    ]
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg, envs, model, source = _setup(args)
    from benchmarks.ppo_jpeg import world_prompts

    prompts = world_prompts()[:2]
    res = {
        "sigma": model.sampler.sigma.tolist(),
        "learning_rate": args.learning_rate,
        "pg_min_std": args.pg_min_std,
        "attribution": step_attribution(envs, model, prompts, args.draws),
        "gradients": gradient_shares(cfg, envs, model, source, args.rollouts),
    }
    res["movement"] = one_step_movement(cfg, envs, model, source)
    tag = "" if args.pg_min_std == 0 else f"_pgmin{args.pg_min_std:g}"
    (OUT / f"diagnose{tag}.json").write_text(json.dumps(res, indent=2))
    text = report(res)
    (OUT / f"diagnose{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
