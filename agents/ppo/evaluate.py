"""Evaluation of the diffusion-policy PPO agent and its figures.

* :func:`evaluate`: terminal rewards (and oracle accuracy) on fixed held-out prompts, seeds and
  noise, so the evaluations before and after training see the same samples.
* :func:`eval_summary`: the reward's mean and spread, and :func:`image_diversity` (how much the
  images of different prompts differ); :func:`collapse_check` warns when fine-tuning has made
  every prompt's image alike (mode collapse).
* Plots: before/after image grids, reward histograms (Kristiansen & Vågen 2023, Figs 6.6 and
  6.10), reward/KL curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.ppo.policy import DiffusionActorCritic
from agents.ppo.rollout import run_episodes

if TYPE_CHECKING:
    from agents.ppo.config import PPOConfig

# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model: DiffusionActorCritic,
    envs: Any,
    prompts: list[str],
    seed: int,
    accelerator: Any,
    oracle: Any = None,
) -> dict[str, np.ndarray]:
    """Terminal rewards (and oracle accuracy) of the policy on fixed prompts, seeds and noise.

    Env batch c uses env seed ``seed + c * num_envs`` and noise seed ``seed + c``, so two calls
    (before and after training) see the same x_T and the same step noise. Batches are shared out
    over processes and gathered.
    """
    from accelerate.utils import gather_object

    n, per = len(prompts), envs.num_envs
    rows: list[tuple[int, float, float, np.ndarray]] = []
    for c in range(accelerator.process_index, math.ceil(n / per), accelerator.num_processes):
        chunk = prompts[c * per : (c + 1) * per]
        padded = chunk + [chunk[-1]] * (per - len(chunk))
        out = run_episodes(model, envs, padded, seed + c * per, seed + c, accelerator.autocast)
        acc = np.full(per, np.nan)
        if oracle is not None:
            acc = oracle.evaluate(out["images"], padded).details["accuracy"].cpu().numpy()
        for i in range(len(chunk)):
            rows.append((c * per + i, float(out["rewards"][i]), float(acc[i]), out["images"][i]))
    rows = sorted(gather_object(rows), key=lambda r: r[0])
    result = {
        "rewards": np.array([r[1] for r in rows]),
        "accuracy": np.array([r[2] for r in rows]),
        "images": np.stack([r[3] for r in rows]),
    }
    if oracle is not None:
        result |= attribute_accuracy(oracle.oracle, result["images"], prompts[: len(rows)])
    return result


def attribute_accuracy(oracle: Any, images: np.ndarray, prompts: Sequence[str]) -> dict:
    """``acc_<attribute>``: per image, 1/0 where its prompt names the attribute, NaN elsewhere.

    Prompt following broken down by attribute (e.g. how often the count is right), which is what
    the prompt-alignment experiment is judged on.
    """
    from diffenvs.rewards import parse_attribute_target
    from diffenvs.world.attributes import ATTRIBUTES

    predicted = oracle.predict(images)
    out = {f"acc_{a}": np.full(len(images), np.nan) for a in ATTRIBUTES}
    for i, prompt in enumerate(prompts):
        for attribute, index in parse_attribute_target(prompt):
            out[f"acc_{attribute}"][i] = float(predicted[attribute][i] == index)
    return out


def evaluate_base(
    policy: DiffusionActorCritic,
    envs: Any,
    prompts: list[str],
    cfg: PPOConfig,
    accelerator: Any,
    oracle: Any,
    run_dir: Path,
) -> dict[str, np.ndarray] | None:
    """The base model's evaluation: run (and saved) on a fresh run, reloaded on a resumed one."""
    before = None
    before_file = run_dir / "eval_before.npz"
    if cfg.resume and before_file.exists():
        with np.load(before_file) as f:
            before = {k: f[k] for k in f.files}
    elif cfg.resume:
        # The base model is gone once training has started: no honest "before" to compare.
        print(f"warning: {before_file} is missing, so this resumed run has no before/after.")
    else:
        before = evaluate(policy, envs, prompts, cfg.eval_seed, accelerator, oracle)
        if accelerator.is_main_process and cfg.save:
            run_dir.mkdir(parents=True, exist_ok=True)
            np.savez(before_file, **before)
    return before


def image_diversity(images: np.ndarray, prompts: Sequence[str] | None = None) -> float:
    """Mean RMS pixel distance (pixels in [0, 1]) between images of different prompts.

    With fewer than two distinct prompts (or none given) every pair of images counts. A model
    that draws the same picture whatever the prompt scores near 0.
    """
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0) / x.shape[1]
    pairs = ~np.eye(len(x), dtype=bool)
    if prompts is not None and len(set(prompts[: len(x)])) > 1:
        p = np.asarray(list(prompts[: len(x)]), dtype=object)
        pairs &= p[:, None] != p[None, :]
    return float(np.sqrt(d2[pairs]).mean()) if pairs.any() else float("nan")


