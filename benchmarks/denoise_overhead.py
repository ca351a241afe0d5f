"""Benchmark ``DiffusionDenoise-v0`` against a plain diffusers sampling loop.

Measures, on the embedded world's model by default:

(a) wall time of a full episode (reset, ``steps`` steps, VAE decode) through the env versus a plain
    diffusers loop (prompt encoding, UNet + classifier-free guidance, ``DDIMScheduler.step`` with
    eta = 1, VAE decode) and ``StableDiffusionPipeline.__call__``, same model, steps and batch;
(b) images/s versus ``num_envs`` for the native vector env, ``SyncVectorEnv`` and the plain
    batched loop;
(c) the cost per image of every reward in the library (batch of ``reward_batch`` world images).

Runs are interleaved (plain, env, pipeline, plain, ...) and medians reported, so background load
affects all contenders alike. Writes a markdown report (default ``benchmarks/results/denoise/denoise.md``).

    python benchmarks/denoise_overhead.py                       # ~15 min on 2 CPU cores
    python benchmarks/denoise_overhead.py --repeats 3 --num-envs 1 4 16
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro

import diffenvs  # noqa: F401  (registers the environments)
from diffenvs.envs.denoise_core import resolve_pipeline
from diffenvs.rewards import make_reward
from diffenvs.world.render import render, sample_scenes


@dataclass
class Args:
    model: str = "world"
    steps: int = 20
    """sampler steps of the overhead comparison (a)."""
    guidance_scale: float = 4.0
    repeats: int = 5
    overhead_batches: tuple[int, ...] = (1, 16)
    num_envs: tuple[int, ...] = (1, 4, 16, 64)
    throughput_steps: int = 10
    """sampler steps per episode for the throughput table (b)."""
    throughput_repeats: int = 2
    reward_batch: int = 64
    reward_repeats: int = 3
    threads: int = 1
    out: str = "benchmarks/results/denoise/denoise.md"


def _prompts(n: int, seed: int) -> list[str]:
    return [s.caption() for s in sample_scenes(n, seed=seed, split="train")]


class PlainLoop:
    """The reference: a hand-written diffusers sampling loop, no environment around it."""

    def __init__(self, pipe: Any, steps: int, guidance_scale: float) -> None:
        from diffusers import DDIMScheduler

        self.pipe, self.guidance_scale = pipe, guidance_scale
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.scheduler.set_timesteps(steps)
        unet = pipe.unet.config
        self.shape = (unet.in_channels, unet.sample_size, unet.sample_size)

    @torch.no_grad()
    def __call__(self, prompts: list[str], seed: int) -> torch.Tensor:
        pipe, g = self.pipe, self.guidance_scale
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        embeds, negative = pipe.encode_prompt(prompts, pipe.device, 1, True)
        cond = torch.cat([negative, embeds])
        latents = torch.stack([torch.randn(self.shape, generator=gen) for gen in generators])
        for t in self.scheduler.timesteps:
            out = pipe.unet(torch.cat([latents] * 2), t, encoder_hidden_states=cond).sample
            uncond, text = out.chunk(2)
            guided = uncond + g * (text - uncond)
            latents = self.scheduler.step(
                guided, t, latents, eta=1.0, generator=generators
            ).prev_sample
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        return (image / 2 + 0.5).clamp(0, 1)


def _timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def env_episode(env: Any, seed: int) -> None:
    """Reset and run to the end with the base sampler's noise (an agent drawing N(0, I))."""
    env.reset(seed=seed)
    shape = env.action_space.shape
    generator = torch.Generator().manual_seed(seed)
    done = False
    while not done:
        _, _, terminated, _, _ = env.step(torch.randn(shape, generator=generator).numpy())
        done = bool(np.all(terminated))


