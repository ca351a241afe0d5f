"""Rendered datasets of the embedded world, cached on disk so training scripts share them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from diffenvs.world.attributes import ATTRIBUTES
from diffenvs.world.render import IMAGE_SIZE, Scene, render_with_mask, sample_scenes


def cache_dir() -> Path:
    """Where rendered datasets go: ``$DIFFENVS_CACHE`` or ``~/.cache/diffenvs``."""
    root = Path(os.environ.get("DIFFENVS_CACHE", Path.home() / ".cache" / "diffenvs"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class WorldDataset:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N, len(ATTRIBUTES)) int64, columns in ATTRIBUTES order
    captions: list[str]
    seeds: np.ndarray  # render seed of each image
    masks: np.ndarray  # (N, H, W) uint8 object coverage, 0-255

    def __len__(self) -> int:
        return len(self.captions)


def _render_one(args: tuple[Scene, int]) -> tuple[np.ndarray, np.ndarray]:
    scene, seed = args
    image, mask = render_with_mask(scene, seed, IMAGE_SIZE)
    return np.asarray(image), (mask * 255).round().astype(np.uint8)


def make_dataset(n: int, seed: int, split: str = "train", workers: int = 2) -> WorldDataset:
    """Render ``n`` scenes with captions from ``split``; cached by (n, seed, split)."""
    path = cache_dir() / f"world_v2_{split}_{n}_{seed}_{IMAGE_SIZE}.npz"
    scenes = sample_scenes(n, seed, split)
    captions = [s.caption() for s in scenes]
    labels = np.array([[s.labels()[a] for a in ATTRIBUTES] for s in scenes], np.int64)
    seeds = np.random.default_rng(seed + 7919).integers(0, 2**31 - 1, size=n)
    if path.exists():
        stored = np.load(path)
        images, masks = stored["images"], stored["masks"]
    else:
        jobs = list(zip(scenes, seeds.tolist(), strict=True))
        if workers > 1:
            with get_context("fork").Pool(workers) as pool:
                pairs = pool.map(_render_one, jobs, chunksize=256)
        else:
            pairs = [_render_one(j) for j in jobs]
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, masks=masks)
        os.replace(tmp, path)
    return WorldDataset(images=images, labels=labels, captions=captions, seeds=seeds, masks=masks)
