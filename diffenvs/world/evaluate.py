"""Measure the embedded world: oracle accuracy, CLIP zero-shot accuracy, and how well the
text-to-image model follows held-out prompts (judged by the oracle), plus diversity and speed.

    diffenvs world evaluate                    # writes out/world_evaluate/
    diffenvs world evaluate --update-docs      # also refreshes the docs' copy (shipped world only)

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
from diffenvs.models import load_clip, load_judge, load_oracle, load_pipeline
from diffenvs.world.attributes import ATTRIBUTE_CLASSES, ATTRIBUTES, MODIFIER_CATEGORIES
from diffenvs.world.data import make_dataset
from diffenvs.world.metrics_page import write_metrics_page
from diffenvs.world.oracle import as_image_tensor
from diffenvs.world.render import Scene, render, sample_scenes


@dataclass
class EvaluateConfig:
    """Evaluate every model of the embedded world on held-out data."""

    out_dir: Path = Path("out/world_evaluate")
    """Where the metrics (world_metrics.json / .md) and sample grids go."""
    update_docs: bool = False
    """Also refresh the copies in docs/ (docs/world_metrics.*, docs/images/world_*.png): only for
    the shipped world, when its weights change."""
    pipeline: str = "world"
    """The text-to-image model: 'world' or a Stable-Diffusion- or SD3-layout folder (e.g. a
    training leg's; an SD3 pipeline samples with its flow-matching Euler sampler)."""
    vae: str | None = None
    """An AutoencoderKL folder whose reconstructions to measure (default: the pipeline's VAE)."""
    oracle: str | None = None
    """Oracle weights (default: the shipped ones)."""
    judge: str | None = None
    """Judge weights (default: the shipped ones; skipped with a note where none is shipped)."""
    clip: str = "world"
    """The CLIP to measure: 'world' or an open_clip folder."""
    n_rendered: int = 2_000
    """Held-out rendered images for the oracle, the judge, the VAE and CLIP."""
    n_prompts: int = 256
    """Held-out prompts (never training captions) for the text-to-image model."""
    steps: tuple[int, ...] = (20, 10)
    """DDIM step counts for generation (the first is the main setting)."""
    guidance_scales: tuple[float, ...] = (4.0,)
    """Classifier-free guidance scales (the first is the default)."""
    compare_speed_with: str | None = None
    """Another pipeline (e.g. the previous world's folder) timed side by side with ``pipeline``."""
    seed: int = 1234
    threads: int = 1
    skip: list[str] = field(default_factory=list)
    """Parts to skip: any of oracle, judge, vae, clip, t2i, diversity, speed."""


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

    if hasattr(pipe, "transformer"):  # a flow-matching (SD3-layout) pipeline: its own sampler
        return np.concatenate(
            [
                _generate_flow(pipe, prompts[i : i + batch], seeds[i : i + batch], steps, guidance)
                for i in tqdm(range(0, len(prompts), batch), desc=f"generate (cfg {guidance})")
            ]
        )
    gen = ImageGenerator(pipe, num_inference_steps=steps, guidance_scale=guidance, batch_size=batch)
    out = [
        gen.images(prompts[i : i + batch], seeds[i : i + batch])
        for i in tqdm(range(0, len(prompts), batch), desc=f"generate (cfg {guidance})")
    ]
    return np.concatenate(out)


@torch.no_grad()
def _sampler_name(pipe) -> str:
    """What a pipeline's steps are called: a flow model's Euler steps, else its scheduler's."""
    if hasattr(pipe, "transformer"):
        return "flow-matching Euler"
    return type(pipe.scheduler).__name__.removesuffix("Scheduler") or "sampler"


def _generate_flow(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float):
    """uint8 images from an SD3-layout pipeline's own Euler sampler, x_T drawn per (prompt, seed)
    as ImageGenerator draws it for the UNet world (one generator per image)."""
    from diffenvs.world.flow_t2i import t5_free_fast_path

    config = pipe.transformer.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    exact_shortcut = {}  # no T5: its 256 zero rows as one token, same images (flow_t2i)
    if getattr(pipe, "text_encoder_3", 0) is None and not config.get("dual_attention_layers"):
        exact_shortcut = t5_free_fast_path(pipe)
    latents = torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )
    out = pipe(
        list(prompts),
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=latents.to(pipe.device, pipe.transformer.dtype),
        output_type="np",
        **exact_shortcut,
    ).images
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


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


