"""Does a learned reward point where the labeler wanted? A check before spending PPO on it.

The base world model, asked for the same held-out count prompts with the preferred style named
(``", blurred"``), shows what a good policy could produce: the style, with the prompt still
followed. A reward model worth optimising scores those images above the plain prompt's images
(same seeds) and does not score another style (``", pastel"``) as highly. This script measures,
for each reward model given, the mean standardised reward of the three image sets and how often
the styled image beats the plain one; the oracle gives each set's style rate and prompt following.

    OMP_NUM_THREADS=2 python benchmarks/reward_model_check.py \\
        --models runs/preference_rollout/blurred-latent runs/preference_rollout_1200/blurred-latent

Writes benchmarks/results/preference/reward_model_check_NAME.{md,json}.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from diffenvs.io import atomic_write_bytes, write_json


@dataclass
class CheckConfig:
    models: tuple[str, ...]
    """Learned reward model folders (what ``learned:PATH`` takes)."""
    attribute: str = "blurred"
    """The style the labeler preferred."""
    other: str = "pastel"
    """Another style, to see whether the reward likes any change of look."""
    prompts: str = "counts:heldout"
    n_images: int = 128
    num_inference_steps: int = 10
    eta: float = 1.0
    """The RLHF rollout sampler's settings (10 DDIM steps, η = 1)."""
    seed: int = 5
    name: str = "blurred"
    out: Path = Path("benchmarks/results/preference")


def _mean(values: torch.Tensor) -> float:
    return float(np.nanmean(values.float().cpu().numpy()))


def run(cfg: CheckConfig) -> dict:
    from agents.ppo.rollout import make_prompt_source
    from diffenvs.generate import ImageGenerator
    from diffenvs.rewards import OracleReward, make_reward

    missing = [m for m in cfg.models if not (Path(m) / "reward_model.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"No reward model in {missing} (no reward_model.json); train one with "
            "benchmarks/preference_table.py or `diffenvs preference train`."
        )
    torch.manual_seed(cfg.seed)  # the η > 0 sampler draws its step noise from torch's stream
    t0 = time.perf_counter()
    source = make_prompt_source(cfg.prompts)
    rng = np.random.default_rng(cfg.seed)
    prompts = [source.sample(rng) for _ in range(cfg.n_images)]
    seeds = list(range(cfg.n_images))
    gen = ImageGenerator(
        "world", num_inference_steps=cfg.num_inference_steps, guidance_scale=4.0, eta=cfg.eta
    )
    sets = {
        "plain prompt": gen.images(prompts, seeds),
        f"prompt + {cfg.attribute}": gen.images([f"{p}, {cfg.attribute}" for p in prompts], seeds),
        f"prompt + {cfg.other}": gen.images([f"{p}, {cfg.other}" for p in prompts], seeds),
    }
    style = OracleReward(target=cfg.attribute, soft=False)
    follow = OracleReward(soft=False)
    oracle = {
        name: {
            "style_rate": _mean(style.evaluate(x, [""] * len(x)).details["accuracy"]),
            # Judged against the plain prompt: the style word is not part of what to follow.
            "prompt_following": _mean(follow.evaluate(x, prompts).details["accuracy"]),
        }
        for name, x in sets.items()
    }
    rewards = {}
    plain, styled, other = sets.values()
    for model in cfg.models:
        reward = make_reward(f"learned:{model}")
        scores = [reward(x, prompts).detach().cpu().numpy() for x in (plain, styled, other)]
        rewards[model] = {
            "plain": float(scores[0].mean()),
            "styled": float(scores[1].mean()),
            "other": float(scores[2].mean()),
            "styled_beats_plain": float((scores[1] > scores[0]).mean()),
            "other_beats_plain": float((scores[2] > scores[0]).mean()),
        }
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "oracle": oracle,
        "rewards": rewards,
        "minutes": (time.perf_counter() - t0) / 60,
        "threads": torch.get_num_threads(),
    }


def write_report(cfg: CheckConfig, res: dict) -> None:
    a, o = cfg.attribute, cfg.other
    lines = [
        f"# Does the learned reward prefer *{a}*? (check before RLHF)",
        "",
        f"Written by `python benchmarks/reward_model_check.py{''.join(' ' + shlex.quote(x) for x in sys.argv[1:])}`"
        f" ({res['minutes']:.1f} min, {res['threads']} CPU thread(s)). {cfg.n_images} held-out "
        f"prompts (`{cfg.prompts}`), the base world model with the RLHF sampler "
        f"({cfg.num_inference_steps} DDIM steps, η = {cfg.eta:g}), the same seeds for each set.",
        "",
        "What the oracle sees (prompt following judged against the plain prompt):",
        "",
        f"| images | oracle rate of *{a}* | prompt following |",
        "|---|---|---|",
    ]
    for name, row in res["oracle"].items():
        lines.append(
            f"| {name} | {100 * row['style_rate']:.1f} % | {100 * row['prompt_following']:.1f} % |"
        )
    lines += [
        "",
        "Mean standardised reward of each set, and how often the styled image of a prompt and seed "
        "scores above the plain one:",
        "",
        f"| reward model | plain | + {a} | + {o} | + {a} beats plain | + {o} beats plain |",
        "|---|---|---|---|---|---|",
    ]
    for model, r in res["rewards"].items():
        lines.append(
            f"| `{model}` | {r['plain']:+.2f} | {r['styled']:+.2f} | {r['other']:+.2f} | "
            f"{100 * r['styled_beats_plain']:.0f} % | {100 * r['other_beats_plain']:.0f} % |"
        )
    lines.append("")
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / f"reward_model_check_{cfg.name}.json", res)
    atomic_write_bytes(cfg.out / f"reward_model_check_{cfg.name}.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    config = tyro.cli(CheckConfig)
    write_report(config, run(config))
