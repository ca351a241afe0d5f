"""Comparison tasks from the text-to-image model: one prompt, several samples (different seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from diffenvs.label.tasks import MAX_IMAGES, MIN_IMAGES
from diffenvs.preference.data import RankedSet, write_sets


def make_tasks(
    out: str | Path,
    n_tasks: int,
    *,
    images_per_task: int = 4,
    split: str = "train",
    modifier_prob: float = 0.45,
    model: str = "world",
    num_inference_steps: int = 20,
    guidance_scale: float = 4.0,
    eta: float = 0.0,
    prompts: str = "world",
    seed: int = 0,
    id_prefix: str = "t",
    mismatched: int = 0,
    styled: int = 0,
    styles: tuple[str, ...] | None = None,
) -> list[RankedSet]:
    """Write ``out/tasks.jsonl`` and ``out/images/*.png``: ``n_tasks`` world prompts of ``split``
    (``train``/``heldout``), each sampled ``images_per_task`` times. Returns the tasks.

    ``prompts="counts"`` draws the modifier-free count captions the PPO agent trains on, and
    ``eta > 0`` samples with DDIM noise: tasks made with the rollout sampler's settings give a
    reward model that sees what the policy will produce (Kristiansen & Vågen 2023 label the policy's own samples).

    ``mismatched`` of each task's images are drawn from the prompt with one attribute changed
    (count, shape, colour, position or scene) while the task still shows the original prompt: a
    labeler who wants the prompt followed ranks them low, so the reward model learns to check the
    prompt instead of only the preferred style (a policy that drifts off the prompt is then
    penalised, not just one that loses the style).

    ``styled`` of each task's images are drawn from the prompt with a random style modifier
    appended (one of the eight, from a category the prompt does not use), again under the
    original prompt: more varied candidates, as a labeler rating an exploring policy would see, so
    the reward model meets every style (the preferred one included) on every kind of prompt.
    ``styles`` restricts the appended modifier to these (default: any of the eight).
    """
    from diffenvs.envs.denoise_prompts import WorldPrompts
    from diffenvs.generate import ImageGenerator

    if n_tasks < 1 or not MIN_IMAGES <= images_per_task <= MAX_IMAGES:
        raise ValueError(
            f"Need n_tasks >= 1 and {MIN_IMAGES} <= images_per_task <= {MAX_IMAGES} "
            f"(got {n_tasks}, {images_per_task})."
        )
    if mismatched < 0 or styled < 0 or mismatched + styled >= images_per_task:
        raise ValueError(
            f"mismatched + styled must be in 0..{images_per_task - 1} (at least one image per task "
            f"must be drawn from the task's own prompt); got {mismatched} + {styled}."
        )
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if prompts == "counts":
        from diffenvs.envs.denoise_prompts import count_prompts

        pool = count_prompts(split, n=max(64, n_tasks), seed=seed)
        captions = [pool[i % len(pool)] for i in range(n_tasks)]
    elif prompts == "world":
        source = WorldPrompts(split, modifier_prob)
        captions = [source.sample(rng) for _ in range(n_tasks)]
    else:
        raise ValueError(f"prompts must be 'world' or 'counts', got {prompts!r}.")
    gen = ImageGenerator(
        model, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, eta=eta
    )
    flat_prompts = [p for p in captions for _ in range(images_per_task)]
    seeds = [int(s) for s in rng.integers(2**31 - 1, size=len(flat_prompts))]
    if mismatched or styled:
        # A separate stream, so tasks without varied images keep theirs.
        vary_rng = np.random.default_rng([seed, 1])
        for t, prompt in enumerate(captions):
            picks = vary_rng.choice(images_per_task, size=mismatched + styled, replace=False)
            for j, k in enumerate(picks):
                change = "attribute" if j < mismatched else "style"
                flat_prompts[t * images_per_task + int(k)] = varied_prompt(
                    prompt, change, vary_rng, styles
                )
    images = gen.images(flat_prompts, seeds)
    tasks = []
    for t, prompt in enumerate(captions):
        task_id = f"{id_prefix}{t:04d}"
        paths = []
        for k in range(images_per_task):
            rel = f"images/{task_id}_{k}.png"
            Image.fromarray(images[t * images_per_task + k]).save(out / rel)
            paths.append(rel)
        tasks.append(RankedSet(task_id, prompt, paths, root=out))
    write_sets(out / "tasks.jsonl", tasks)
    return tasks


def varied_prompt(
    prompt: str, change: str, rng: np.random.Generator, styles: tuple[str, ...] | None = None
) -> str:
    """A world caption with one attribute changed (``"attribute"``: count, shape, colour, position
    or scene) or with a random style modifier of an unused category appended (``"style"``; one of
    ``styles`` when given)."""
    from diffenvs.label.demo import perturb
    from diffenvs.world.attributes import MODIFIER_CATEGORY, MODIFIERS
    from diffenvs.world.render import parse_prompt, scene_from_prompt

    missing = {"count", "size", "colour", "shape", "position", "scene"} - set(parse_prompt(prompt))
    if missing:
        raise ValueError(
            f"Cannot vary {prompt!r}: it does not name the world attributes {sorted(missing)}; "
            "use world or count captions."
        )
    scene = scene_from_prompt(prompt)
    if change == "attribute":
        return perturb(scene, 1, rng).caption()
    used = {MODIFIER_CATEGORY[m] for m in scene.modifiers}
    unknown = sorted(set(styles or ()) - set(MODIFIERS))
    if unknown:
        raise ValueError(f"Unknown style modifiers {unknown}; choose from {list(MODIFIERS)}.")
    options = [m for m in (styles or MODIFIERS) if MODIFIER_CATEGORY[m] not in used]
    if not options:
        return scene.caption()
    return scene.with_(modifiers=(*scene.modifiers, str(rng.choice(options)))).caption()
