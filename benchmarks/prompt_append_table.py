"""PromptAppend-v0 benchmark: Gudibande & Zhu's comparison on the embedded world, one CPU thread.

Per task category (the modifier categories removed from the ground truth), the image similarity to
the target (Gudibande & Zhu, eq. 4, mean over held-out evaluation seeds) of: the seed prompt alone, the
ground-truth prompt, Naik et al.'s CLIP-ranked greedy prompt, random search, SQL, REINFORCE and SB3
MaskablePPO, the learners all at the same budget of reward evaluations per task, over several
seeds. Also reward evaluations per second with a cold and a warm cache, the learned prompts
(Gudibande & Zhu, Table 4) and a picture like Gudibande & Zhu, Fig. 4. Writes benchmarks/results/prompt_append/prompt_append.{json,md,png}.

    OMP_NUM_THREADS=1 python benchmarks/prompt_append_table.py            # ~35 min, 1 thread
    OMP_NUM_THREADS=1 python benchmarks/prompt_append_table.py --budget 48 --name prompt_append_b48
    OMP_NUM_THREADS=1 python benchmarks/prompt_append_table.py --vocabulary default --n-appends 2 \
        --budget 48 --name prompt_append_small                            # ~7 min
    OMP_NUM_THREADS=1 python benchmarks/prompt_append_table.py --split train --name prompt_append_train
    OMP_NUM_THREADS=1 python benchmarks/prompt_append_table.py --quick    # a smoke run
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro
from PIL import Image
from prompt_append_pages import METHODS, figure_rows, paired_vs_random, render_markdown, summarise

from agents.adapters.sb3.config import SB3PromptConfig
from agents.adapters.sb3.prompt import train as sb3
from agents.common.prompt_env import PromptEnvArgs, make_env
from agents.prompt.baselines import train as baseline
from agents.prompt.config import BaselineConfig, ReinforceConfig, SQLConfig
from agents.prompt.reinforce import train as reinforce
from agents.prompt.sql import train as sql
from diffenvs.envs.prompt_tasks import world_tasks
from diffenvs.io import atomic_write_bytes, write_json
from diffenvs.models import clear_caches


@dataclass
class BenchConfig:
    """PromptAppend-v0 benchmark settings."""

    split: Literal["test", "train"] = "test"
    """world task split to benchmark on ('train' to check settings away from the test tasks)."""
    tasks_per_category: int = 2
    """world tasks per category (the first ones of the split in the fixed order)."""
    first_task: int = 0
    """skip this many tasks per category first (to add tasks to a run, then --merge)."""
    seeds: int = 3
    first_seed: int = 0
    """run seeds first_seed .. first_seed + seeds - 1 (split a long run over processes, then
    --merge their JSON files)."""
    budget: int = 96
    """reward evaluations per task for every learner (0.6 % of the extended prompt space)."""
    num_inference_steps: int = 10
    generation_seeds: tuple[int, ...] = (0, 1)
    eval_seeds: tuple[int, ...] = (100, 101, 102, 103)
    n_appends: int = 3
    vocabulary: str = "extended"
    """'extended' (26 words, 3 appends: 15,600 prompts, far more than the budget) or 'default'
    (12 words; with 2 appends its 132 prompts are nearly covered by the budget)."""
    name: str = "prompt_append"
    """output files: OUT/NAME.{json,md,png}."""
    out: Path = Path("benchmarks/results/prompt_append")
    methods: tuple[str, ...] = METHODS
    """the searchers/learners to run ('SQL (greedy)' comes with 'SQL')."""
    quick: bool = False
    """one task, one seed, budget 16: checks the script, numbers mean little."""
    merge: tuple[Path, ...] = ()
    """instead of running: combine the JSON files of runs that differ only in their seeds
    (--first-seed) into OUT/NAME.{json,md,png}; with one file, re-render its page."""


def world_env_args(config: dict[str, Any]) -> PromptEnvArgs:
    """The world-model env settings of a benchmark config (a BenchConfig as JSON)."""
    return PromptEnvArgs(
        tasks=f"world:{config['split']}",
        n_appends=config["n_appends"],
        vocabulary=config["vocabulary"],
        generation_seeds=tuple(config["generation_seeds"]),
        eval_seeds=tuple(config["eval_seeds"]),
        model="world",
        num_inference_steps=config["num_inference_steps"],
    )


def pick_tasks(per_category: int, split: str = "test", first: int = 0) -> list[int]:
    """Task indices: per category, the ones at positions first .. first + per_category - 1."""
    chosen: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(world_tasks(split)):
        chosen[task.category].append(i)
    return sorted(i for ids in chosen.values() for i in ids[first : first + per_category])


def throughput(env_args: PromptEnvArgs, n: int = 16) -> dict[str, float]:
    """Reward evaluations/s for ``n`` new prompts (cold cache) and the same again (warm)."""
    clear_caches()
    env = make_env(env_args)
    env.reset(seed=0)
    u = env.unwrapped
    prompts = [u.prompt_of([i, j]) for i in range(u.V) for j in range(u.V) if i != j][:n]
    out = {}
    for name in ("cold", "warm"):
        start = time.perf_counter()
        for p in prompts:
            u.reward_of(p)
        out[f"{name}_evals_per_s"] = n / (time.perf_counter() - start)
    out["images_per_evaluation"] = len(env_args.generation_seeds)
    return out


def run_method(name: str, env_args: PromptEnvArgs, budget: int, seed: int) -> dict[str, Any]:
    common = {"env": env_args, "budget": budget, "seed": seed}
    if name == "random search":
        return baseline(BaselineConfig(method="random", **common))
    if name == "SQL":
        return sql(SQLConfig(**common, save=False, progress=False))["report"]
    if name in ("SQL (CLIP prior)", "SQL (candidates, no prior)"):
        weight = 0.3 if name == "SQL (CLIP prior)" else 0.0  # the ablation starts uniform
        cfg = SQLConfig(
            **common, q_head="candidates", prior_weight=weight, save=False, progress=False
        )
        return sql(cfg)["report"]
    if name == "REINFORCE":
        return reinforce(ReinforceConfig(**common, save=False, progress=False))["report"]
    return sb3(SB3PromptConfig(algo="maskable_ppo", **common, save=False))["report"]


def picture(rows: list[dict[str, Any]], env_args: PromptEnvArgs, path: Path) -> None:
    """Gudibande & Zhu's (Preference Learning for Text-to-Image Prompt Tuning using RL) Fig. 4: per row, seed-prompt image | learned (SQL) prompt image | target."""
    env = make_env(env_args)
    u = env.unwrapped
    tiles = []
    for row in rows:
        env.reset(options={"task": row["task_index"]})
        gen = u._generator.images([row["seed_prompt"], row["prompt"]], [env_args.eval_seeds[0]] * 2)
        target = u.target_image()
        gap = np.full((gen.shape[1], 4, 3), 255, np.uint8)
        tiles.append(np.concatenate([gen[0], gap, gen[1], gap, target], axis=1))
        tiles.append(np.full((4, tiles[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(tiles[:-1], axis=0)
    img = Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def command_of(config: dict[str, Any]) -> str:
    """The command line that runs ``config`` (a BenchConfig as JSON): its non-default options."""
    default = json.loads(json.dumps(asdict(BenchConfig()), default=str))
    args = []
    for key, value in config.items():
        if key == "merge" or value == default.get(key):
            continue
        if config.get("quick") and key in ("tasks_per_category", "seeds", "budget"):
            continue  # set by --quick
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            args += [flag, *(shlex.quote(str(v)) for v in value)]
        else:
            args += [flag, shlex.quote(str(value))]
    return " ".join(["python benchmarks/prompt_append_table.py", *args])


def merge(cfg: BenchConfig) -> dict[str, Any]:
    """Combine runs of the same benchmark over different seeds (``--merge a.json b.json``)."""
    parts = [json.loads(Path(p).read_text()) for p in cfg.merge]
    ignore = {"seeds", "first_seed", "tasks_per_category", "first_task", "name", "out", "merge"}
    first = {k: v for k, v in parts[0]["config"].items() if k not in ignore}
    for path, part in zip(cfg.merge, parts, strict=True):
        other = {k: v for k, v in part["config"].items() if k not in ignore}
        if other != first:
            changed = sorted(k for k in first if first[k] != other.get(k))
            raise ValueError(
                f"{path} was run with different settings ({changed}) from {cfg.merge[0]}; only "
                "runs that differ in their seeds or tasks (--seeds, --first-seed, "
                "--tasks-per-category, --first-task) can be merged."
            )
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in parts:
        for r in part["runs"]:
            key = (r["task_index"], r["method"], r["seed"])
            if key in runs and r["method"] not in ("seed prompt", "ground truth", "CLIP greedy"):
                raise ValueError(
                    f"Run {key} is in more than one file; give parts with disjoint seeds or tasks."
                )
            runs.setdefault(key, r)
    seeds = sorted({r["seed"] for r in runs.values() if r["method"] == "random search"})
    per_category = Counter(r["category"] for r in runs.values() if r["method"] == "seed prompt")
    config = {
        **parts[0]["config"],
        "seeds": len(seeds),
        "first_seed": seeds[0],
        "tasks_per_category": max(per_category.values()),
        "first_task": min(part["config"].get("first_task", 0) for part in parts),
    }
    config.update(name=cfg.name, out=str(cfg.out), merge=[str(p) for p in cfg.merge])
    commands = [c for part in parts for c in part.get("commands", [command_of(part["config"])])]
    learners = [m for m in METHODS if any(r["method"] == m for r in runs.values())]
    merged = " --merge " + " ".join(shlex.quote(str(p)) for p in cfg.merge)
    return write_outputs(
        cfg,
        config,
        list(runs.values()),
        learners,
        parts[0]["throughput"],
        parts[0]["vocabulary_size"],
        parts[0]["prompt_space"],
        sum(part["wall_time_s"] for part in parts),
        commands
        if len(parts) == 1  # a re-render of one run's page
        else [*commands, command_of({"merge": [], "name": cfg.name, "out": str(cfg.out)}) + merged],
    )


def main(cfg: BenchConfig) -> dict[str, Any]:
    torch.set_num_threads(1)
    if cfg.merge:
        return merge(cfg)
    if cfg.quick:
        cfg.tasks_per_category, cfg.seeds, cfg.budget = 1, 1, 16
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {list(METHODS)}.")
    learners = [m for m in METHODS if m.startswith("SQL") and m in cfg.methods]
    if "random search" not in cfg.methods or not learners:
        raise ValueError(
            "--methods must include 'random search' and an SQL variant (every method is "
            "compared with random search and the picture shows SQL's prompts); got "
            f"{list(cfg.methods)}."
        )
    methods = [
        m for m in METHODS if m in cfg.methods or (m == "SQL (greedy)" and "SQL" in cfg.methods)
    ]
    wall = time.perf_counter()
    base = world_env_args(json.loads(json.dumps(asdict(cfg), default=str)))
    speed = throughput(base)
    vocab_size = make_env(base).unwrapped.V
    space = math.perm(vocab_size, cfg.n_appends)
    clear_caches()
    runs: list[dict[str, Any]] = []
    tasks = pick_tasks(1 if cfg.quick else cfg.tasks_per_category, cfg.split, cfg.first_task)
    for index in tasks:
        env_args = PromptEnvArgs(**{**asdict(base), "task": index})
        ref = baseline(BaselineConfig(method="clip_greedy", env=env_args))["tasks"][0]
        common = {k: ref[k] for k in ("task", "category", "seed_prompt", "ground_truth")}
        runs.append(
            {
                **common,
                "method": "seed prompt",
                "seed": 0,
                "prompt": ref["seed_prompt"],
                "similarity": ref["seed_similarity"],
                "task_index": index,
            }
        )
        runs.append(
            {
                **common,
                "method": "ground truth",
                "seed": 0,
                "prompt": ref["ground_truth"],
                "similarity": ref["ground_truth_similarity"],
                "task_index": index,
            }
        )
        runs.append(
            {
                **common,
                "method": "CLIP greedy",
                "seed": 0,
                "prompt": ref["prompt"],
                "appended": ref["appended"],
                "similarity": ref["similarity"],
                "task_index": index,
                "reward_evaluations": 0,
            }
        )
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            rep: dict[str, Any] = {}
            for name in methods:
                start = time.perf_counter()
                if name == "SQL (greedy)":  # the same run as "SQL", its greedy decoding
                    row = rep["greedy"][0]
                else:
                    rep = run_method(name, env_args, cfg.budget, seed)
                    row = rep["tasks"][0]
                runs.append(
                    {
                        **common,
                        "method": name,
                        "seed": seed,
                        "prompt": row["prompt"],
                        "appended": row["appended"],
                        "similarity": row["similarity"],
                        "train_reward": row["train_reward"],
                        "task_index": index,
                        "reward_evaluations": rep["reward_evaluations"],
                        "time_s": time.perf_counter() - start,
                    }
                )
                print(
                    f"task {index} {row['category']:15s} seed {seed} {name:14s} "
                    f"{row['similarity']:.3f}  +{row['appended']!r}",
                    flush=True,
                )
    config = json.loads(json.dumps(asdict(cfg), default=str))
    wall_time = time.perf_counter() - wall
    return write_outputs(
        cfg, config, runs, methods, speed, vocab_size, space, wall_time, [command_of(config)]
    )


def write_outputs(
    cfg: BenchConfig,
    config: dict[str, Any],
    runs: list[dict[str, Any]],
    methods: list[str],
    speed: dict[str, float],
    vocab_size: int,
    space: int,
    wall_time: float,
    commands: list[str],
) -> dict[str, Any]:
    """Summary, paired table, JSON, picture and page of a finished (or merged) benchmark."""
    result = {
        "config": config,
        "commands": commands,
        "throughput": speed,
        "vocabulary_size": vocab_size,
        "prompt_space": space,
        "summary": summarise(runs, methods),
        "paired_vs_random": paired_vs_random(runs, methods),
        "runs": runs,
        "wall_time_s": wall_time,
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / f"{cfg.name}.json", result)
    fig_rows = figure_rows(runs, methods)
    picture(fig_rows, world_env_args(config), cfg.out / f"{cfg.name}.png")
    atomic_write_bytes(cfg.out / f"{cfg.name}.md", render_markdown(result, fig_rows).encode())
    print(render_markdown(result, fig_rows))
    return result


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