@torch.no_grad()
def vae_reconstruction(vae, images: np.ndarray, labels: np.ndarray, readers: dict) -> dict:
    """PSNR of the VAE's reconstructions (posterior means) and each reader's accuracy on them."""
    recons, sq_err = [], 0.0
    for i in range(0, len(images), 128):
        x = as_image_tensor(images[i : i + 128]) * 2 - 1
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        sq_err += (recon - x).pow(2).sum().item()
        recons.append((recon + 1) / 2)
    x = torch.cat(recons)
    report: dict[str, object] = {"psnr_db": float(10 * np.log10(4.0 / (sq_err / images.size)))}
    for name, reader in readers.items():
        report[name] = _accuracy(reader.predict(x), labels)
    return report


def _readers(cfg: EvaluateConfig, results: dict) -> dict:
    from diffenvs.world.paths import weights_path

    readers = {"oracle": load_oracle(cfg.oracle)}
    if "judge" in cfg.skip:
        return readers
    if cfg.judge is None and not weights_path("judge.safetensors").exists():
        results["notes"] = ["No judge is shipped with these weights; judge rows are skipped."]
        return readers
    readers["judge"] = load_judge(cfg.judge)
    return readers


def text_to_image(cfg: EvaluateConfig, pipe, clip, readers: dict, results: dict) -> None:
    """Prompt following at every (steps, guidance) setting, grids, FID-like distance, diversity."""
    scenes = sample_scenes(cfg.n_prompts, seed=cfg.seed + 1, split="heldout")
    prompts = [s.caption() for s in scenes]
    seeds = list(range(cfg.n_prompts))
    rendered = np.stack([np.asarray(render(s, 10_000 + i)) for i, s in enumerate(scenes)])
    with torch.no_grad():
        e_ren = clip.encode_images(rendered).numpy()
    per_setting = {}
    for steps in cfg.steps:
        for g in cfg.guidance_scales:
            images = generate(pipe, prompts, seeds, steps, g)
            metrics: dict[str, object] = prompt_following(readers["oracle"], scenes, images)
            if "judge" in readers:
                metrics["judge"] = prompt_following(readers["judge"], scenes, images)
            with torch.no_grad():
                e_gen = clip.encode_images(images).numpy()
            metrics["frechet_clip_distance_to_renders"] = frechet_distance(e_gen, e_ren)
            per_setting[f"{steps} steps, guidance {g}"] = metrics
            if len(per_setting) == 1:
                save_grid(
                    np.concatenate([rendered[:16], images[:16]]),
                    cfg.out_dir / "images" / "world_heldout_render_vs_generated.png",
                    cols=16,
                )
                (cfg.out_dir / "images" / "world_heldout_prompts.txt").write_text(
                    "\n".join(prompts[:16]) + "\n"
                )
    results["t2i_prompt_following_heldout"] = per_setting
    # Reference: the same distance between two independent sets of renders.
    rendered_b = np.stack([np.asarray(render(s, 20_000 + i)) for i, s in enumerate(scenes)])
    with torch.no_grad():
        results["frechet_clip_distance_render_vs_render"] = frechet_distance(
            clip.encode_images(rendered_b).numpy(), e_ren
        )
    if "diversity" not in cfg.skip:
        results["diversity_same_prompt_mean_clip_distance"] = diversity(cfg, pipe, clip, scenes)


def diversity(cfg: EvaluateConfig, pipe, clip, scenes: list[Scene]) -> dict[str, float]:
    """Same prompt, 8 seeds: mean pairwise CLIP distance, generated vs rendered."""
    gen_div, ren_div = [], []
    for k, s in enumerate(scenes[:24]):
        imgs = generate(
            pipe, [s.caption()] * 8, list(range(100, 108)), cfg.steps[0], cfg.guidance_scales[0]
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
                cfg.out_dir / "images" / f"world_diversity_{k}.png",
                cols=8,
            )
    return {"generated": float(np.mean(gen_div)), "rendered": float(np.mean(ren_div))}