def overhead(args: Args, pipe: Any) -> list[dict[str, Any]]:
    rows = []
    plain = PlainLoop(pipe, args.steps, args.guidance_scale)
    kwargs = {
        "model": args.model,
        "num_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "reward": "zero",
    }
    for batch in args.overhead_batches:
        env = (
            gym.make("DiffusionDenoise-v0", **kwargs)
            if batch == 1
            else gym.make_vec("DiffusionDenoise-v0", num_envs=batch, **kwargs)
        )
        times: dict[str, list[float]] = {"plain": [], "env": [], "pipeline": []}
        for r in range(args.repeats + 1):  # the first round warms up
            prompts = _prompts(batch, seed=r)
            t_plain = _timed(plain, prompts, r)
            t_env = _timed(env_episode, env, 10_000 + r)
            t_pipe = _timed(
                pipe,
                prompts,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                eta=1.0,
                generator=[torch.Generator().manual_seed(r + i) for i in range(batch)],
                output_type="pt",
            )
            if r:
                times["plain"].append(t_plain)
                times["env"].append(t_env)
                times["pipeline"].append(t_pipe)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = [e / p for e, p in zip(times["env"], times["plain"], strict=True)]
        rows.append(
            {
                "batch": batch,
                "plain_s": med["plain"],
                "env_s": med["env"],
                "pipeline_s": med["pipeline"],
                "env_over_plain": med["env"] / med["plain"],
                "paired_ratio_median": statistics.median(ratios),
                "pipeline_over_plain": med["pipeline"] / med["plain"],
            }
        )
        print("overhead", rows[-1], flush=True)
        env.close()
    return rows


def throughput(args: Args, pipe: Any) -> list[dict[str, Any]]:
    rows = []
    plain = PlainLoop(pipe, args.throughput_steps, args.guidance_scale)
    kwargs = {
        "model": args.model,
        "num_steps": args.throughput_steps,
        "guidance_scale": args.guidance_scale,
        "reward": "zero",
    }
    for n in args.num_envs:
        native = gym.make_vec("DiffusionDenoise-v0", num_envs=n, **kwargs)
        sync = gym.make_vec("DiffusionDenoise-v0", num_envs=n, vectorization_mode="sync", **kwargs)
        times: dict[str, list[float]] = {"plain": [], "native": [], "sync": []}
        for r in range(args.throughput_repeats + 1):
            prompts = _prompts(n, seed=100 + r)
            t = {
                "plain": _timed(plain, prompts, r),
                "native": _timed(env_episode, native, 20_000 + r),
                "sync": _timed(env_episode, sync, 20_000 + r),
            }
            if r:
                for k, v in t.items():
                    times[k].append(v)
        row = {"num_envs": n, **{f"{k}_img_s": n / statistics.median(v) for k, v in times.items()}}
        rows.append(row)
        print("throughput", row, flush=True)
        native.close()
        sync.close()
    return rows