def eval_summary(
    result: dict[str, np.ndarray], prompts: Sequence[str] | None = None
) -> dict[str, float]:
    """Reward mean and spread (std, 10th/90th percentiles, min, max), oracle accuracies and the
    prompt-to-prompt :func:`image_diversity` of one evaluation."""
    r, acc = result["rewards"], result["accuracy"]
    out = {"reward_mean": float(r.mean()), "reward_std": float(r.std()), "n": float(len(r))}
    p10, p90 = np.percentile(r, [10, 90])
    out |= {"reward_p10": float(p10), "reward_p90": float(p90)}
    out |= {"reward_min": float(r.min()), "reward_max": float(r.max())}
    out["diversity"] = image_diversity(result["images"], prompts)
    if not np.isnan(acc).all():
        out["oracle_accuracy"] = float(np.nanmean(acc))
    for key, values in result.items():
        if key.startswith("acc_") and not np.isnan(values).all():
            out[f"oracle_{key[4:]}"] = float(np.nanmean(values))
    return out


def collapse_check(
    before: dict[str, float], after: dict[str, float], warn: bool = True, threshold: float = 0.5
) -> dict[str, Any]:
    """``diversity_ratio`` (after / before) and ``collapsed`` (ratio below ``threshold``).

    With ``warn`` a collapse is announced loudly on stderr: the fine-tuned model's images no
    longer differ between prompts as the base model's did, whatever the reward says.
    """
    ratio = after.get("diversity", float("nan")) / before.get("diversity", float("nan"))
    collapsed = bool(np.isfinite(ratio) and ratio < threshold)
    if collapsed and warn:
        import sys
        import warnings

        message = (
            f"MODE COLLAPSE: the fine-tuned model's images differ between prompts only "
            f"{ratio:.0%} as much as the base model's (diversity {after['diversity']:.4f} vs "
            f"{before['diversity']:.4f}, threshold {threshold:.0%}). Look at samples.png; lower "
            "the learning rate, tighten clip_range or target_kl, or add a KL term."
        )
        bar = "!" * 78
        print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return {"diversity_ratio": float(ratio), "collapsed": collapsed}


def save_eval_report(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    summary: dict[str, Any],
    run_dir: Path,
    grid: int,
    reward: str,
    agent: str = "PPO",
) -> None:
    """``samples.png`` (the first ``grid`` images), ``reward_hist.png`` and ``eval.json``
    (``agent`` names the fine-tuned model in the figures)."""
    from diffenvs.io import write_json

    save_before_after(
        before["images"][:grid], after["images"][:grid], run_dir / "samples.png", agent=agent
    )
    save_reward_histogram(
        before["rewards"], after["rewards"], run_dir / "reward_hist.png", reward, agent=agent
    )
    write_json(run_dir / "eval.json", summary)


# --------------------------------------------------------------------------------------------
# Plots


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def image_grid(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """uint8 images (N, H, W, 3) tiled in a white-padded grid."""
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return grid


def save_before_after(
    before: np.ndarray,
    after: np.ndarray,
    path: Path,
    cols: int = 8,
    scale: int = 3,
    agent: str = "PPO",
) -> None:
    """Two grids side by side (same prompts and seeds), as Kristiansen & Vågen 2023, Figs 6.4, 6.8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [image_grid(imgs, cols) for imgs in (before, after)]
    height, width = grids[0].shape[:2]
    # Size the figure from the grids so the images fill it at ``scale`` screen pixels per pixel.
    fig, axes = plt.subplots(
        1, 2, figsize=(2 * width * scale / 100 + 0.2, height * scale / 100 + 0.4)
    )
    for ax, grid, title in zip(axes, grids, ("base model", f"after {agent}"), strict=True):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    _save_figure(fig, path)


def save_reward_histogram(
    before: Sequence[float],
    after: Sequence[float],
    path: Path,
    label: str = "reward",
    agent: str = "PPO",
) -> None:
    """Reward distributions before vs after, standardised by the base distribution (Fig. 6.6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    mu, sd = b.mean(), b.std() if b.std() > 0 else 1.0
    zb, za = (b - mu) / sd, (a - mu) / sd
    bins = np.linspace(min(zb.min(), za.min()), max(zb.max(), za.max()) + 1e-9, 30)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(zb, bins=bins, alpha=0.6, label=f"base (mean {b.mean():.3g})")
    ax.hist(za, bins=bins, alpha=0.6, label=f"after {agent} (mean {a.mean():.3g})")
    ax.set_xlabel(f"{label}, standardised by the base distribution")
    ax.set_ylabel("samples")
    ax.legend()
    _save_figure(fig, path)


def save_curves(history: list[dict[str, float]], path: Path) -> None:
    """Mean rollout reward, KL and β per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    x = [h["update"] for h in history]
    keys = [("reward_mean", "mean rollout reward (raw)"), ("kl", "KL to base (k3, per image)")]
    keys.append(("beta", "KL coefficient β"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, (key, title) in zip(axes, keys, strict=True):
        ax.plot(x, [h.get(key, float("nan")) for h in history])
        ax.set_title(title)
        ax.set_xlabel("update")
    _save_figure(fig, path)
