"""Train a reward model from ranked sets with the Bradley-Terry loss (Kristiansen & Vågen 2023, eq. 5.1).

Each labelled task is one batch element: all (better, worse) pairs its ranking implies enter the
loss together, ``-mean log sigmoid(r(better) - r(worse))``, so a task of K images gives up to
K(K-1)/2 pairs without K(K-1)/2 times the feature cost. Tied images give no pair. The backbone is
frozen, so features are computed once and the head trains on the cache. After training, the score's
mean and std over the training images (base-model samples) are stored, and the model returns
``(r - mean) / std`` (Kristiansen & Vågen 2023, eq. 5.2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from diffenvs.preference.data import RankedSet, read_sets
from diffenvs.preference.reward_model import RewardModel, build_reward_model, preference_accuracy


def bradley_terry_loss(scores: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of ``-log sigmoid(s_i - s_j)`` for every i ranked above j (lower rank).

    ``scores`` and ``ranks`` are (K,) for one ranked set; returns 0 (with a graph) when every image
    ties.
    """
    better = ranks[:, None] < ranks[None, :]
    if not better.any():
        return scores.sum() * 0.0
    diff = scores[:, None] - scores[None, :]
    return -torch.nn.functional.logsigmoid(diff[better]).mean()


@dataclass
class TrainRewardConfig:
    """Train a preference reward model on labelled tasks (labels.jsonl)."""

    labels: Path
    """Labelled tasks (``labels.jsonl`` from the labeling app or a synthetic labeler)."""
    out: Path
    """Folder for the trained model (reward_model.json + head.safetensors)."""
    model: Literal["clip-mlp", "latent"] = "clip-mlp"
    backbone: str = "world"
    """Frozen backbone: a CLIP name for clip-mlp, a text-to-image model name for latent."""
    heldout_labels: Path | None = None
    """Labelled held-out tasks for the final preference accuracy (never trained on)."""
    images_root: Path | None = None
    """Folder the labels' image paths are relative to (default: the labels file's folder; pass
    the tasks folder for an export of `diffenvs label export` written elsewhere)."""
    epochs: int = 60
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    sets_per_batch: int = 16
    condition_dropout: float = 0.2
    """Probability of scoring a task with the empty prompt in place of its own (Kristiansen & Vågen 2023, §4)."""
    val_fraction: float = 0.15
    """Training tasks kept back for early stopping."""
    patience: int = 10
    timestep: int = 100
    """UNet timestep the latent model's encoder reads the clean latent at."""
    seed: int = 0


def _features(model: RewardModel, sets: list[RankedSet], drop: bool) -> list[torch.Tensor]:
    return [model.features(s.load_images(), [s.prompt] * len(s.images), drop) for s in sets]


def _accuracy(model: RewardModel, feats: list[torch.Tensor], sets: list[RankedSet]) -> float:
    model.head.eval()
    with torch.no_grad():
        hits = []
        for f, s in zip(feats, sets, strict=True):
            scores = model.raw_score(f).numpy()
            pairs = s.pairs()
            if pairs:
                hits.append((preference_accuracy(scores, pairs), len(pairs)))
    if not hits:
        return float("nan")
    return float(sum(a * n for a, n in hits) / sum(n for _, n in hits))


def train_reward_model(cfg: TrainRewardConfig) -> dict:
    """Train, early-stop on validation accuracy, standardise, save; returns the measurements."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    sets = read_sets(cfg.labels, need_ranks=True, images_root=cfg.images_root)
    if len(sets) < 4:
        raise ValueError(f"{cfg.labels} has {len(sets)} labelled tasks; train on at least 4.")
    order = rng.permutation(len(sets))
    n_val = max(1, round(cfg.val_fraction * len(sets)))
    val_sets = [sets[i] for i in order[:n_val]]
    train_sets = [sets[i] for i in order[n_val:]]
    model = build_reward_model(cfg.model, cfg.backbone, timestep=cfg.timestep)
    train_feats = _features(model, train_sets, False)
    train_drop = _features(model, train_sets, True) if cfg.condition_dropout > 0 else None
    val_feats = _features(model, val_sets, False)
    feature_s = time.perf_counter() - t0
    ranks = [torch.tensor(s.ranks) for s in train_sets]
    opt = torch.optim.AdamW(
        model.head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    best = (-1.0, 0, {k: v.clone() for k, v in model.head.state_dict().items()})
    history = []
    for epoch in range(cfg.epochs):
        model.head.train()
        perm = rng.permutation(len(train_sets))
        losses = []
        for b in range(0, len(perm), cfg.sets_per_batch):
            loss = torch.zeros(())
            idx = perm[b : b + cfg.sets_per_batch]
            for i in idx:
                drop = train_drop is not None and rng.random() < cfg.condition_dropout
                f = (train_drop if drop else train_feats)[i]
                loss = loss + bradley_terry_loss(model.raw_score(f), ranks[i])
            loss = loss / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val_acc = _accuracy(model, val_feats, val_sets)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_acc": val_acc})
        if val_acc > best[0]:
            best = (val_acc, epoch + 1, {k: v.clone() for k, v in model.head.state_dict().items()})
        elif epoch + 1 - best[1] >= cfg.patience:
            break
    model.head.load_state_dict(best[2])
    model.head.eval()
    with torch.no_grad():
        raw = torch.cat([model.raw_score(f) for f in train_feats])
    model.mean, model.std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
    result = {
        "kind": cfg.model,
        "train_tasks": len(train_sets),
        "val_tasks": len(val_sets),
        "best_epoch": best[1],
        "val_accuracy": best[0],
        "train_accuracy": _accuracy(model, train_feats, train_sets),
        "feature_seconds": feature_s,
        "train_seconds": time.perf_counter() - t0,
        "history": history,
    }
    if cfg.heldout_labels is not None:
        held = read_sets(cfg.heldout_labels, need_ranks=True, images_root=cfg.images_root)
        result["heldout_accuracy"] = _accuracy(model, _features(model, held, False), held)
        result["heldout_tasks"] = len(held)
    model.config |= {
        "score_mean": model.mean,
        "score_std": model.std,
        "trained_on": str(cfg.labels),
        "val_accuracy": best[0],
        **(
            {"heldout_accuracy": result["heldout_accuracy"]} if "heldout_accuracy" in result else {}
        ),
    }
    model.save(cfg.out)
    print(
        f"{cfg.model}: val accuracy {best[0]:.3f} (epoch {best[1]}), "
        + (f"held-out {result['heldout_accuracy']:.3f}, " if "heldout_accuracy" in result else "")
        + f"{result['train_seconds']:.0f} s -> {cfg.out}"
    )
    return result