def sampling_speed(cfg: EvaluateConfig, pipes: dict[str, object]) -> dict[str, float]:
    """Images/s at batch 16 for each pipeline, timed in alternation so load hits all alike."""
    prompts = [s.caption() for s in sample_scenes(16, seed=cfg.seed + 2, split="heldout")]
    steps, g = cfg.steps[0], cfg.guidance_scales[0]
    elapsed = dict.fromkeys(pipes, 0.0)
    for pipe in pipes.values():
        generate(pipe, prompts, list(range(16)), steps, g, batch=16)  # warm-up
    reps = 3
    for r in range(reps):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            generate(pipe, prompts, list(range(16 * (r + 1), 16 * (r + 2))), steps, g, batch=16)
            elapsed[name] += time.perf_counter() - start
    return {name: 16 * reps / t for name, t in elapsed.items()}


def main(cfg: EvaluateConfig) -> dict[str, object]:
    torch.set_num_threads(cfg.threads)
    results: dict[str, object] = {
        "command": "diffenvs world evaluate",
        "config": {
            "pipeline": cfg.pipeline,
            "n_rendered": cfg.n_rendered,
            "n_prompts": cfg.n_prompts,
            "steps": list(cfg.steps),
            "guidance_scales": list(cfg.guidance_scales),
            "seed": cfg.seed,
        },
    }
    renderer_showcase(cfg.out_dir / "images" / "world_modifiers.png")
    held = make_dataset(cfg.n_rendered, seed=cfg.seed, split="heldout")
    held_scenes = sample_scenes(cfg.n_rendered, seed=cfg.seed, split="heldout")
    readers = _readers(cfg, results)
    for name, reader in readers.items():
        if name not in cfg.skip:
            results[f"{name}_accuracy_rendered_heldout"] = _accuracy(
                reader.predict(held.images), held.labels
            )
    pipe = load_pipeline(cfg.pipeline)
    if "vae" not in cfg.skip:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(cfg.vae).eval() if cfg.vae else pipe.vae
        n = min(1_000, cfg.n_rendered)
        results["vae_reconstruction"] = vae_reconstruction(
            vae, held.images[:n], held.labels[:n], readers
        )
    clip = load_clip(cfg.clip)
    if "clip" not in cfg.skip:
        n = min(500, cfg.n_rendered)
        results["clip_rendered_heldout"] = evaluate_clip(clip, held_scenes[:n], held.images[:n])
    if "t2i" not in cfg.skip:
        text_to_image(cfg, pipe, clip, readers, results)
    if "speed" not in cfg.skip:
        pipes = {cfg.pipeline: pipe}
        if cfg.compare_speed_with:
            pipes[cfg.compare_speed_with] = load_pipeline(cfg.compare_speed_with)
        results["sampling_images_per_second"] = sampling_speed(cfg, pipes)
        results["sampling_setting"] = (
            f"batch 16, {cfg.steps[0]} {_sampler_name(pipe)} steps, guidance "
            f"{cfg.guidance_scales[0]}, "
            f"{torch.get_num_threads()} CPU thread(s)"
        )
    write_json(cfg.out_dir / "world_metrics.json", results)
    write_metrics_page(results, cfg.out_dir / "world_metrics.md")
    if cfg.update_docs:
        copy_to_docs(cfg.out_dir)
    print(json.dumps(results, indent=2))
    print(f"\nwrote {cfg.out_dir / 'world_metrics.md'} (and .json, images/)")
    return results


def copy_to_docs(out_dir: Path, docs: Path = Path("docs")) -> None:
    """Refresh the docs' metrics page and the figures the world pages show; the raw JSON goes to
    benchmarks/results/world/ (the site holds no raw outputs)."""
    import shutil

    shutil.copyfile(out_dir / "world_metrics.md", docs / "world_metrics.md")
    raw = Path("benchmarks/results/world")
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir / "world_metrics.json", raw / "world_metrics.json")
    for image in (out_dir / "images").iterdir():
        shutil.copyfile(image, docs / "images" / image.name)
