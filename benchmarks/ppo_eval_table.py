"""One markdown table row per diffusion-PPO run folder: the held-out reward before and after, the
rise in base standard deviations, and prompt following as the world oracle and the independent
judge read the same evaluation images (eval_before.npz / eval_after.npz of the run).

    python benchmarks/ppo_eval_table.py --runs runs/a runs/b --attributes scene shape colour

The judge never enters training (diffenvs/world/judge.py): where the oracle's and the judge's
readings disagree, the policy is drawing what one classifier responds to, not the attribute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro


@dataclass
class Args:
    runs: tuple[str, ...]
    """Run folders written by agents.ppo (eval.json, eval_*.npz, config.json)."""
    attributes: tuple[str, ...] = ("scene", "shape", "colour")
    """Prompt attributes to report per classifier (accuracy against the prompt)."""
    judge: bool = True
    """Also read the images with the shipped judge (skipped with a note when none is shipped)."""


def _prompts(run: Path, n: int) -> list[str]:
    cfg = json.loads((run / "config.json").read_text())
    spec = str(cfg.get("eval_prompts", ""))
    if not spec.startswith("prompt:"):
        raise ValueError(
            f"{run}: eval_prompts is {spec!r}; this table reads single-prompt runs "
            "(eval_prompts 'prompt:...'), e.g. --preset target-image."
        )
    return [spec[len("prompt:") :]] * n


def judge_following(
    images: np.ndarray, prompts: list[str], attributes: tuple[str, ...]
) -> dict[str, float]:
    """Fraction of images whose judge reading matches the prompt, per attribute and overall."""
    from diffenvs.models import load_judge
    from diffenvs.rewards.pretrained import parse_attribute_target

    judge = load_judge()
    pred = judge.predict(images)
    wanted = [dict(parse_attribute_target(p)) for p in prompts]
    out: dict[str, float] = {}
    hits_all = []
    for i, want in enumerate(wanted):
        hits_all.append(np.mean([pred[a][i] == k for a, k in want.items()]))
    out["accuracy"] = float(np.mean(hits_all))
    for a in attributes:
        out[a] = float(np.mean([pred[a][i] == w[a] for i, w in enumerate(wanted) if a in w]))
    return out


def row(run: Path, attributes: tuple[str, ...], judge: bool) -> str:
    ev = json.loads((run / "eval.json").read_text())
    b, a = ev["before"], ev["after"]
    rise = (a["reward_mean"] - b["reward_mean"]) / b["reward_std"]
    cells = [
        run.name,
        f"{b['reward_mean']:.2f} ± {b['reward_std']:.2f}",
        f"{a['reward_mean']:.2f} ± {a['reward_std']:.2f}",
        f"**{rise:+.1f}**",
    ]
    for attr in attributes:
        cells.append(f"{100 * b[f'oracle_{attr}']:.0f} → {100 * a[f'oracle_{attr}']:.0f} %")
    if judge:
        read = []
        for side in ("before", "after"):
            images = np.load(run / f"eval_{side}.npz")["images"]
            read.append(judge_following(images, _prompts(run, len(images)), attributes))
        for attr in (*attributes, "accuracy"):
            cells.append(f"{100 * read[0][attr]:.0f} → {100 * read[1][attr]:.0f} %")
    return "| " + " | ".join(cells) + " |"


def main(args: Args) -> None:
    head = ["run", "base reward (mean ± std)", "after", "rise in base std"]
    head += [f"oracle: {a}" for a in args.attributes]
    if args.judge:
        head += [f"judge: {a}" for a in args.attributes] + ["judge: all attributes"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for run in args.runs:
        print(row(Path(run), args.attributes, args.judge))


if __name__ == "__main__":
    main(tyro.cli(Args))
