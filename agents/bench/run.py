"""Run leaderboard cells (task × entrant × seed) and regenerate the page.

    python -m agents.bench.run                                 # every task × built-in entrant × 3 seeds
    python -m agents.bench.run --tasks pastel --entrants ppo ppo-kl --seeds 0
    python -m agents.bench.run --entrants my_module:MyEntrant  # your algorithm, same cells
    python -m agents.bench.run --quick                         # the reduced run of CI (~1 min)

Each cell runs in its own process (its peak RSS is its own) and writes one JSON
(:mod:`agents.bench.schema`); finished cells are skipped, so an interrupted sweep resumes, and
cells can be added in legs. The base model's evaluation is shared by every cell of a task.
Afterwards the page (``docs/results/leaderboard.md``) is regenerated from all cells
(:mod:`agents.bench.page`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import tyro

from agents.bench.entrants import ENTRANTS, Budget, Diverged, cannot_run, load_entrant
from agents.bench.schema import CellResult, cell_path
from agents.bench.tasks import TASKS, Task, get_task

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BenchConfig:
    tasks: tuple[str, ...] = tuple(TASKS)
    entrants: tuple[str, ...] = tuple(ENTRANTS)
    """Built-in entrant names or 'module:Class' of your own (docs/benchmark.md)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    images: int | None = None
    """Training images per cell (default: each task's: 640 on the world, 40 updates of 16 for the
    PPO entrants; 12,800 on the reference tasks)."""
    seconds: float = 900.0
    """Wall-clock budget at which every curve is read (15 minutes: the suite's CPU budget)."""
    eval_episodes: int | None = None
    """Held-out images per evaluation (default: each task's, 32)."""
    eval_seed: int = 1_000_000
    out: Path = Path("benchmarks/results/leaderboard")
    """Where the cells' JSON go (relative to the working directory: run from the repo root)."""
    page: Path | None = Path("docs/results/leaderboard.md")
    """Where to write the page after the run (None: don't)."""
    quick: bool = False
    """The reduced run of CI: two updates' images per cell, 8 held-out images, one seed, into
    out/quick, no page."""
    overwrite: bool = False
    threads: int = 1
    one_cell: tuple[str, str, int] | None = None
    """Internal: run this (task, entrant, seed) in this process (the driver's child)."""


def resolve(cfg: BenchConfig) -> BenchConfig:
    if cfg.quick and cfg.one_cell is None:
        cfg = replace(cfg, eval_episodes=8, seeds=cfg.seeds[:1], out=cfg.out / "quick", page=None)
    for name in cfg.tasks:
        get_task(name)
    if (cfg.images is not None and cfg.images < 1) or cfg.seconds <= 0:
        raise ValueError("--images must be >= 1 and --seconds > 0.")
    return cfg


def task_for(cfg: BenchConfig, name: str) -> Task:
    task = get_task(name)
    return task if cfg.eval_episodes is None else replace(task, eval_episodes=cfg.eval_episodes)


def world_info() -> dict[str, str]:
    from importlib.metadata import version

    from diffenvs.world.paths import WORLD_VERSION

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:  # no git on this machine
        commit = ""
    return {"world": WORLD_VERSION, "diffenvs": version("diffenvs"), "commit": commit or "unknown"}


def base_summary(cfg: BenchConfig, task: Task, envs) -> dict[str, float]:
    """The base model's held-out evaluation, computed once per task and budget of eval images."""
    from agents.bench.evaluate import evaluate_denoiser
    from diffenvs.io import write_json
    from diffenvs.world.paths import WORLD_VERSION

    # The base model of a world task changes with the world: never reuse another world's.
    tag = f"{WORLD_VERSION}_" if task.world_only else ""
    file = cfg.out / task.name / f"base_{tag}{task.eval_episodes}_{cfg.eval_seed}.json"
    if file.exists() and not cfg.overwrite:
        return json.loads(file.read_text())
    summary = evaluate_denoiser(task, envs.unwrapped.sampler.unet, envs, cfg.eval_seed)
    write_json(file, summary)
    return summary


