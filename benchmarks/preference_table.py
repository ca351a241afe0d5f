"""Preference accuracy of hand-made and learned rewards on held-out synthetic comparisons
(Võ Mạnh Quyền, Table 1 on the embedded world).

Comparison tasks are world-model samples (4 seeds per prompt, 20 DDIM steps); train tasks use
train-split prompts, held-out tasks held-out prompts. A synthetic labeler (the oracle preferring
an attribute, plus prompt following, with Gumbel noise) ranks every task; each learned model trains
on the train rankings only. Accuracy = share of held-out (better, worse) pairs a reward orders the
labeler's way. Writes benchmarks/results/preference/preference.{md,json}.

    OMP_NUM_THREADS=2 python benchmarks/preference_table.py        # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from diffenvs.io import atomic_write_bytes, write_json
from diffenvs.preference import (
    SyntheticLabeler,
    TrainRewardConfig,
    make_tasks,
    preference_accuracy,
    read_sets,
    train_reward_model,
    write_sets,
)
from diffenvs.rewards import make_reward


@dataclass
class PreferenceBenchConfig:
    preferences: tuple[str, ...] = ("blurred", "striped")
    train_tasks: int = 300
    heldout_tasks: int = 100
    images_per_task: int = 4
    num_inference_steps: int = 20
    eta: float = 0.0
    """DDIM noise of the task images (1.0 with 10 steps is the RLHF rollout sampler)."""
    task_prompts: str = "world"
    """'world' (captions with modifiers) or 'counts' (the modifier-free captions PPO trains on)."""
    train_mismatched: int = 0
    """images per train task drawn from the prompt with one attribute changed (the labeler ranks
    them low for not following the prompt; held-out tasks never have them)."""
    train_styled: int = 0
    """images per train task drawn from the prompt with a random style modifier appended (more
    varied candidates; held-out tasks never have them)."""
    work: Path = Path("runs/preference")
    """Tasks, labels and trained models go here (reused when present)."""
    out: Path = Path("benchmarks/results/preference")
    seed: int = 0


BASELINES = ("clip_score", "colourfulness", "jpeg_incompressibility", "oracle")


def _tasks(cfg: PreferenceBenchConfig, split: str, n: int, seed: int) -> list:
    folder = cfg.work / f"tasks_{split}"
    if (folder / "tasks.jsonl").is_file() and len(read_sets(folder)) == n:
        return read_sets(folder)
    return make_tasks(
        folder,
        n,
        images_per_task=cfg.images_per_task,
        split=split,
        num_inference_steps=cfg.num_inference_steps,
        eta=cfg.eta,
        prompts=cfg.task_prompts,
        seed=seed,
        id_prefix="h" if split == "heldout" else "t",
        mismatched=cfg.train_mismatched if split == "train" else 0,
        styled=cfg.train_styled if split == "train" else 0,
    )


def _pair_accuracy(sets: list, scores: list[np.ndarray]) -> float:
    hits = n = 0.0
    for s, sc in zip(sets, scores, strict=True):
        pairs = s.pairs()
        if pairs:
            hits += preference_accuracy(sc, pairs) * len(pairs)
            n += len(pairs)
    return hits / n


def run(cfg: PreferenceBenchConfig) -> dict:
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train = _tasks(cfg, "train", cfg.train_tasks, cfg.seed)
    held = _tasks(cfg, "heldout", cfg.heldout_tasks, cfg.seed + 1)
    gen_minutes = (time.perf_counter() - t0) / 60
    held_images = [s.load_images() for s in held]
    baseline_scores = {}
    for name in BASELINES:
        reward = make_reward(name)
        t = time.perf_counter()
        baseline_scores[name] = [
            reward(im, [s.prompt] * len(im)).detach().numpy()
            for s, im in zip(held, held_images, strict=True)
        ]
        baseline_scores[name + "_ms"] = (
            1000 * (time.perf_counter() - t) / sum(map(len, held_images))
        )
    results: dict = {"generation_minutes": gen_minutes, "preferences": {}}
    for pref in cfg.preferences:
        labeler = SyntheticLabeler(pref, seed=cfg.seed)
        write_sets(cfg.work / f"labels_{pref}_train.jsonl", [labeler.rank(s) for s in train])
        held_labelled = [labeler.rank(s, im) for s, im in zip(held, held_images, strict=True)]
        write_sets(cfg.work / f"labels_{pref}_heldout.jsonl", held_labelled)
        row: dict = {}
        for name in BASELINES:
            row[name] = _pair_accuracy(held_labelled, baseline_scores[name])
        # The labeler's own noise-free utility: the ceiling any reward can reach on noisy labels.
        utility = [
            labeler.utility(im, [s.prompt] * len(im))
            for s, im in zip(held, held_images, strict=True)
        ]
        row["labeler utility (ceiling)"] = _pair_accuracy(held_labelled, utility)
        for kind in ("clip-mlp", "latent"):
            out = cfg.work / f"{pref}-{kind}"
            r = train_reward_model(
                TrainRewardConfig(
                    cfg.work / f"labels_{pref}_train.jsonl",
                    out,
                    model=kind,
                    heldout_labels=cfg.work / f"labels_{pref}_heldout.jsonl",
                    seed=cfg.seed,
                )
            )
            row[f"learned {kind}"] = r["heldout_accuracy"]
            row[f"learned {kind} train s"] = r["train_seconds"]
            reward = make_reward(f"learned:{out}")
            t = time.perf_counter()
            reward(held_images[0].repeat(4, 0), [held[0].prompt] * 16)
            row[f"learned {kind} ms/img"] = 1000 * (time.perf_counter() - t) / 16
        results["preferences"][pref] = row
    results["baseline_ms_per_image"] = {n: baseline_scores[n + "_ms"] for n in BASELINES}
    results["minutes"] = (time.perf_counter() - t0) / 60
    results["threads"] = torch.get_num_threads()
    return results


def _args() -> str:
    return "".join(" " + shlex.quote(a) for a in sys.argv[1:])


def write_report(cfg: PreferenceBenchConfig, res: dict) -> None:
    write_json(cfg.out / "preference.json", res)
    prefs = list(res["preferences"])
    cols = [*BASELINES, "labeler utility (ceiling)", "learned clip-mlp", "learned latent"]
    names = {
        "clip_score": "CLIP score",
        "colourfulness": "colourfulness",
        "jpeg_incompressibility": "JPEG size",
        "oracle": "oracle prompt following",
    }
    lines = [
        "# Preference accuracy on held-out synthetic comparisons",
        "",
        f"Written by `python benchmarks/preference_table.py{_args()}`"
        f" ({res['minutes']:.1f} min"
        f" on {res.get('threads', 2)} CPU thread(s), of which "
        f"{res['generation_minutes']:.1f} generating images). Võ Mạnh Quyền's (Improving Text-to-Image Models with AI Feedback) Table 1 on the embedded world.",
        "",
        f"{cfg.train_tasks} train tasks (train-split prompts) and {cfg.heldout_tasks} held-out tasks"
        f" (held-out prompts), {cfg.images_per_task} world-model samples each"
        f" ({cfg.num_inference_steps} DDIM steps, η = {cfg.eta:g}, guidance 4, {cfg.task_prompts} prompts). A synthetic labeler ranks every"
        " task: utility = oracle probability of the preferred attribute + oracle prompt following,"
        " Gumbel noise 0.05, ties within 0.02. Accuracy = share of held-out (better, worse) pairs"
        " a reward orders the labeler's way (a tie in score counts half)."
        + (
            f" In each train task {cfg.train_mismatched} image(s) came from the prompt"
            " with one attribute (count, shape, colour, position or scene) changed, so the"
            " labeler's prompt-following term ranks them low; held-out tasks have none."
            if cfg.train_mismatched
            else ""
        )
        + (
            f" In each train task {cfg.train_styled} image(s) came from the prompt with"
            " a random style modifier appended (the task still shows the plain prompt)."
            if cfg.train_styled
            else ""
        ),
        "",
        "| reward | " + " | ".join(f"prefers *{p}*" for p in prefs) + " |",
        "|---|" + "---|" * len(prefs),
    ]
    for c in cols:
        vals = " | ".join(f"{100 * res['preferences'][p][c]:.1f} %" for p in prefs)
        lines.append(f"| {names.get(c, c)} | {vals} |")
    lines += [
        "",
        "Training time (features + head, 1 process) and scoring cost:",
        "",
        "| model | " + " | ".join(f"train s ({p})" for p in prefs) + " | ms/img |",
        "|---|" + "---|" * (len(prefs) + 1),
    ]
    for kind in ("clip-mlp", "latent"):
        ts = " | ".join(f"{res['preferences'][p][f'learned {kind} train s']:.0f}" for p in prefs)
        lines.append(
            f"| {kind} | {ts} | {res['preferences'][prefs[0]][f'learned {kind} ms/img']:.1f} |"
        )
    lines.append("")
    atomic_write_bytes(cfg.out / "preference.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    config = tyro.cli(PreferenceBenchConfig)
    write_report(config, run(config))
