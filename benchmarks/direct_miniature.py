"""Võ Mạnh Quyền's AI-feedback experiment in miniature, on the embedded world, with ReFL.

Võ Mạnh Quyền ("Improving Text-to-Image Models with Artificial Intelligence Feedback") labels
images with AI feedback, trains a CLIP-MLP reward model on the rankings and fine-tunes the UNet
with ReFL (Xu et al., ImageReward): LoRA rank 4, the reward back-propagated from a random late
step's one-step x_0 prediction, plus the KL term of its eq. 5. Here:

1. **AI feedback**: the world oracle as a synthetic labeler (:class:`SyntheticLabeler`: prefers
   ``--preference`` images that follow their prompt, Gumbel noise) ranks world samples made with
   the sampler ReFL trains (10 DDIM steps, η = 1, the modifier-free count prompts).
2. **Reward model**: the suite's clip-mlp model (``diffenvs.preference``) trained on the rankings.
3. **ReFL** with LoRA rank 4 and the KL term against that reward model (``agents.direct``,
   preset ``ai-feedback``).
4. **Judged** on held-out prompts by the *labeler's noise-free ground truth* (not the reward
   model): the win rate of each fine-tuned image over the base image with the same prompt, seed
   and noise (a tie counts half); prompt following by the independent judge (and the oracle).

``--stage diagnose`` (no sampling) reads the existing tasks with the oracle and tells, for every
style a labeler could prefer, how much of the labeler's within-task utility variance it carries
and what held-out pair accuracy a clip-mlp reward model reaches on it. On world v2 the base model
draws no style unprompted, so the reward model must be shown the preferred style (styled tasks)
and where "paler" stops being better (washed tasks, ``--augmented-tasks``):

    OMP_NUM_THREADS=1 python benchmarks/direct_miniature.py --stage reward-model --preference pastel
    OMP_NUM_THREADS=1 python benchmarks/direct_miniature.py --stage diagnose
    OMP_NUM_THREADS=1 python benchmarks/direct_miniature.py --stage reward-model --preference pastel \
        --styled-tasks 300 --styled-modifier pastel --heldout-styled-tasks 60 --augmented-tasks 300
    OMP_NUM_THREADS=1 python benchmarks/direct_miniature.py --preference pastel --styled-tasks 300 \
        --styled-modifier pastel --heldout-styled-tasks 60 --augmented-tasks 300 --seed 0 \
        --direct.learning-rate 1e-2 --direct.kl-coef 3e-5 --direct.refl-min-step 0.9

``--mismatched-tasks N`` adds N train tasks (and ``--heldout-tasks`` held-out ones) with one image
drawn from a prompt with one attribute changed, so that the reward model learns to check the
prompt, not only the style.

Tasks, labels (one file per preference) and reward models live under ``--work`` and are reused.
Writes OUT/miniature_PREFERENCE_seedS.json (with the per-image utilities) and, in the run folder,
the before/after grid and curves.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro

from agents.common.cli_args import options_in_argv
from agents.direct.config import DirectConfig
from diffenvs.io import write_json
from diffenvs.world.paths import WORLD_VERSION

MINIATURE = DirectConfig(
    preset="ai-feedback",
    prompts="counts",
    eval_prompts="counts:heldout",
    output_dir=f"runs/direct_miniature_{WORLD_VERSION}",
)


@dataclass
class MiniatureConfig:
    """The AI-feedback miniature: labels → clip-mlp reward model → ReFL → ground-truth win rate."""

    stage: Literal["diagnose", "reward-model", "refl", "all"] = "refl"
    preference: str = "blurred"
    """The attribute the synthetic labeler likes (besides prompt following)."""
    train_tasks: int = 300
    heldout_tasks: int = 60
    styled_tasks: int = 0
    """Extra train tasks with one image per task drawn with a random style modifier appended (more
    varied candidates: the preferred style appears more often); 0: none."""
    styled_modifier: str | None = None
    """The modifier the styled images get (e.g. the preferred one); None: a random one of eight."""
    styled_per_task: int = 1
    """Styled images in each styled task (of 4)."""
    heldout_styled_tasks: int = 0
    """Extra held-out tasks made like the styled train tasks (on world v2 the plain tasks hardly
    vary in style, so their pairs are mostly ordered by the labeler's noise)."""
    mismatched_tasks: int = 0
    """Extra train tasks (and as many held-out ones as ``heldout_tasks``) with one image per task
    drawn from the prompt with one attribute changed, under the original prompt: the labeler,
    who wants the prompt followed, ranks it low, so the reward model learns to check the prompt
    (on world v2 the plain tasks follow their prompts too uniformly to teach it, and ReFL traded
    prompt following for the preferred style)."""
    augmented_tasks: int = 0
    """Extra train tasks (and ``heldout_tasks`` held-out ones) made without sampling: a plain
    task's first image and three copies washed toward white by random amounts (0-95 %), ranked by
    the labeler like any task. They show the reward model where "paler" stops being better (the
    objects fade and prompt following falls), so it does not reward washing an image out."""
    rm_epochs: int = 60
    """The reward model's training epochs (early-stopped on its validation split)."""
    work: Path = Path(f"runs/direct_miniature_{WORLD_VERSION}")
    """Tasks, labels and the reward model (reused when present; one folder per world version, so
    a reward model trained on another world's images is never reused)."""
    diagnose_train: int = 3
    """``--stage diagnose``: train a reward model for this many preferences (0: variances only)."""
    seed: int = 0
    """The ReFL run's seed (the labels and reward model use seed 0)."""
    direct: DirectConfig = field(default_factory=lambda: MINIATURE)
    """Every option of agents/direct/config.py, as --direct.OPTION."""
    out: Path = Path("benchmarks/results/direct")


def _suffix(cfg: MiniatureConfig) -> str:
    """The reward model's name after the preference: which extra (styled) tasks it saw."""
    suffix = f"-train{cfg.train_tasks}" if cfg.train_tasks != 300 else ""
    if cfg.styled_tasks:
        suffix += f"-styled{cfg.styled_tasks}"
        suffix += f"x{cfg.styled_per_task}" if cfg.styled_per_task != 1 else ""
        suffix += f"-{cfg.styled_modifier}" if cfg.styled_modifier else ""
    if cfg.augmented_tasks:
        suffix += f"-washed{cfg.augmented_tasks}"
    if cfg.mismatched_tasks:
        suffix += f"-mismatched{cfg.mismatched_tasks}"
    return suffix


def _task_sets(cfg: MiniatureConfig) -> dict[str, list[Any]]:
    """Make (or reuse) every task split the reward model needs: plain train and held-out tasks,
    and the styled train and held-out tasks when asked for."""
    from diffenvs.preference import make_tasks, read_sets

    mod = f"_{cfg.styled_modifier}" if cfg.styled_modifier else ""
    per = f"x{cfg.styled_per_task}" if cfg.styled_per_task != 1 else ""
    # (name, folder, prompt split, tasks, seed, styled / mismatched images per task, id prefix)
    splits = [
        ("train", "tasks_train", "train", cfg.train_tasks, 0, 0, 0, "t"),
        ("heldout", "tasks_heldout", "heldout", cfg.heldout_tasks, 1, 0, 0, "h"),
    ]
    if cfg.styled_tasks:
        splits.append(
            ("train_styled", f"tasks_train_styled{per}{mod}", "train", cfg.styled_tasks, 2,
             cfg.styled_per_task, 0, "s")
        )  # fmt: skip
    if cfg.heldout_styled_tasks:
        splits.append(
            ("heldout_styled", f"tasks_heldout_styled{per}{mod}", "heldout",
             cfg.heldout_styled_tasks, 3, max(1, cfg.styled_per_task), 0, "v")
        )  # fmt: skip
    if cfg.mismatched_tasks:
        splits += [
            ("train_mismatched", "tasks_train_mismatched", "train", cfg.mismatched_tasks, 6, 0,
             1, "m"),
            ("heldout_mismatched", "tasks_heldout_mismatched", "heldout", cfg.heldout_tasks, 7,
             0, 1, "n"),
        ]  # fmt: skip
    sets = {}
    for name, folder, split, n, seed, styled, mismatched, prefix in splits:
        tasks_dir = cfg.work / folder
        if (tasks_dir / "tasks.jsonl").is_file() and len(read_sets(tasks_dir)) == n:
            sets[name] = read_sets(tasks_dir)
            continue
        sets[name] = make_tasks(
            tasks_dir,
            n,
            split=split,
            num_inference_steps=10,
            eta=1.0,
            prompts="counts",
            seed=seed,
            id_prefix=prefix,
            styled=styled,
            styles=(cfg.styled_modifier,) if styled and cfg.styled_modifier else None,
            mismatched=mismatched,
        )
    if cfg.augmented_tasks:
        from diffenvs.preference import read_sets

        for name, src, n, seed, prefix in (
            ("train_washed", "train", cfg.augmented_tasks, 4, "w"),
            ("heldout_washed", "heldout", cfg.heldout_tasks, 5, "x"),
        ):
            folder = cfg.work / f"tasks_{name}{n}"
            if (folder / "tasks.jsonl").is_file():
                sets[name] = read_sets(folder)
            else:
                source = [sets[src][i % len(sets[src])] for i in range(n)]
                sets[name] = washed_tasks(source, folder, seed, prefix)
    return sets


def washed_tasks(sets: list[Any], out: Path, seed: int, prefix: str) -> list[Any]:
    """Tasks of one plain image and three copies blended toward white (amounts drawn from
    U(0, 0.95), the white a random light grey to white); written like :func:`make_tasks` writes."""
    from PIL import Image

    from diffenvs.preference import RankedSet, write_sets

    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    tasks = []
    for i, task in enumerate(sets):
        image = task.load_images()[0].astype(np.float64)
        amounts = [0.0, *rng.uniform(0.0, 0.95, size=3)]
        paths = []
        for k, a in enumerate(amounts):
            white = rng.uniform(0.85, 1.0) * 255.0
            washed = np.clip((1 - a) * image + a * white, 0, 255).round().astype(np.uint8)
            rel = f"images/{prefix}{i:04d}_{k}.png"
            Image.fromarray(washed).save(out / rel)
            paths.append(rel)
        tasks.append(RankedSet(f"{prefix}{i:04d}", task.prompt, paths, root=out))
    write_sets(out / "tasks.jsonl", tasks)
    return tasks


def reward_model(cfg: MiniatureConfig) -> Path:
    """Make (or reuse) the labelled tasks and the clip-mlp reward model; returns its folder."""
    from diffenvs.preference import (
        SyntheticLabeler,
        TrainRewardConfig,
        load_reward_model,
        preference_accuracy,
        train_reward_model,
        write_sets,
    )

    suffix = _suffix(cfg)
    folder = cfg.work / f"{cfg.preference}-clip-mlp{suffix}"
    if (folder / "reward_model.json").is_file():
        return folder
    t0 = time.perf_counter()
    sets = _task_sets(cfg)
    labeler = SyntheticLabeler(cfg.preference, seed=0)
    labelled = {name: [labeler.rank(t) for t in tasks] for name, tasks in sets.items()}
    extra = ("train_styled", "train_washed", "train_mismatched")
    train_sets = labelled["train"] + [t for name in extra for t in labelled.get(name, [])]
    # One labels file per labeler (preference), so labelling for another never overwrites it.
    train_labels = cfg.work / f"labels_{cfg.preference}_train{suffix}.jsonl"
    heldout_labels = cfg.work / f"labels_{cfg.preference}_heldout{suffix}.jsonl"
    write_sets(train_labels, train_sets)
    heldout = ("heldout", "heldout_styled", "heldout_washed", "heldout_mismatched")
    write_sets(heldout_labels, [t for name in heldout for t in labelled.get(name, [])])
    result = train_reward_model(
        TrainRewardConfig(
            train_labels,
            folder,
            model="clip-mlp",
            heldout_labels=heldout_labels,
            images_root=None,
            epochs=cfg.rm_epochs,
        )
    )
    model = load_reward_model(folder)
    split_accuracy = {}
    for name in heldout:
        if name not in labelled:
            continue
        hits = []
        for t in labelled[name]:
            if t.pairs():
                scores = model.score(t.load_images(), [t.prompt] * len(t.images)).numpy()
                hits.append((preference_accuracy(scores, t.pairs()), len(t.pairs())))
        split_accuracy[name] = {
            "accuracy": sum(a * n for a, n in hits) / max(1, sum(n for _, n in hits)),
            "pairs": sum(n for _, n in hits),
        }
    summary = {
        "heldout_accuracy": result["heldout_accuracy"],
        "val_accuracy": result["val_accuracy"],
        "split_accuracy": split_accuracy,
        "minutes": (time.perf_counter() - t0) / 60,
        "train_tasks": cfg.train_tasks,
        "heldout_tasks": cfg.heldout_tasks,
        "styled_tasks": cfg.styled_tasks,
        "styled_per_task": cfg.styled_per_task,
        "heldout_styled_tasks": cfg.heldout_styled_tasks,
        "augmented_tasks": cfg.augmented_tasks,
        "mismatched_tasks": cfg.mismatched_tasks,
        "styled_modifier": cfg.styled_modifier,
        "preference": cfg.preference,
        "world_version": WORLD_VERSION,
        "folder": str(folder),
    }
    write_json(folder / "miniature_reward_model.json", summary)
    write_json(cfg.out / f"reward_model_{folder.name}.json", summary)
    print(summary)
    return folder


def diagnose(cfg: MiniatureConfig) -> dict[str, Any]:
    """Which preference can a clip-mlp reward model learn from these tasks? (cheap: no sampling)

    On the existing train/held-out task images (made by the sampler ReFL trains), for every style
    modifier the labeler could prefer: the mean oracle P(modifier), the within-task variance of
    P(modifier) against that of prompt following (the labeler's utility is their sum), and, for
    ``--diagnose-train`` of them (the most within-task variance first), the held-out pair accuracy
    of a clip-mlp reward model trained on that labeler's rankings.
    """
    from diffenvs.preference import (
        SyntheticLabeler,
        TrainRewardConfig,
        read_sets,
        train_reward_model,
        write_sets,
    )
    from diffenvs.rewards import OracleReward
    from diffenvs.world.attributes import MODIFIERS

    missing = [
        n for n in ("train", "heldout") if not (cfg.work / f"tasks_{n}/tasks.jsonl").is_file()
    ]
    if missing:
        raise SystemExit(
            f"--stage diagnose reads existing tasks; {cfg.work}/tasks_{missing[0]} has none. Make "
            "them first: python benchmarks/direct_miniature.py --stage reward-model"
        )
    sets = {n: read_sets(cfg.work / f"tasks_{n}") for n in ("train", "heldout")}
    images = {n: [t.load_images() for t in ts] for n, ts in sets.items()}
    follow = OracleReward(soft=True)

    def per_task(reward: OracleReward) -> np.ndarray:
        return np.stack(
            [
                reward.evaluate(im, [t.prompt] * len(im)).rewards.detach().double().numpy()
                for t, im in zip(sets["train"], images["train"], strict=True)
            ]
        )

    f = per_task(follow)
    rows = []
    for m in MODIFIERS:
        p = per_task(OracleReward(target=m, soft=True))
        u = p + f
        rows.append(
            {
                "preference": m,
                "mean_p": float(p.mean()),
                "within_var_preference": float(p.var(axis=1).mean()),
                "within_var_following": float(f.var(axis=1).mean()),
                "within_var_utility": float(u.var(axis=1).mean()),
                "share_preference": float(p.var(axis=1).mean() / max(u.var(axis=1).mean(), 1e-12)),
            }
        )
    rows.sort(key=lambda r: -r["within_var_preference"])
    for r in rows[: cfg.diagnose_train]:
        folder = cfg.work / f"diag-{r['preference']}"
        labeler = SyntheticLabeler(r["preference"], seed=0)
        for n, ts in sets.items():
            labelled = [labeler.rank(t, im) for t, im in zip(ts, images[n], strict=True)]
            write_sets(folder / f"labels_{n}.jsonl", labelled)
        res = train_reward_model(
            TrainRewardConfig(
                folder / "labels_train.jsonl",
                folder / "rm",
                model="clip-mlp",
                heldout_labels=folder / "labels_heldout.jsonl",
            )
        )
        r["heldout_accuracy"] = res["heldout_accuracy"]
        r["val_accuracy"] = res["val_accuracy"]
        print(r)
    out = {"train_tasks": len(sets["train"]), "heldout_tasks": len(sets["heldout"]), "rows": rows}
    write_json(cfg.out / "diagnose.json", out)
    for r in rows:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    return out


def win_rate(before: np.ndarray, after: np.ndarray) -> float:
    """Share of pairs where the after-utility beats the before-utility (ties count half)."""
    return float(np.mean(np.where(after > before, 1.0, np.where(after == before, 0.5, 0.0))))


def refl(cfg: MiniatureConfig, rm: Path) -> dict[str, Any]:
    """One ReFL run against the reward model, judged by the labeler's ground truth and the judge."""
    from agents.direct.train import train
    from diffenvs.preference import SyntheticLabeler

    run = replace(
        cfg.direct,
        reward=f"learned:{rm}",
        seed=cfg.seed,
        run_name=cfg.direct.run_name or f"refl_{cfg.preference}_seed{cfg.seed}",
    )
    t0 = time.perf_counter()
    result = train(run)
    minutes = (time.perf_counter() - t0) / 60
    ev = result["eval_results"]
    prompts = ev["prompts"]
    labeler = SyntheticLabeler(cfg.preference, noise=0.0, seed=0)
    u_before = labeler.utility(ev["before"]["images"], prompts)
    u_after = labeler.utility(ev["after"]["images"], prompts)
    preferred = SyntheticLabeler(cfg.preference, follow_prompt=0.0, noise=0.0)
    b, a = ev["before"], ev["after"]
    out = {
        "win_rate": win_rate(u_before, u_after),
        "utility_before": float(u_before.mean()),
        "utility_after": float(u_after.mean()),
        "preferred_prob_before": float(preferred.utility(b["images"], prompts).mean()),
        "preferred_prob_after": float(preferred.utility(a["images"], prompts).mean()),
        "reward_model_before": float(b["rewards"].mean()),
        "reward_model_after": float(a["rewards"].mean()),
        "judge_following_before": float(np.mean(b.get("judge_accuracy", np.nan))),
        "judge_following_after": float(np.mean(a.get("judge_accuracy", np.nan))),
        "oracle_following_before": float(np.mean(b["accuracy"])),
        "oracle_following_after": float(np.mean(a["accuracy"])),
        "held_out_images": len(prompts),
        "utility_per_image": {"before": u_before.tolist(), "after": u_after.tolist()},
        "minutes": minutes,
        "update_s_mean": float(np.mean([h["update_s"] for h in result["history"]])),
        "peak_mem_mb": result["eval"]["peak_mem_mb"],
        "run_dir": result["run_dir"],
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "config": asdict(run),
    }
    out["judge_change_points"] = 100 * (
        out["judge_following_after"] - out["judge_following_before"]
    )
    out["oracle_change_points"] = 100 * (
        out["oracle_following_after"] - out["oracle_following_before"]
    )
    return out


def direct_options_in_argv(argv: list[str]) -> tuple[str, ...]:
    """The ReFL options a command line names as ``--direct.OPTION``: they win over the preset
    even where their value equals DirectConfig's default (``--direct.kl-coef 0``)."""
    prefix = "--direct."
    return options_in_argv(
        ["--" + a[len(prefix) :] for a in argv if a.startswith(prefix)], DirectConfig
    )


def main(cfg: MiniatureConfig) -> None:
    import torch

    torch.set_num_threads(1)
    if cfg.stage == "diagnose":
        diagnose(cfg)
        return
    rm = reward_model(cfg)
    if cfg.stage == "reward-model":
        return
    out = refl(cfg, rm)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / f"miniature_{cfg.preference}_seed{cfg.seed}.json", out)
    keys = (
        "win_rate",
        "judge_change_points",
        "oracle_change_points",
        "utility_before",
        "utility_after",
        "reward_model_before",
        "reward_model_after",
        "minutes",
    )
    print({k: out[k] for k in keys})


if __name__ == "__main__":
    cli = tyro.cli(MiniatureConfig)
    explicit = direct_options_in_argv(sys.argv[1:])
    main(replace(cli, direct=replace(cli.direct, explicit=cli.direct.explicit + explicit)))