def run_cell(cfg: BenchConfig, task_name: str, entrant_name: str, seed: int) -> CellResult:
    """Train one entrant on one task with one seed, evaluate it against the base model, save."""
    import torch

    from agents.bench.evaluate import evaluate_denoiser, evaluate_noise_policy, make_eval_envs
    from diffenvs.io import write_json

    torch.set_num_threads(cfg.threads)
    task, entrant = task_for(cfg, task_name), load_entrant(entrant_name)
    run_dir = cfg.out / task.name / entrant.name / f"seed{seed}_run"
    load_start, start = os.getloadavg()[0], time.perf_counter()
    images = cfg.images if cfg.images is not None else task.images
    if cfg.quick and cfg.images is None:
        images = 2 * int(task.recipe.get("images_per_update", 16))
    trained, status, note = None, "ok", ""
    try:
        trained = entrant.train(task, Budget(images, cfg.seconds), seed, run_dir)
        curve = trained.curve
    except Diverged as err:  # an algorithm's result, not a crash: the page shows it as such
        status, note, curve = "diverged", err.reason, err.curve
    train_seconds = time.perf_counter() - start
    machine = {
        "cpus": os.cpu_count() or 0,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
    }
    envs = make_eval_envs(task)
    base = base_summary(cfg, task, envs)
    if trained is None:
        final = {}
    elif trained.noise_policy is not None:
        final = evaluate_noise_policy(task, trained.noise_policy, cfg.eval_seed)
    else:
        final = evaluate_denoiser(task, trained.denoiser, envs, cfg.eval_seed)
    cell = CellResult(
        task=task.name,
        entrant=entrant.name,
        seed=seed,
        budget={"images": images, "seconds": cfg.seconds},
        curve=[[p.images, round(p.seconds, 3), p.reward] for p in curve],
        base=base,
        final=final,
        train_seconds=train_seconds,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        world=world_info(),
        config=trained.config if trained is not None else {},
        machine=machine,
        status=status,
        note=note,
    )
    write_json(cell_path(cfg.out, task.name, entrant.name, seed), cell.to_json())
    return cell


def main(cfg: BenchConfig) -> list[Path]:
    """Run every missing cell, each in a child process, then regenerate the page."""
    cfg = resolve(cfg)
    if cfg.one_cell is not None:
        task, entrant, seed = cfg.one_cell
        run_cell(cfg, task, entrant, int(seed))
        return [cell_path(cfg.out, task, load_entrant(entrant).name, int(seed))]
    from tqdm.auto import tqdm

    cells = [(t, e, s) for t in cfg.tasks for e in cfg.entrants for s in cfg.seeds]
    written, failed, skipped = [], [], {}
    for task, entrant, seed in tqdm(cells, desc="leaderboard cells"):
        loaded = load_entrant(entrant)
        path = cell_path(cfg.out, task, loaded.name, seed)
        if path.exists() and not cfg.overwrite:
            written.append(path)
            continue
        reason = cannot_run(loaded, get_task(task))
        if reason is not None:
            skipped[f"{task}/{loaded.name}"] = reason
            continue
        cmd = [sys.executable, "-m", "agents.bench.run", "--out", str(cfg.out.resolve())]
        cmd += ["--seconds", str(cfg.seconds)]
        if cfg.images is not None:
            cmd += ["--images", str(cfg.images)]
        cmd += ["--eval-seed", str(cfg.eval_seed), "--threads", str(cfg.threads)]
        if cfg.eval_episodes is not None:
            cmd += ["--eval-episodes", str(cfg.eval_episodes)]
        if cfg.overwrite:
            cmd += ["--overwrite"]
        if cfg.quick:
            cmd += ["--quick"]
        cmd += ["--one-cell", task, entrant, str(seed)]
        if subprocess.run(cmd).returncode == 0 and path.exists():
            written.append(path)
        else:
            failed.append(f"{task}/{entrant}/seed{seed}")
    if cfg.page is not None:
        from agents.bench.page import write_page

        write_page(cfg.out, cfg.page)
    print(
        f"leaderboard: {len(written)} cells in {cfg.out}"
        + (f"; not applicable: {', '.join(skipped)}" if skipped else "")
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
        + (f"; page: {cfg.page}" if cfg.page is not None else "")
    )
    if failed:
        raise SystemExit(1)
    return written


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
