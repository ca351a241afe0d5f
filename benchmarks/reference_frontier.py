"""The exact reward-vs-KL frontier of the reference tasks, the metrics' calibration, and the agents on it.

For ReferenceGMM2D-v0 (and ReferenceGMMND-v0) this writes

* the exact frontier (E_{p*_β}[r], KL(p*_β || p_base)) over a β sweep, in closed form, with a Monte
  Carlo check from exact samples of p*_β at a few β (E[r] and E_{p*}[log p*/p] from the exact
  densities);
* the calibration of the distance metrics at n = 4,000 samples: p* against an independent p* sample
  (the noise floor), the exact base mixture and the base *sampler* (20 DDIM / flow steps) against p*,
  and the sampler against the mixture (its discretisation error);
* the env's throughput (episodes per second, native vector env, noise mode, CPU);
* the figure docs/images/reference_frontier.png with every agent result found in
  benchmarks/results/reference/*_beta*_seed*.json (examples/reference_ppo.py writes them).

    python benchmarks/reference_frontier.py            # ~1 min on one core
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path("benchmarks/results/reference")
FIGURE = Path("docs/images/reference_frontier.png")


def frontier_table(task, betas) -> list[dict]:
    return [
        {
            "beta": p.beta,
            "expected_reward": p.expected_reward,
            "kl": p.kl,
            "log_partition": p.log_partition,
        }
        for p in task.frontier(betas)
    ]


def monte_carlo_check(task, betas, n: int = 200_000) -> list[dict]:
    """E[r] and KL(p*||p) from exact samples of p*, next to the closed form."""
    rows = []
    for beta in betas:
        opt = task.optimum(beta)
        x = opt.sample(n, torch.Generator().manual_seed(0))
        point = task.point(beta)
        rows.append(
            {
                "beta": beta,
                "expected_reward_exact": point.expected_reward,
                "expected_reward_mc": float(task.reward(x).mean()),
                "kl_exact": point.kl,
                "kl_mc": float((opt.log_prob(x) - task.base.log_prob(x)).mean()),
            }
        )
    return rows


def calibration(env_id: str, scheduler: str, betas, n: int) -> dict:
    import gymnasium as gym

    from diffenvs.reference import calibration_report, sample_policy

    env = gym.make(env_id, scheduler=scheduler)
    sampler, task = env.unwrapped.sampler, env.unwrapped.task
    base = sample_policy(sampler, sampler.unet, n, seed=1)["samples"]
    return {f"{beta:g}": calibration_report(task, beta, base, seed=0) for beta in betas}


def throughput(env_id: str, num_envs: int = 1000, episodes: int = 3) -> float:
    """Finished episodes per second of the native vector env in noise mode."""
    import gymnasium as gym

    envs = gym.make_vec(env_id, num_envs=num_envs)
    rng = np.random.default_rng(0)
    shape = (num_envs, *envs.single_action_space.shape)
    t0 = time.perf_counter()
    for e in range(episodes):
        envs.reset(seed=e * num_envs)
        for _ in range(envs.unwrapped.num_steps):
            envs.step(rng.standard_normal(shape).astype(np.float32))
    return num_envs * episodes / (time.perf_counter() - t0)


def plot(task, frontier: list[dict], runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    kl = [0.0] + [r["kl"] for r in reversed(frontier)]
    er = [task.base_reward()] + [r["expected_reward"] for r in reversed(frontier)]
    ax.plot(kl, er, "k-", lw=1.2)
    ax.plot([0], [task.base_reward()], "ks")
    colours: dict[float, str] = {}
    for run in sorted(runs, key=lambda r: r["beta"]):
        beta, after = run["beta"], run["after"]
        colour = colours.setdefault(beta, f"C{len(colours)}")
        ax.plot(
            [after["optimum_kl"]], [after["optimum_reward"]], "o", mfc="none", color=colour, ms=11
        )
        marker = "^" if run["env"] == "ReferenceGMM2DFlow-v0" else "o"
        ax.plot([after["path_kl"]], [after["reward_mean"]], marker, color=colour, ms=6, alpha=0.85)
    handles = [
        Line2D([], [], color="k", label="exact frontier (KL(p*_β‖p), E_p*_β[r])"),
        Line2D([], [], color="k", marker="s", ls="", label="base model"),
        Line2D([], [], color="grey", marker="o", mfc="none", ms=11, ls="", label="p*_β (exact)"),
        Line2D([], [], color="grey", marker="o", ls="", label="PPO, DDIM (path KL)"),
        Line2D([], [], color="grey", marker="^", ls="", label="PPO, flow SDE (path KL)"),
    ] + [Line2D([], [], color=c, lw=6, label=f"β = {b:g}") for b, c in colours.items()]
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.set_xlabel("KL to the base model (nats; symlog)")
    ax.set_ylabel("expected reward E[x₁]")
    ax.set_title("ReferenceGMM2D-v0: PPO vs the exact optimum", fontsize=10)
    ax.set_xscale("symlog", linthresh=0.1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(runs: list[dict]) -> str:
    """One row per agent run: reward, path KL and distances to p* before/after, with the floor."""
    head = (
        "| env | β | seed | E[r] base → after (p*) | path KL (KL(p*‖p)) | objective (β log Z) "
        "| SW2 to p* base → after (floor) | kNN KL to p* base → after (floor) | train s |\n"
        "|---|---:|---:|---|---|---|---|---|---:|\n"
    )
    rows = []
    for r in sorted(runs, key=lambda r: (r["env"], r["beta"], r["seed"])):
        b, a, c = r["before"], r["after"], r["calibration"]
        rows.append(
            f"| {r['env'].removesuffix('-v0')} | {r['beta']:g} | {r['seed']} "
            f"| {b['reward_mean']:.3f} → **{a['reward_mean']:.3f}** ({a['optimum_reward']:.3f}) "
            f"| **{a['path_kl']:.3f}** ({a['optimum_kl']:.3f}) "
            f"| {a['objective']:.3f} ({a['optimum_objective']:.3f}) "
            f"| {b['sw2_to_pstar']:.3f} → **{a['sw2_to_pstar']:.3f}** ({c['sw2_pstar_vs_pstar']:.3f}) "
            f"| {b['knn_kl_to_pstar']:.3f} → **{a['knn_kl_to_pstar']:.3f}** ({c['knn_kl_pstar_vs_pstar']:.3f}) "
            f"| {r['train_seconds']:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="samples per calibration distance")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import gymnasium as gym

    import diffenvs  # noqa: F401

    report: dict = {}
    betas = np.logspace(-1, 1.3, 30)
    for env_id in ("ReferenceGMM2D-v0", "ReferenceGMMND-v0"):
        task = gym.make(env_id).unwrapped.task
        report[env_id] = {
            "base_reward": task.base_reward(),
            "frontier": frontier_table(task, betas),
            "monte_carlo_check": monte_carlo_check(task, [0.5, 1.0, 2.0]),
            "calibration": {
                s: calibration(env_id, s, [0.5, 1.0, 2.0], args.n) for s in ("ddim", "flow")
            },
            "episodes_per_second": throughput(env_id),
        }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "frontier.json").write_text(json.dumps(report, indent=2))
    all_runs = [
        json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(OUT / "*_beta*_seed*.json")))
    ]
    runs = [r for r in all_runs if r.get("env") in ("ReferenceGMM2D-v0", "ReferenceGMM2DFlow-v0")]
    task = gym.make("ReferenceGMM2D-v0").unwrapped.task
    plot(task, report["ReferenceGMM2D-v0"]["frontier"], runs, FIGURE)
    (OUT / "table.md").write_text(markdown_table(all_runs))
    print(markdown_table(all_runs))
    for env_id, r in report.items():
        print(env_id, f"{r['episodes_per_second']:.0f} episodes/s")
        for row in r["monte_carlo_check"]:
            print("  MC check", {k: round(v, 4) for k, v in row.items()})
        for s, cal in r["calibration"].items():
            for beta, c in cal.items():
                print(f"  {s} β={beta}", {k: round(v, 3) for k, v in c.items()})
    print(f"wrote {OUT / 'frontier.json'} and {FIGURE} ({len(runs)} agent runs)")


if __name__ == "__main__":
    main()
