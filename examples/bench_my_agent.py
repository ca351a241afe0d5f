"""Put your own algorithm on the leaderboard: a REINFORCE variant with a leave-one-out baseline.

An entrant is a class with ``name``, ``summary`` and ``train(task, budget, seed, run_dir)`` that
returns the fine-tuned denoiser and its training curve (``docs/benchmark.md``). This one reuses
the suite's REINFORCE entrant (``agents/bench/reinforce_entrant.py``, the template to copy for a
new algorithm) and changes only its baseline: each image's reward minus the mean of the *other*
images of its prompt (RLOO; Kool et al., "Buy 4 REINFORCE samples, get a baseline for free!").

Run it in the same cells as the built-in agents (from the repository root)::

    python examples/bench_my_agent.py                   # one cell: pastel, 64 images, ~3 min
    python -m agents.bench.run --entrants examples.bench_my_agent:LeaveOneOutEntrant reinforce \\
        --tasks pastel --seeds 0 1 2                    # the full cells, beside the built-in one

Expected result (measured, one cell on the pastel task, 64 training images, 8 held-out images, on
a loaded 2-core machine): the cell's JSON is written to
out/bench_my_agent/pastel/reinforce-loo/seed0.json and the line printed reads
``reinforce-loo on pastel: held-out reward 0.092 -> 0.072 (base std 0.17), KL to base 1.7e+04
nats/image, judge prompt following 77 -> 65 %``: four updates of full fine-tuning move the model
(a large KL) without raising the reward yet; the point is the plumbing, the leaderboard's budget is
640 images. About 20 s of CPU time (30 s to 3 min of wall clock, with the machine's load).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from agents.bench.reinforce_entrant import ReinforceEntrant


class LeaveOneOutEntrant(ReinforceEntrant):
    name = "reinforce-loo"
    summary = "REINFORCE with a leave-one-out baseline per prompt group (RLOO)"

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        r = rewards.reshape(-1, self.samples_per_prompt)
        others = (r.sum(1, keepdim=True) - r) / (r.shape[1] - 1)
        return (r - others).reshape(-1)


@dataclass
class Args:
    task: str = "pastel"
    images: int = 64
    eval_episodes: int = 8
    seed: int = 0
    out: Path = Path("out/bench_my_agent")


def main(args: Args) -> None:
    from agents.bench.run import BenchConfig, resolve, run_cell

    torch.set_num_threads(1)
    cfg = resolve(
        BenchConfig(images=args.images, eval_episodes=args.eval_episodes, out=args.out, page=None)
    )
    cell = run_cell(cfg, args.task, f"{__name__}:LeaveOneOutEntrant", args.seed)
    b, f = cell.base, cell.final
    print(
        f"{cell.entrant} on {cell.task}: held-out reward {b['reward_mean']:.3f} -> "
        f"{f['reward_mean']:.3f} (base std {b['reward_std']:.2f}), KL to base "
        f"{f['kl_to_base']:.2g} nats/image, judge prompt following "
        f"{100 * b['prompt_following']:.0f} -> {100 * f['prompt_following']:.0f} %"
    )


if __name__ == "__main__":
    main(tyro.cli(Args))
