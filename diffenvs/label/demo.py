"""Demo labeling tasks drawn by the world's procedural renderer (no model, a second or two).

Each task has one world prompt and images that each get ``m`` attributes wrong (count, shape,
colour, position, background), with ``m`` from 0 to 3, so an attentive labeler has a clear order
with some honest ties. The number of wrong attributes per image is written next to the tasks in
``demo_truth.jsonl`` so a scripted labeler (examples/label_app.py, the tests) can answer like a
careful person and its export can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffenvs.io import atomic_write_bytes
from diffenvs.label.tasks import MAX_IMAGES, MIN_IMAGES
from diffenvs.world.attributes import COLOURS, COUNTS, POSITIONS, SCENES, SHAPES
from diffenvs.world.render import Scene, render, sample_scenes

_WRONGABLE = {
    "count": COUNTS,
    "shape": SHAPES,
    "colour": COLOURS,
    "position": POSITIONS,
    "scene": SCENES,
}


def perturb(scene: Scene, n_wrong: int, rng: np.random.Generator) -> Scene:
    """``scene`` with ``n_wrong`` different attributes changed to another value."""
    attrs = rng.choice(sorted(_WRONGABLE), size=n_wrong, replace=False)
    changes = {}
    for attr in attrs:
        options = [v for v in _WRONGABLE[str(attr)] if v != getattr(scene, str(attr))]
        changes[str(attr)] = str(rng.choice(options))
    return scene.with_(**changes)


def write_demo_tasks(
    out_dir: str | Path, n_tasks: int = 10, images_per_task: int = 4, seed: int = 0
) -> Path:
    """Write ``out_dir/tasks.jsonl``, ``out_dir/images/*.png`` and ``out_dir/demo_truth.jsonl``."""
    if n_tasks < 1:
        raise ValueError(f"--n-tasks must be at least 1, got {n_tasks}.")
    if not MIN_IMAGES <= images_per_task <= MAX_IMAGES:
        raise ValueError(
            f"--images-per-task must be in {MIN_IMAGES}..{MAX_IMAGES}, got {images_per_task}."
        )
    out = Path(out_dir)
    if (out / "tasks.jsonl").exists():
        raise FileExistsError(
            f"{out / 'tasks.jsonl'} already exists; pick an empty folder so labels stored for the "
            "old tasks keep matching their images."
        )
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, truth = [], []
    for t, scene in enumerate(sample_scenes(n_tasks, seed, split="any")):
        task_id = f"t{t:04d}"
        wrong = rng.integers(0, 4, size=images_per_task)
        wrong[rng.integers(images_per_task)] = 0  # at least one image follows the prompt
        images = []
        for k, m in enumerate(wrong):
            img = render(perturb(scene, int(m), rng), seed=seed * 100_000 + t * 100 + k)
            rel = f"images/{task_id}_{k}.png"
            img.save(out / rel)
            images.append(rel)
        lines.append({"task_id": task_id, "prompt": scene.caption(), "images": images})
        truth.append({"task_id": task_id, "wrong_attributes": [int(m) for m in wrong]})

    def jsonl(rows: list[dict[str, object]]) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in rows).encode()

    atomic_write_bytes(out / "demo_truth.jsonl", jsonl(truth))
    atomic_write_bytes(out / "tasks.jsonl", jsonl(lines))  # last: its presence means "complete"
    return out
