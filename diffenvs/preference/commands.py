"""The ``diffenvs preference`` commands: make tasks, label them synthetically, train a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class MakeTasks:
    """Write a tasks folder of world-model samples: N prompts, several seeds each."""

    out: Path
    """Tasks folder (tasks.jsonl + images/)."""
    n_tasks: int = 100
    images_per_task: int = 4
    split: str = "train"
    """World prompt split: 'train' or 'heldout'."""
    model: str = "world"
    num_inference_steps: int = 20
    guidance_scale: float = 4.0
    eta: float = 0.0
    """DDIM noise; 1.0 (with the PPO run's steps) samples like the RLHF rollouts."""
    prompts: str = "world"
    """'world' (captions with style modifiers) or 'counts' (the captions PPO trains on)."""
    mismatched: int = 0
    """Images per task drawn from the prompt with one attribute changed (a labeler who wants the
    prompt followed ranks them low, which teaches a reward model to check the prompt)."""
    styled: int = 0
    """Images per task drawn from the prompt with a random style modifier appended (more varied
    candidates for the labeler)."""
    seed: int = 0


@dataclass
class SyntheticLabel:
    """Rank every task of a tasks folder with an oracle-driven synthetic labeler."""

    tasks: Path
    """Tasks folder (or its tasks.jsonl)."""
    out: Path
    """Labels file to write (labels.jsonl)."""
    preference: str = "blurred"
    """What the labeler likes: any world attribute value ('blurred', 'glowing', 'red', ...)."""
    follow_prompt: float = 1.0
    """Weight of prompt following in the labeler's utility (0: only the preference counts)."""
    noise: float = 0.05
    tie_margin: float = 0.02
    seed: int = 0


def make_tasks_command(cfg: MakeTasks) -> None:
    from diffenvs.preference.tasks import make_tasks

    tasks = make_tasks(
        cfg.out,
        cfg.n_tasks,
        images_per_task=cfg.images_per_task,
        split=cfg.split,
        model=cfg.model,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale,
        eta=cfg.eta,
        prompts=cfg.prompts,
        seed=cfg.seed,
        mismatched=cfg.mismatched,
        styled=cfg.styled,
    )
    print(f"wrote {len(tasks)} tasks to {cfg.out / 'tasks.jsonl'}")


def synthetic_label_command(cfg: SyntheticLabel) -> None:
    from diffenvs.preference.data import read_sets, write_sets
    from diffenvs.preference.labelers import SyntheticLabeler

    labeler = SyntheticLabeler(
        cfg.preference,
        follow_prompt=cfg.follow_prompt,
        noise=cfg.noise,
        tie_margin=cfg.tie_margin,
        seed=cfg.seed,
    )
    sets = [labeler.rank(s) for s in read_sets(cfg.tasks)]
    write_sets(cfg.out, sets)
    print(f"labelled {len(sets)} tasks as {labeler.name} -> {cfg.out}")
