"""Measure the embedded world: oracle accuracy, CLIP zero-shot accuracy, and how well the
text-to-image model follows held-out prompts (judged by the oracle), plus diversity and speed.

    diffenvs world evaluate --out docs/world_metrics.json

Every number in docs/world.md comes from this command.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from diffenvs.io import write_json
from diffenvs.models import load_clip, load_oracle, load_pipeline
from diffenvs.world.attributes import ATTRIBUTE_CLASSES, ATTRIBUTES, MODIFIER_CATEGORIES
from diffenvs.world.data import make_dataset
from diffenvs.world.render import Scene, render, sample_scenes


@dataclass
class EvaluateConfig:
    """Evaluate every model of the embedded world on held-out data."""

    out: Path = Path("docs/world_metrics.json")
    """Where to write the metrics (JSON)."""
    images_dir: Path = Path("docs/images")
    """Where to write sample grids."""
    n_rendered: int = 2_000
    """Held-out rendered images for the oracle and CLIP."""
    n_prompts: int = 256
    """Held-out prompts (never training captions) for the text-to-image model."""
    steps: int = 20
    """DDIM steps for generation."""
    guidance_scales: tuple[float, ...] = (4.0,)
    """Classifier-free guidance scales to evaluate (the first is the default)."""
    seed: int = 1234
    threads: int = 2
    skip: list[str] = field(default_factory=list)
    """Parts to skip: any of oracle, clip, t2i, speed."""


def _accuracy(pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    return {a: float((pred[a] == labels[:, i]).mean()) for i, a in enumerate(ATTRIBUTES)}


def _one_changed(scene: Scene, attr: str, value: str) -> Scene:
    if attr in MODIFIER_CATEGORIES:
        mods = tuple(m for m in scene.modifiers if m not in MODIFIER_CATEGORIES[attr])
        return scene.with_(modifiers=mods + (() if value == "none" else (value,)))
    return scene.with_(**{attr: value})


@torch.no_grad()
def evaluate_clip(clip, scenes: list[Scene], images: np.ndarray) -> dict[str, object]:
    """Zero-shot accuracy per attribute, and how often the true caption beats a one-attribute edit."""
    img = torch.cat([clip.encode_images(images[i : i + 256]) for i in range(0, len(images), 256)])
    zero_shot: dict[str, float] = {}
    pair_wins, pair_total = 0, 0
    for attr in ATTRIBUTES:
        values = ATTRIBUTE_CLASSES[attr]
        correct = 0
        for k, scene in enumerate(scenes):
            texts = [_one_changed(scene, attr, v).caption() for v in values]
            txt = clip.encode_texts(texts)
            sims = txt @ img[k]
            true = scene.labels()[attr]
            correct += int(sims.argmax().item() == true)
            others = [j for j in range(len(values)) if j != true]
            pair_wins += int((sims[true] > sims[others]).sum().item())
            pair_total += len(others)
        zero_shot[attr] = correct / len(scenes)
    return {
        "zero_shot_accuracy": zero_shot,
        "true_vs_one_attribute_changed": pair_wins / pair_total,
    }


def prompt_following(oracle, scenes: list[Scene], images: np.ndarray) -> dict[str, float]:
    """Oracle accuracy of generated images against their prompts' attributes.

    ``modifier_presence`` is the share of prompted modifiers that the oracle sees in the image;
    ``modifier_false_positive`` the share of absent categories in which it sees one anyway.
    """
    pred = oracle.predict(images)
    labels = np.array([[s.labels()[a] for a in ATTRIBUTES] for s in scenes])
    acc = _accuracy(pred, labels)
    hits = total = false_pos = absent = 0
    for i, scene in enumerate(scenes):
        for cat in MODIFIER_CATEGORIES:
            want = scene.labels()[cat]
            got = int(pred[cat][i])
            if want != 0:
                total += 1
                hits += int(got == want)
            else:
                absent += 1
                false_pos += int(got != 0)
    acc["modifier_presence"] = hits / max(total, 1)
    acc["modifier_false_positive"] = false_pos / max(absent, 1)
    acc["all_six_core_attributes"] = float(
        np.mean(
            [
                all(pred[a][i] == labels[i, j] for j, a in enumerate(ATTRIBUTES[:6]))
                for i in range(len(scenes))
            ]
        )
    )
    return acc


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (FID's formula).

    tr(sqrt(S1 S2)) is computed as the trace of sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix, so
    two eigendecompositions replace a general matrix square root.
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def save_grid(images: np.ndarray, path: Path, cols: int, scale: int = 2) -> None:
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST
    ).save(path)


def generate(
    pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch: int = 32
) -> np.ndarray:
    from diffenvs.generate import ImageGenerator

    gen = ImageGenerator(pipe, num_inference_steps=steps, guidance_scale=guidance, batch_size=batch)
    out = [
        gen.images(prompts[i : i + batch], seeds[i : i + batch])
        for i in tqdm(range(0, len(prompts), batch), desc=f"generate (cfg {guidance})")
    ]
    return np.concatenate(out)


def renderer_showcase(path: Path) -> None:
    """One grid with every modifier, shape, colour and scene, plus random scenes."""
    from diffenvs.world.attributes import COLOURS, MODIFIERS, SCENES, SHAPES

    base = Scene("two", "star", "red", "large", "left", "grass field")
    rows = [
        [base] + [base.with_(modifiers=(m,)) for m in MODIFIERS],
        [Scene("three", s, "blue", "small", "right", "snow field") for s in SHAPES]
        + [Scene("one", "circle", c, "large", "middle", "desert") for c in COLOURS[:3]],
        [
            Scene("one", "triangle", c, "large", "middle", sc)
            for c, sc in zip(COLOURS, SCENES * 2, strict=False)
        ]
        + [Scene("three", "cross", "pink", "large", "middle", "brick wall")],
        sample_scenes(9, seed=0, split="any"),
    ]
    images = np.stack([np.asarray(render(s, i)) for row in rows for i, s in enumerate(row)])
    save_grid(images, path, cols=9, scale=3)


def main(cfg: EvaluateConfig) -> dict[str, object]:
    torch.set_num_threads(cfg.threads)
    renderer_showcase(cfg.images_dir / "world_modifiers.png")
    results: dict[str, object] = {
        "command": "diffenvs world evaluate",
        "config": {
            "n_rendered": cfg.n_rendered,
            "n_prompts": cfg.n_prompts,
            "steps": cfg.steps,
            "guidance_scales": list(cfg.guidance_scales),
            "seed": cfg.seed,
        },
    }
    held = make_dataset(cfg.n_rendered, seed=cfg.seed, split="heldout")
    held_scenes = sample_scenes(cfg.n_rendered, seed=cfg.seed, split="heldout")
    oracle = load_oracle()
    if "oracle" not in cfg.skip:
        results["oracle_accuracy_rendered_heldout"] = _accuracy(
            oracle.predict(held.images), held.labels
        )
    clip = load_clip()
    if "clip" not in cfg.skip:
        n = min(500, cfg.n_rendered)
        results["clip_rendered_heldout"] = evaluate_clip(clip, held_scenes[:n], held.images[:n])
    if "t2i" not in cfg.skip:
        pipe = load_pipeline()
        scenes = sample_scenes(cfg.n_prompts, seed=cfg.seed + 1, split="heldout")
        prompts = [s.caption() for s in scenes]
        seeds = list(range(cfg.n_prompts))
        rendered = np.stack([np.asarray(render(s, 10_000 + i)) for i, s in enumerate(scenes)])
        per_guidance = {}
        for g in cfg.guidance_scales:
            images = generate(pipe, prompts, seeds, cfg.steps, g)
            metrics: dict[str, object] = prompt_following(oracle, scenes, images)
            with torch.no_grad():
                e_gen = clip.encode_images(images).numpy()
                e_ren = clip.encode_images(rendered).numpy()
            metrics["frechet_clip_distance_to_renders"] = frechet_distance(e_gen, e_ren)
            per_guidance[str(g)] = metrics
            if g == cfg.guidance_scales[0]:
                save_grid(
                    np.concatenate([rendered[:16], images[:16]]),
                    cfg.images_dir / "world_heldout_render_vs_generated.png",
                    cols=16,
                )
                (cfg.images_dir / "world_heldout_prompts.txt").write_text(
                    "\n".join(prompts[:16]) + "\n"
                )
        results["t2i_prompt_following_heldout"] = per_guidance
        # Reference: the same distance between two independent sets of renders.
        rendered_b = np.stack([np.asarray(render(s, 20_000 + i)) for i, s in enumerate(scenes)])
        with torch.no_grad():
            results["frechet_clip_distance_render_vs_render"] = frechet_distance(
                clip.encode_images(rendered_b).numpy(), clip.encode_images(rendered).numpy()
            )
        # Diversity: same prompt, 8 seeds — mean pairwise CLIP distance, generated vs rendered.
        div_scenes = scenes[:24]
        gen_div, ren_div = [], []
        for k, s in enumerate(div_scenes):
            imgs = generate(
                pipe, [s.caption()] * 8, list(range(100, 108)), cfg.steps, cfg.guidance_scales[0]
            )
            rens = np.stack([np.asarray(render(s, 30_000 + 8 * k + j)) for j in range(8)])
            for arr, acc in ((imgs, gen_div), (rens, ren_div)):
                with torch.no_grad():
                    e = clip.encode_images(arr)
                sim = e @ e.T
                acc.append(float((1 - sim[~torch.eye(8, dtype=torch.bool)]).mean()))
            if k < 4:
                save_grid(
                    np.concatenate([rens, imgs]),
                    cfg.images_dir / f"world_diversity_{k}.png",
                    cols=8,
                )
        results["diversity_same_prompt_mean_clip_distance"] = {
            "generated": float(np.mean(gen_div)),
            "rendered": float(np.mean(ren_div)),
        }
    if "speed" not in cfg.skip:
        pipe = load_pipeline()
        prompts = [s.caption() for s in sample_scenes(16, seed=cfg.seed + 2, split="heldout")]
        generate(
            pipe, prompts, list(range(16)), cfg.steps, cfg.guidance_scales[0], batch=16
        )  # warm-up
        start = time.perf_counter()
        reps = 3
        for r in range(reps):
            generate(
                pipe,
                prompts,
                list(range(16 * (r + 1), 16 * (r + 2))),
                cfg.steps,
                cfg.guidance_scales[0],
                batch=16,
            )
        elapsed = time.perf_counter() - start
        results["sampling_images_per_second_batch16_ddim20"] = 16 * reps / elapsed
        results["sampling_threads"] = torch.get_num_threads()
    write_json(cfg.out, results)
    write_metrics_page(results, cfg.out.with_suffix(".md"))
    print(json.dumps(results, indent=2))
    return results


def _pct(x: object) -> str:
    return f"{100 * float(x):.1f} %"  # type: ignore[arg-type]


# The foundation issue's acceptance bars: (label, path into the results, minimum).
BARS: list[tuple[str, tuple[str, ...], float]] = [
    *[
        (f"oracle {a} (rendered)", ("oracle_accuracy_rendered_heldout", a), 0.97)
        for a in ATTRIBUTES
    ],
    *[
        (f"CLIP zero-shot {a}", ("clip_rendered_heldout", "zero_shot_accuracy", a), 0.90)
        for a in ATTRIBUTES
    ],
    (
        "CLIP true vs one-changed caption",
        ("clip_rendered_heldout", "true_vs_one_attribute_changed"),
        0.90,
    ),
    *[(f"T2I {a}", ("t2i", a), 0.85) for a in ("shape", "colour", "scene")],
    ("T2I count", ("t2i", "count"), 0.70),
    ("T2I modifier presence", ("t2i", "modifier_presence"), 0.70),
]


def bar_rows(results: dict) -> list[tuple[str, float, float]]:
    """(label, measured, bar) for every acceptance bar whose measurement is in ``results``."""
    rows = []
    for label, keys, bar in BARS:
        node: object = results
        if keys[0] == "t2i":
            per = results.get("t2i_prompt_following_heldout", {})
            node, keys = per.get(next(iter(per), ""), {}), keys[1:]
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, int | float):
            rows.append((label, float(node), bar))
    return rows


def write_metrics_page(results: dict, path: Path) -> None:
    """Render the metrics JSON as the markdown page docs/world_metrics.md."""
    lines = [
        "# World metrics",
        "",
        "Written by `diffenvs world evaluate` (do not edit by hand). Configuration: "
        f"`{json.dumps(results['config'])}`.",
        "",
    ]
    rows = bar_rows(results)
    if rows:
        met = sum(v >= b for _, v, b in rows)
        lines += [
            "## Against the foundation issue's bars",
            "",
            f"{met} of {len(rows)} bars met (T2I at the first guidance scale).",
            "",
            "| measurement | measured | bar | met |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {_pct(v)} | ≥ {_pct(b)} | {'yes' if v >= b else '**no**'} |"
            for n, v, b in rows
        ]
        lines.append("")
    if "oracle_accuracy_rendered_heldout" in results:
        acc = results["oracle_accuracy_rendered_heldout"]
        lines += [
            "## Oracle accuracy on held-out rendered images",
            "",
            "| attribute | accuracy |",
            "|---|---|",
        ]
        lines += [f"| {a} | {_pct(v)} |" for a, v in acc.items()] + [""]
    if "clip_rendered_heldout" in results:
        c = results["clip_rendered_heldout"]
        lines += [
            "## CLIP on held-out rendered images",
            "",
            "| attribute | zero-shot accuracy |",
            "|---|---|",
        ]
        lines += [f"| {a} | {_pct(v)} |" for a, v in c["zero_shot_accuracy"].items()]
        lines += [
            "",
            f"True caption ranked above a caption with one attribute changed: **{_pct(c['true_vs_one_attribute_changed'])}** of pairs.",
            "",
        ]
    if "t2i_prompt_following_heldout" in results:
        per = results["t2i_prompt_following_heldout"]
        gs = list(per)
        lines += ["## Text-to-image: oracle accuracy of generated images on held-out prompts", ""]
        lines += [
            "| metric | " + " | ".join(f"guidance {g}" for g in gs) + " |",
            "|---|" + "---|" * len(gs),
        ]
        for key in per[gs[0]]:
            vals = [per[g][key] for g in gs]
            fmt = (lambda v: f"{v:.2f}") if "distance" in key else _pct
            lines.append(f"| {key} | " + " | ".join(fmt(v) for v in vals) + " |")
        lines.append("")
        if "frechet_clip_distance_render_vs_render" in results:
            lines.append(
                f"Reference Fréchet CLIP distance between two independent sets of renders of the same prompts: {results['frechet_clip_distance_render_vs_render']:.2f}."
            )
        if "diversity_same_prompt_mean_clip_distance" in results:
            d = results["diversity_same_prompt_mean_clip_distance"]
            lines.append(
                f"Diversity (mean pairwise CLIP distance between 8 seeds of one prompt): generated {d['generated']:.3f}, rendered {d['rendered']:.3f}."
            )
        lines.append("")
    if "sampling_images_per_second_batch16_ddim20" in results:
        lines += [
            "## Speed",
            "",
            f"Sampling: **{results['sampling_images_per_second_batch16_ddim20']:.1f} images/s** at batch 16, 20 DDIM steps, classifier-free guidance, {results['sampling_threads']} CPU threads.",
            "",
        ]
    from diffenvs.io import atomic_write_bytes

    atomic_write_bytes(path, "\n".join(lines).encode())
