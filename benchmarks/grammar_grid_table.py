"""Marathe's (Reinforcement Learning from Diffusion Feedback) Table 3 on GrammarGrid-v0: {Q, SARSA, Random} × {reward 1, 2, 3} × {ε 0.01, 0.1}.

One command writes the table (mean ± std over seeds) to ``benchmarks/results/grammar_grid/grammar_grid.md``,
the raw numbers to ``benchmarks/results/grammar_grid/grammar_grid.json`` and learning curves to
``docs/images/grammar_grid.png`` (the figure of the docs' results page); it also trains on the 9×
grid and reports its run time:

    python benchmarks/grammar_grid_table.py                      # renderer images, oracle detector
    python benchmarks/grammar_grid_table.py --model world --epsilons 0.1 --no-scale \
        --out-md benchmarks/results/grammar_grid/grammar_grid_world.md \
        --out-json benchmarks/results/grammar_grid/grammar_grid_world.json \
        --out-png benchmarks/results/grammar_grid/grammar_grid_world.png   # the text-to-image world model

Statistics are those of :func:`agents.common.grid.episode_statistics`, over greedy evaluation
episodes from 100 fixed random starts after training. Rewards whose weights are missing (CLIP for
reward 3) are skipped with a note.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from agents.grid.config import TabularConfig
from agents.grid.tabular import train as main
from diffenvs.world.paths import weights_path

REWARD_NAMES = {1: "multi_semantic", 2: "partial_semantic", 3: "clip"}
ALGO_NAMES = {"q_learning": "Q", "sarsa": "SARSA", "random": "Random"}
COLUMNS = [  # (key, header, format)
    ("D_f", "D_f", ".2f"),
    ("D_max", "D_max", ".2f"),
    ("D_min", "D_min", ".2f"),
    ("std", "ρ", ".2f"),
    ("var", "σ²", ".2f"),
    ("conv", "Conv.", ".2f"),
    ("fine_gain", "F Semantic", ".2f"),
    ("coarse_gain", "C Semantic", ".2f"),
    ("steps", "Steps", ".1f"),
    ("train_time_s", "Train s", ".1f"),
]


@dataclass
class BenchConfig:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    algos: tuple[str, ...] = ("q_learning", "sarsa", "random")
    rewards: tuple[int, ...] = (1, 2, 3)
    epsilons: tuple[float, ...] = (0.01, 0.1)
    grammar: str = "default"
    model: str = "renderer"
    """image source: 'renderer' (procedural, exact images) or 'world' (text-to-image model)."""
    detector: str = "oracle"
    """'oracle' (the world's attribute oracle reads each image) or 'exact' (reads the prompt)."""
    episodes: int = 5000
    random_episodes: int = 200
    """the random agent learns nothing; its training episodes only feed the learning-curve plot."""
    eval_episodes: int = 100
    scale: bool = True
    """also train on the larger grid and report its run time."""
    scale_grammar: str = "default_9x"
    scale_episodes: int = 50000
    scale_seeds: tuple[int, ...] = (0, 1, 2)
    out_md: str = "benchmarks/results/grammar_grid/grammar_grid.md"
    out_json: str = "benchmarks/results/grammar_grid/grammar_grid.json"
    out_png: str = "docs/images/grammar_grid.png"
    extra_env_kwargs: dict[str, str] = field(default_factory=dict)


def available_rewards(rewards: tuple[int, ...]) -> tuple[list[int], list[str]]:
    notes, keep = [], []
    for r in rewards:
        if r == 3 and not (weights_path("clip") / "open_clip_model.safetensors").exists():
            notes.append("Reward 3 (CLIP) skipped: the world's CLIP weights were not trained yet.")
            continue
        keep.append(r)
    return keep, notes


def run_one(
    bc: BenchConfig, grammar: str, algo: str, reward: int, eps: float, seed: int, episodes: int
) -> dict:
    cfg = TabularConfig(
        algo=algo,  # type: ignore[arg-type]
        grammar=grammar,
        model=bc.model,
        reward=REWARD_NAMES[reward],
        detector=bc.detector,
        epsilon=eps,
        episodes=episodes,
        eval_episodes=bc.eval_episodes,
        seed=seed,
        save=False,
        progress=False,
        env_kwargs=dict(bc.extra_env_kwargs),
    )
    out = main(cfg)
    curve = [row["length"] for row in out["train"]]
    return {"eval": out["eval"], "curve": curve}


def fmt(values: list[float], spec: str) -> str:
    arr = np.asarray([v for v in values if v == v], dtype=np.float64)  # drop NaN
    if arr.size == 0:
        return "–"
    return f"{arr.mean():{spec}} ± {arr.std():{spec}}"


def plot(
    curves: dict[str, list[list[int]]], path: Path, title: str, random_level: float | None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, runs in curves.items():
        n = min(len(r) for r in runs)
        window = max(1, n // 50)
        smooth = np.array(
            [np.convolve(r[:n], np.ones(window) / window, mode="valid") for r in runs]
        )
        x = np.arange(smooth.shape[1]) + window
        mean, std = smooth.mean(0), smooth.std(0)
        ax.plot(x, mean, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    if random_level is not None:
        ax.axhline(random_level, color="grey", ls="--", lw=1, label="Random")
    ax.set_xscale("log")
    ax.set_xlabel("training episode")
    ax.set_ylabel("training episode length (moving avg.)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def precompute_states(bc: BenchConfig, rewards: list[int]) -> dict[tuple[str, int], float]:
    """Generate and read every state once up front (shared by all runs in this process), so the
    training times of the table measure learning, not image generation. Returns seconds per grid."""
    gen_times = {}
    for grammar in (bc.grammar, bc.scale_grammar) if bc.scale else (bc.grammar,):
        for r in rewards if grammar == bc.grammar else [1]:
            t0 = time.perf_counter()
            gym.make(
                "GrammarGrid-v0",
                grammar=grammar,
                model=bc.model,
                detector=bc.detector,
                reward=REWARD_NAMES[r],
                precompute=True,
            )
            gen_times[(grammar, r)] = time.perf_counter() - t0
    return gen_times


def run_table(bc: BenchConfig, rewards: list[int]) -> tuple[dict, float]:
    """Every agent × reward × ε × seed on the default grid; (runs by row, wall seconds)."""
    jobs = [
        (algo, r, eps, seed)
        for algo in bc.algos
        for r in rewards
        for eps in bc.epsilons
        for seed in bc.seeds
    ]
    results: dict[tuple[str, int, float], list[dict]] = {}
    start = time.perf_counter()
    for algo, r, eps, seed in tqdm(jobs, desc="table runs"):
        episodes = bc.random_episodes if algo == "random" else bc.episodes
        results.setdefault((algo, r, eps), []).append(
            run_one(bc, bc.grammar, algo, r, eps, seed, episodes)
        )
    return results, time.perf_counter() - start


def run_scale(bc: BenchConfig) -> tuple[dict[str, list[dict]], float]:
    """The 9× grid: Q-learning vs random, with run time."""
    scale: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for algo in ("q_learning", "random") if bc.scale else ():
        for seed in tqdm(bc.scale_seeds, desc=f"9x grid {algo}"):
            episodes = bc.random_episodes if algo == "random" else bc.scale_episodes
            scale.setdefault(algo, []).append(
                run_one(bc, bc.scale_grammar, algo, 1, 0.1, seed, episodes)
            )
    return scale, time.perf_counter() - start


def bench(bc: BenchConfig) -> None:
    torch.set_num_threads(1)
    rewards, notes = available_rewards(bc.rewards)
    gen_times = precompute_states(bc, rewards)
    results, table_time = run_table(bc, rewards)
    scale, scale_time = run_scale(bc)
    md = write_page(bc, rewards, notes, results, gen_times, table_time, scale, scale_time)
    write_raw_and_plot(bc, rewards, results, gen_times, table_time, scale, scale_time)
    print(md)


def write_page(
    bc: BenchConfig,
    rewards: list[int],
    notes: list[str],
    results: dict,
    gen_times: dict[tuple[str, int], float],
    table_time: float,
    scale: dict[str, list[dict]],
    scale_time: float,
) -> str:
    """The markdown table page (written to ``bc.out_md``); returns its text."""
    # ---------------------------------------------------------------- markdown
    header = "| Agent | Reward | ε | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (3 + len(COLUMNS))]
    for algo in bc.algos:
        for r in rewards:
            for eps in bc.epsilons:
                runs = results[(algo, r, eps)]
                cells = [fmt([x["eval"][k] for x in runs], spec) for k, _, spec in COLUMNS]
                lines.append(f"| {ALGO_NAMES[algo]} | {r} | {eps} | " + " | ".join(cells) + " |")

    def scale_row(algo: str, grammar: str) -> str:
        runs = scale[algo]
        ev = [x["eval"] for x in runs]
        return (
            f"| {ALGO_NAMES[algo]} | {grammar} | {fmt([e['success_rate'] for e in ev], '.2f')} | "
            f"{fmt([e['steps'] for e in ev], '.1f')} | {fmt([e['train_time_s'] for e in ev], '.1f')} | "
            f"{fmt([e['train_steps'] for e in ev], '.0f')} |"
        )

    base_q = results.get(("q_learning", 1, 0.1), [])
    base_rows = ""
    if base_q:
        ev = [x["eval"] for x in base_q]
        base_rows = (
            f"| Q | {bc.grammar} | {fmt([e['success_rate'] for e in ev], '.2f')} | "
            f"{fmt([e['steps'] for e in ev], '.1f')} | {fmt([e['train_time_s'] for e in ev], '.1f')} | "
            f"{fmt([e['train_steps'] for e in ev], '.0f')} |\n"
        )
    from diffenvs.grammar import load_grammar

    g = load_grammar(bc.grammar)
    n_base = g.n_states
    target_prompt = g.render(tuple((n - 1) // 2 for n in g.shape))
    n_scale = load_grammar(bc.scale_grammar).n_states
    command = (
        "python benchmarks/grammar_grid_table.py"
        + (f" --model {bc.model}" if bc.model != "renderer" else "")
        + (f" --detector {bc.detector}" if bc.detector != "oracle" else "")
    )
    md = f"""# GrammarGrid-v0: Marathe (RLDF), Table 3

Produced by `{command}` on {time.strftime("%Y-%m-%d")} ({platform.machine()}, {torch.get_num_threads()} torch thread, shared 2-core CPU).
Grid: `{bc.grammar}` ({n_base} states, 8 actions); images: `model="{bc.model}"`; semantic rewards read by
`detector="{bc.detector}"`; target: the grid's centre, "{target_prompt}"; {bc.episodes} training
episodes for Q/SARSA ({bc.random_episodes} for Random, which learns nothing), γ = 0.9, α = 0.5, Q initialised
uniformly in ±0.01, ε-greedy with the ε of the row; `max_episode_steps=100`. Every number is the mean ± std over
{len(bc.seeds)} seeds ({", ".join(map(str, bc.seeds))}) of the averages over {bc.eval_episodes} greedy evaluation
episodes from fixed random starts (the random agent keeps acting randomly, so its rows differ only by chance and
ignore ε). Table run time: {table_time / 60:.1f} min, after generating and reading all {n_base} states once per
reward ({", ".join(f"reward {r}: {gen_times[(bc.grammar, r)]:.0f} s" for r in rewards)}).
{" ".join(notes)}

Columns (as in Marathe (RLDF), Table 3): distance from the goal in grid steps along an evaluation episode — final (D_f),
maximum, minimum, standard deviation (ρ) and variance (σ²); Conv. = share of episodes that reach the target;
F / C Semantic = matched fine (count, shape, colour) slots / coarse (scene) slot at the end minus at the start of
an episode, as read by the detector; Steps = episode length (100 = time-out); Train s = training wall time on a
shared CPU that was also training the world's models (large spreads there are runs that waited for the CPU; the
"Train steps" of the last table do not depend on load).

{chr(10).join(lines)}

![learning curves]({os.path.relpath(bc.out_png, Path(bc.out_md).parent)})
"""
    if bc.scale:
        md += f"""
## Larger grid (9×)

Q-learning (reward 1, ε = 0.1) on `{bc.scale_grammar}` ({n_scale} states = {n_scale // n_base}× the default, 12
actions), {bc.scale_episodes} training episodes, {len(bc.scale_seeds)} seeds; random agent for comparison.
Run time of this section: {scale_time / 60:.1f} min. Generating and reading every state's image once, before
training (`precompute`): {gen_times[(bc.scale_grammar, 1)]:.0f} s for the 9× grid vs
{gen_times[(bc.grammar, rewards[0])]:.0f} s for the default grid (`model="{bc.model}"`, `detector="{bc.detector}"`).

| Agent | Grid | Success | Steps | Train s | Train steps |
|---|---|---|---|---|---|
{base_rows}{scale_row("q_learning", bc.scale_grammar)}
{scale_row("random", bc.scale_grammar)}
"""
    world_page = Path(bc.out_md).with_name("grammar_grid_world.md")
    if bc.model == "renderer" and world_page.exists():
        md += (
            "\nThe same table on images from the world's text-to-image model instead of the "
            "renderer (ε = 0.1 only):\n[GrammarGrid on the world model](grammar_grid_world.md).\n"
        )
    Path(bc.out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(bc.out_md).write_text(md)
    return md


def write_raw_and_plot(
    bc: BenchConfig,
    rewards: list[int],
    results: dict,
    gen_times: dict[tuple[str, int], float],
    table_time: float,
    scale: dict[str, list[dict]],
    scale_time: float,
) -> None:
    raw = {
        "config": asdict(bc),
        "table_time_s": table_time,
        "precompute_s": {f"{gr}/reward{r}": t for (gr, r), t in gen_times.items()},
        "scale_time_s": scale_time,
        "rows": [
            {"algo": a, "reward": r, "epsilon": e, "runs": [x["eval"] for x in v]}
            for (a, r, e), v in results.items()
        ],
        "scale": {a: [x["eval"] for x in v] for a, v in scale.items()},
    }
    Path(bc.out_json).write_text(json.dumps(raw, indent=1))

    curves = {}
    for algo in bc.algos:
        for r in rewards:
            runs = results.get((algo, r, 0.1))
            if runs and algo != "random":
                curves[f"{ALGO_NAMES[algo]}, reward {r}"] = [x["curve"] for x in runs]
    rnd = [c for (a, _, e), v in results.items() if a == "random" and e == 0.1 for c in v]
    level = float(np.mean([np.mean(x["curve"]) for x in rnd])) if rnd else None
    title = f"{bc.grammar} grid, ε = 0.1, mean ± std over {len(bc.seeds)} seeds"
    plot(curves, Path(bc.out_png), title, level)


if __name__ == "__main__":
    bench(tyro.cli(BenchConfig))
