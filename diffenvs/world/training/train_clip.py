"""Train the world's CLIP contrastively on rendered (image, caption) pairs, with hard negatives.

Each image also gets a caption with exactly one attribute changed as an extra negative text, which
teaches the fine-grained distinctions (count, modifiers) that plain in-batch negatives rarely show.

    python -m diffenvs.world.training.train_clip --steps 1500
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from tqdm import tqdm

from diffenvs.io import load_tensors, save_tensors
from diffenvs.world.attributes import ATTRIBUTE_CLASSES, MODIFIER_CATEGORIES
from diffenvs.world.clip_architecture import OPENAI_MEAN, OPENAI_STD, create_world_clip
from diffenvs.world.data import make_dataset
from diffenvs.world.oracle import as_image_tensor
from diffenvs.world.paths import WEIGHTS_DIR
from diffenvs.world.render import Scene, sample_scenes


@dataclass
class Config:
    train_size: int = 40_000
    steps: int = 1_500
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1
    out: Path = WEIGHTS_DIR / "clip"
    init_from: Path | None = None
    """Continue from the ``open_clip_model.safetensors`` of this folder instead of random weights."""
    focus: tuple[str, ...] = ()
    """Attributes to draw half of the hard negatives from (e.g. ``shape position``): the ones a
    first run left weakest."""
    aux_weight: float = 0.0
    """Weight of an auxiliary attribute-classification loss on both towers' embeddings (0 = off).

    One linear head per attribute is shared by the two towers, so an attribute must be encoded
    along the same direction in image and text embeddings, which is what zero-shot comparison
    needs. Contrastive batches alone rarely contrast captions that differ only in, say, position,
    and a first CLIP left position at chance. The heads are discarded after training."""


def one_attribute_changed(
    scene: Scene, rng: np.random.Generator, focus: tuple[str, ...] = ()
) -> Scene:
    """The same scene with one attribute (or one modifier slot) set to another value.

    With ``focus``, half of the time the attribute is drawn from ``focus`` only.
    """
    pool = list(focus) if focus and rng.random() < 0.5 else list(ATTRIBUTE_CLASSES)
    attr = str(rng.choice(pool))
    if attr in MODIFIER_CATEGORIES:
        current = scene.modifier_in(attr)
        choices = [v for v in ("none", *MODIFIER_CATEGORIES[attr]) if v != current]
        new = str(rng.choice(choices))
        mods = tuple(m for m in scene.modifiers if m != current) + (() if new == "none" else (new,))
        return scene.with_(modifiers=mods)
    choices = [v for v in ATTRIBUTE_CLASSES[attr] if v != getattr(scene, attr)]
    return scene.with_(**{attr: str(rng.choice(choices))})


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def main(cfg: Config) -> None:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    train = make_dataset(cfg.train_size, seed=cfg.seed + 1, split="train")
    scenes = sample_scenes(cfg.train_size, seed=cfg.seed + 1, split="train")
    unknown = [a for a in cfg.focus if a not in ATTRIBUTE_CLASSES]
    if unknown:
        raise ValueError(
            f"--focus names unknown attributes {unknown}; use {list(ATTRIBUTE_CLASSES)}."
        )
    model, tokenizer = create_world_clip(cfg.out)
    if cfg.init_from is not None:
        model.load_state_dict(load_tensors(cfg.init_from / "open_clip_model.safetensors"))
    heads = torch.nn.ModuleDict(
        {
            a: torch.nn.Linear(model.text_projection.shape[1], len(v))
            for a, v in ATTRIBUTE_CLASSES.items()
        }
    )
    labels = torch.from_numpy(train.labels)
    params = list(model.parameters()) + (list(heads.parameters()) if cfg.aux_weight > 0 else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05
    )
    rng = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="clip", mininterval=10)
    cfg.out.mkdir(parents=True, exist_ok=True)
    log_file = (cfg.out / "progress.csv").open("w", newline="")
    log = csv.writer(log_file)
    log.writerow(["step", "loss", "minutes"])
    running = 0.0
    for step in bar:
        idx = rng.integers(0, len(train), cfg.batch_size)
        images = normalise(as_image_tensor(train.images[idx]))
        positives = [train.captions[i] for i in idx]
        negatives = [one_attribute_changed(scenes[i], rng, cfg.focus).caption() for i in idx]
        tokens = tokenizer(
            positives + negatives, padding="max_length", truncation=True, return_tensors="pt"
        ).input_ids
        model.train()
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T  # (B, 2B): true captions first, hard negatives after
        target = torch.arange(len(idx))
        loss = (
            F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(idx)].T, target)
        ) / 2
        if cfg.aux_weight > 0:
            both = torch.cat([img, txt[: len(idx)]])
            both_labels = torch.cat([labels[idx], labels[idx]])
            aux = sum(
                F.cross_entropy(heads[a](both * 8.0), both_labels[:, j])
                for j, a in enumerate(ATTRIBUTE_CLASSES)
            ) / len(ATTRIBUTE_CLASSES)
            loss = loss + cfg.aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % 50 == 0:
            log.writerow([step + 1, round(running / 50, 4), round((time.time() - start) / 60, 2)])
            log_file.flush()
            bar.set_postfix(loss=f"{running / 50:.3f}")
            running = 0.0
    log_file.close()
    save_tensors(model.state_dict(), cfg.out / "open_clip_model.safetensors")
    print(f"minutes={(time.time() - start) / 60:.1f}")


if __name__ == "__main__":
    main(tyro.cli(Config))
