"""What an exhaustive search reaches on PromptAppend-v0: the ceiling of "best prompt on the
training seeds".

Scores every possible append sequence of each benchmark task on the training generation seeds,
keeps the best one and reports its similarity on the held-out evaluation seeds (what random search
and SQL report for the prompts they evaluated). In the small prompt space (12 words, 2 appends:
90-110 allowed prompts per task) a 48-evaluation random search already sits at this ceiling, so no method that picks
its prompt by training reward can beat it there; the extended space is too large to enumerate.

    OMP_NUM_THREADS=1 python benchmarks/prompt_append_ceiling.py     # ~5 min, 1 thread
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import tyro
from prompt_append_table import pick_tasks  # this folder is on sys.path when run as a script

from agents.common.prompt_env import PromptEnvArgs, make_env


@dataclass
class CeilingConfig:
    vocabulary: str = "default"
    n_appends: int = 2
    tasks_per_category: int = 2
    num_inference_steps: int = 10
    generation_seeds: tuple[int, ...] = (0, 1)
    eval_seeds: tuple[int, ...] = (100, 101, 102, 103)


def main(cfg: CeilingConfig) -> float:
    torch.set_num_threads(1)
    base = PromptEnvArgs(
        tasks="world:test",
        vocabulary=cfg.vocabulary,
        n_appends=cfg.n_appends,
        generation_seeds=cfg.generation_seeds,
        eval_seeds=cfg.eval_seeds,
        num_inference_steps=cfg.num_inference_steps,
    )
    best = []
    for index in pick_tasks(cfg.tasks_per_category):
        env = make_env(PromptEnvArgs(**{**asdict(base), "task": index}))
        env.reset(options={"task": index})
        u = env.unwrapped
        allowed = np.flatnonzero(u.action_masks())
        prompts = [u.prompt_of(s) for s in itertools.permutations(allowed, cfg.n_appends)]
        train = u.score(prompts)["image_similarity"]
        held_out = u.score(prompts, cfg.eval_seeds)["image_similarity"]
        top = int(np.argmax(train))
        best.append(float(held_out[top]))
        print(
            f"task {index} {u.task.category:15s} {len(prompts)} prompts: best on training seeds "
            f"{prompts[top][len(u.task.seed_prompt) :]!r} -> {held_out[top]:.3f} held out "
            f"(best held out {held_out.max():.3f}, mean {held_out.mean():.3f})",
            flush=True,
        )
    print(f"mean over tasks: {np.mean(best):.3f}")
    return float(np.mean(best))


if __name__ == "__main__":
    main(tyro.cli(CeilingConfig))