def reward_costs(args: Args) -> list[dict[str, Any]]:
    scenes = sample_scenes(args.reward_batch, seed=7, split="train")
    arrays = np.stack([np.asarray(render(s, i)) for i, s in enumerate(scenes)])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    prompts = [s.caption() for s in scenes]
    specs: list[tuple[str, dict[str, Any]]] = [
        ("zero", {}),
        ("colourfulness", {}),
        ("jpeg_compressibility", {}),
        ("jpeg_incompressibility", {}),
        ("target_rmse", {}),
        ("clip_score", {}),
        ("clip_image", {}),
        ("aesthetic", {}),
        ("oracle", {}),
        ("oracle:red", {}),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in specs:
            try:
                if name == "aesthetic":
                    kwargs = {"weights": _random_aesthetic(tmp)}
                reward = make_reward(name, **kwargs)
            except Exception as err:  # missing weights: report rather than abort
                rows.append(
                    {
                        "reward": name,
                        "ms_per_image": None,
                        "note": f"{type(err).__name__}: {str(err)[:80]}",
                    }
                )
                continue
            with torch.no_grad():
                reward(images, prompts)
                times = [_timed(reward, images, prompts) for _ in range(args.reward_repeats)]
            note = "random MLP weights (cost only)" if name == "aesthetic" else ""
            rows.append(
                {
                    "reward": name,
                    "ms_per_image": 1000 * statistics.median(times) / len(images),
                    "note": note,
                }
            )
            print("reward", rows[-1], flush=True)
    return rows


def _random_aesthetic(folder: str) -> str:
    from diffenvs.io import save_tensors
    from diffenvs.models import AestheticMLP, load_clip

    with torch.no_grad():
        width = load_clip("world").encode_images(torch.zeros(1, 3, 64, 64)).shape[-1]
    path = str(Path(folder) / "aesthetic.safetensors")
    torch.manual_seed(0)
    save_tensors(AestheticMLP(embed_dim=width).state_dict(), path)
    return path


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def write_report(args: Args, results: dict[str, Any], path: Path) -> None:
    import diffusers

    env = results["environment"]
    lines = [
        "# DiffusionDenoise-v0 benchmarks",
        "",
        f"Measured by `python benchmarks/denoise_overhead.py` on {env['date']}: model `{args.model}`, "
        f"{env['cpus']} CPU cores ({env['cpu']}), torch {env['torch']} with {args.threads} thread(s), "
        f"diffusers {diffusers.__version__}; load average at the start {env['load']}. Medians of "
        f"{args.repeats} interleaved runs (after one warm-up) for (a), {args.throughput_repeats} for (b).",
        "",
        f"## (a) Episode wall time: env vs a plain diffusers loop ({args.steps} DDIM steps, eta 1, guidance {args.guidance_scale})",
        "",
        "The env episode is `reset` + one `step` per sampler step with standard-normal noise actions "
        "(noise mode, reward `zero`), which includes building observations, infos (base mean/std/"
        "log-prob) and the VAE decode. The plain loop is prompt encoding, UNet with classifier-free "
        "guidance, `DDIMScheduler.step` and the VAE decode. Target: env / plain <= 1.05.",
        "",
        "| batch | plain loop (s) | env (s) | `StableDiffusionPipeline` (s) | env / plain | paired median ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["overhead"]:
        lines.append(
            f"| {r['batch']} | {_fmt(r['plain_s'])} | {_fmt(r['env_s'])} | {_fmt(r['pipeline_s'])} | "
            f"{_fmt(r['env_over_plain'])} | {_fmt(r['paired_ratio_median'])} |"
        )
    lines += [
        "",
        "Batch 1 is the single env (`gym.make`); larger batches are the native vector env (`gym.make_vec`).",
        "",
        f"## (b) Throughput vs num_envs ({args.throughput_steps} steps per image)",
        "",
        "| num_envs | native vector env (img/s) | SyncVectorEnv (img/s) | plain batched loop (img/s) | native / sync |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['num_envs']} | {_fmt(r['native_img_s'], 2)} | {_fmt(r['sync_img_s'], 2)} | "
            f"{_fmt(r['plain_img_s'], 2)} | {_fmt(r['native_img_s'] / r['sync_img_s'], 2)} |"
        )
    lines += [
        "",
        f"## (c) Reward cost per image (batch of {args.reward_batch} world images, 64 x 64)",
        "",
        "| reward | ms / image | note |",
        "|---|---:|---|",
    ]
    for r in results["rewards"]:
        lines.append(f"| `{r['reward']}` | {_fmt(r['ms_per_image'])} | {r['note']} |")
    lines += ["", "Raw numbers:", "", "```json", json.dumps(results, indent=1), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(args: Args) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    # The very pipeline object the environments use (they share loaded pipelines by name).
    pipe = resolve_pipeline(args.model, None, None)
    results: dict[str, Any] = {
        "environment": {
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
        "args": asdict(args),
    }
    results["overhead"] = overhead(args, pipe)
    results["throughput"] = throughput(args, pipe)
    results["rewards"] = reward_costs(args)
    write_report(args, results, Path(args.out))
    print("wrote", args.out)
    return results


if __name__ == "__main__":
    main(tyro.cli(Args))
