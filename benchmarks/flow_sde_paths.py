"""How the SDE step makes a policy of a flow model, on a 1-D flow whose velocity is exact.

The data are a two-mode Gaussian mixture, so the flow-matching velocity v(x, σ) = E[ε - x_0 | x_σ]
has a closed form and the figure shows the sampler itself, not a model's error. One episode starts
from one x_T and runs the *same* schedule (``FlowMatchEulerDiscreteScheduler(shift=3)``, 10 steps,
as SD3 uses) three ways, each step computed by :mod:`diffenvs.flow_logprob` exactly as
``DiffusionDenoise-v0`` computes it:

* ODE (``noise_level=0``): the pipeline's deterministic Euler step;
* SDE (Flow-GRPO, ``noise_level=0.7``): each step a Gaussian N(mean, std²) (shaded ±2 std);
* CPS (Wang & Yu, ``noise_level=0.7``): the coefficients-preserving Gaussian step.

The right panel samples many episodes of each and compares the final x_0 with the data density.

python benchmarks/flow_sde_paths.py     # writes docs/images/flow_sde_paths.png and
                                        # benchmarks/results/flow_sde_paths/summary.json (~5 s)

Measured numbers are in docs/flow.md (the script prints them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from diffenvs.flow_logprob import flow_coefficients, flow_distribution

ROOT = Path(__file__).resolve().parents[1]
MEANS = torch.tensor([-1.5, 1.5], dtype=torch.float64)
STDS = torch.tensor([0.25, 0.25], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)


@dataclass
class Args:
    steps: int = 10
    noise_level: float = 0.7
    episodes: int = 20000
    seed: int = 0
    figure: str = str(ROOT / "docs/images/flow_sde_paths.png")
    summary: str = str(ROOT / "benchmarks/results/flow_sde_paths/summary.json")


def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The exact flow-matching velocity E[ε - x_0 | x_σ = x] of the mixture (float64)."""
    a = 1.0 - sigma
    var = a**2 * STDS**2 + sigma**2  # x_σ | component i ~ N(a μ_i, var_i)
    d = x[:, None] - a * MEANS
    log_r = torch.log(WEIGHTS) - 0.5 * d**2 / var - 0.5 * torch.log(var)
    r = torch.softmax(log_r, dim=1)
    x0 = MEANS + a * STDS**2 / var * d
    eps = sigma / var * d
    return (r * (eps - x0)).sum(1)


def run(x_t: torch.Tensor, sigmas: torch.Tensor, coeffs, gen: torch.Generator):
    """One batch of episodes: the latent, step mean and std after every step."""
    xs, means, stds = [x_t], [], []
    x = x_t
    for k in range(len(sigmas) - 1):
        v = velocity(x, float(sigmas[k]))
        dist = flow_distribution(coeffs[[k] * len(x)], v[:, None], x[:, None].float().double())
        noise = torch.randn(len(x), 1, generator=gen, dtype=torch.float64)
        x = dist.sample(noise)[:, 0]
        xs.append(x)
        means.append(dist.mean[:, 0])
        stds.append(dist.std)
    return torch.stack(xs), torch.stack(means), torch.stack(stds)


def mixture_density(grid: np.ndarray) -> np.ndarray:
    m, s, w = MEANS.numpy(), STDS.numpy(), WEIGHTS.numpy()
    z = (grid[:, None] - m) / s
    return (w * np.exp(-0.5 * z**2) / (s * math.sqrt(2 * math.pi))).sum(1)


def main(args: Args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(args.steps)
    sigmas = sched.sigmas.double()
    kinds = {
        "ODE": flow_coefficients(sched.sigmas, 0.0),
        "SDE": flow_coefficients(sched.sigmas, args.noise_level, sde_type="sde"),
        "CPS": flow_coefficients(sched.sigmas, args.noise_level, sde_type="cps"),
    }
    colours = {"ODE": "black", "SDE": "tab:red", "CPS": "tab:blue"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    x_start = torch.tensor([0.3], dtype=torch.float64)
    summary: dict = {"steps": args.steps, "noise_level": args.noise_level, "kinds": {}}
    grid = np.linspace(-3, 3, 400)
    bx.plot(mixture_density(grid), grid, color="grey", lw=3, alpha=0.5, label="data")
    data_mode = float((WEIGHTS * MEANS).sum())
    for name, coeffs in kinds.items():
        gen = torch.Generator().manual_seed(args.seed)
        xs, means, stds = run(x_start, sigmas, coeffs, gen)
        s = sigmas.numpy()
        ax.plot(s, xs[:, 0].numpy(), "o-", color=colours[name], label=name, ms=3)
        if name != "ODE":
            lo = (means[:, 0] - 2 * stds[:, 0]).numpy()
            hi = (means[:, 0] + 2 * stds[:, 0]).numpy()
            ax.fill_between(s[1:], lo, hi, color=colours[name], alpha=0.15, step=None)
        # Many episodes: where do the final samples land?
        many = torch.randn(args.episodes, generator=gen, dtype=torch.float64)
        final = run(many, sigmas, coeffs, gen)[0][-1].numpy()
        bx.hist(final, bins=80, range=(-3, 3), density=True, orientation="horizontal",
                histtype="step", color=colours[name], label=name)  # fmt: skip
        right = float((final > 0).mean())
        within = [float(np.std(final[final > 0])), float(np.std(final[final < 0]))]
        summary["kinds"][name] = {
            "episode_std_per_step": [round(float(v), 4) for v in stds[:, 0]],
            "final_mean": round(float(final.mean()), 4),
            "fraction_right_mode": round(right, 4),
            "mode_std_right_left": [round(v, 4) for v in within],
        }
        print(f"{name}: step std {summary['kinds'][name]['episode_std_per_step']}")
        print(f"     final mean {final.mean():+.3f} (data {data_mode:+.3f}), right mode "
              f"{right:.3f} (data 0.700), mode std {within[0]:.3f}/{within[1]:.3f} (data 0.250)")  # fmt: skip
    ax.invert_xaxis()
    ax.set_xlabel("σ (1 = noise, 0 = data)")
    ax.set_ylabel("x")
    ax.set_title(f"one episode, {args.steps} steps from the same x_T (shaded: ±2 std of each step)")
    ax.legend()
    bx.set_title(f"final x_0 of {args.episodes} episodes")
    bx.set_xlabel("density")
    bx.legend(fontsize=8)
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
    Path(args.summary).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.figure} and {args.summary}")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
