"""The PromptAppend-v0 benchmark pages: from results (a script's JSON) to numbers and markdown.

Shared by benchmarks/prompt_append_table.py (per-task optimisation; its summary, paired table and
page are below) and benchmarks/prompt_append_transfer.py (train on training tasks, judge on test
tasks; its page is built from the helpers here). Nothing here runs an environment or a model: a
page's markdown re-renders from its JSON alone.
"""

from __future__ import annotations

import shlex
import sys
from collections import defaultdict
from typing import Any

import numpy as np

METHODS = (
    "random search",
    "SQL",
    "SQL (greedy)",
    "SQL (CLIP prior)",
    "SQL (candidates, no prior)",
    "REINFORCE",
    "MaskablePPO",
)
"""The per-task benchmark's searchers/learners, in the order they run and appear on its page."""
MIN_GAP = 0.02  # below this ground-truth-minus-seed gap, "share of the gap closed" is noise


def command_line(script: str) -> str:
    """The command running now, as ``python benchmarks/SCRIPT ARGS`` (arguments shell-quoted)."""
    return f"python benchmarks/{script}" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])


def written_by(commands: list[str] | None, script: str) -> str:
    """A page's "Written by" line: its command, or the side-by-side runs and the merge that
    combined them; without commands (pages written before the JSON kept them), the command running
    now (``script`` with this process's arguments)."""
    if not commands:
        return f"Written by `{command_line(script)}`"
    if len(commands) == 1:
        return f"Written by `{commands[0]}`"
    runs = ", ".join(f"`{c}`" for c in commands[:-1])
    return f"Written by {runs} (one process each, side by side), merged by `{commands[-1]}`"


def seed_means(rows: list[dict[str, Any]]) -> list[float]:
    """The mean similarity of ``rows`` per seed, seeds in the order they first appear."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        by_seed[r["seed"]].append(r["similarity"])
    return [float(np.mean(v)) for v in by_seed.values()]


def gap_share(similarity: float, seed_sim: float, gt_sim: float) -> float:
    """The share of the gap between the seed prompt's and the ground truth's similarity that
    ``similarity`` closes; undefined (NaN) where the ground truth is less than MIN_GAP better."""
    gap = gt_sim - seed_sim
    return float((similarity - seed_sim) / gap) if gap >= MIN_GAP else float("nan")


def removed_words(seed_prompt: str, ground_truth: str) -> str:
    """The ground truth's comma-separated modifiers that the seed prompt lacks."""
    kept = set(seed_prompt.split(", "))
    return ", ".join(p for p in ground_truth.split(", ") if p not in kept)


def cell(similarity: float, spread: float | None = None, gap: float | None = None) -> str:
    """A table cell: the similarity, then `` ± spread`` if given, `` (gap N %)`` if given and not
    NaN."""
    text = f"{similarity:.3f}"
    if spread is not None:
        text += f" ± {spread:.3f}"
    if gap is not None and gap == gap:
        text += f" (gap {100 * gap:.0f} %)"
    return text


# The per-task benchmark (benchmarks/prompt_append_table.py): summary, paired table, picture rows
# and page.


def figure_rows(runs: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """The per-task picture's rows: per category, the first run of the first SQL variant."""
    learner = next(m for m in methods if m.startswith("SQL"))
    return [
        next(r for r in runs if r["category"] == cat and r["method"] == learner)
        for cat in sorted({r["category"] for r in runs})
    ]


def paired_vs_random(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, float]]:
    """Per method: its similarity minus random search's on the same (task, seed), mean ± SE."""
    if "random search" not in methods:
        return {}
    rand = {(r["task"], r["seed"]): r["similarity"] for r in runs if r["method"] == "random search"}
    out = {}
    for method in methods:
        if method == "random search":
            continue
        diff = np.array(
            [r["similarity"] - rand[(r["task"], r["seed"])] for r in runs if r["method"] == method]
        )
        out[method] = {
            "mean": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
            "wins": int((diff > 0).sum()),
            "ties": int((diff == 0).sum()),
            "n": len(diff),
        }
    return out


def summarise(
    runs: list[dict[str, Any]], methods: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per category (and "all") and method: mean similarity, std over seeds, share of the gap."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for cat in [*sorted({r["category"] for r in runs}), "all"]:
        rows = [r for r in runs if cat in ("all", r["category"])]
        seed_sim = np.mean([r["similarity"] for r in rows if r["method"] == "seed prompt"])
        gt_sim = np.mean([r["similarity"] for r in rows if r["method"] == "ground truth"])
        out[cat] = {}
        for method in ("seed prompt", "ground truth", "CLIP greedy", *methods):
            mine = [r for r in rows if r["method"] == method]
            sims = [r["similarity"] for r in mine]
            out[cat][method] = {
                "similarity": float(np.mean(sims)),
                "std_over_seeds": float(np.std(seed_means(mine))),
                "gap_recovered": gap_share(np.mean(sims), seed_sim, gt_sim),
                "n": len(sims),
            }
    return out


def render_markdown(result: dict[str, Any], fig_rows: list[dict[str, Any]]) -> str:
    """The per-task benchmark's page; ``fig_rows``: the picture's rows (see figure_rows)."""
    cfg, summary, speed = result["config"], result["summary"], result["throughput"]
    learners = [m for m in METHODS if m in summary["all"]]
    methods = ["seed prompt", "ground truth", "CLIP greedy", *learners]
    lines = [
        "# PromptAppend-v0 benchmark",
        "",
        written_by(result.get("commands"), "prompt_append_table.py")
        + " (do not edit by hand). Image similarity to "
        "the target (Gudibande & Zhu, eq. 4, world CLIP) of the final prompt, averaged over the held-out "
        f"evaluation seeds {cfg['eval_seeds']}; agents trained on generation seeds "
        f"{cfg['generation_seeds']}. World {cfg.get('split', 'test')}-split tasks, "
        f"{cfg['tasks_per_category']} per "
        f"category, {cfg['n_appends']} appends, vocabulary `{cfg['vocabulary']}` "
        f"({result['vocabulary_size']} words: {result['prompt_space']:,} appends before the seed "
        "prompt's words are masked), "
        f"{cfg['num_inference_steps']} DDIM steps, terminal reward; every learner and random "
        f"search spent **{cfg['budget']} reward evaluations per task**, {cfg['seeds']} seeds each; "
        "the CLIP-ranked greedy prompt spends none. Random search and SQL report the "
        "best-rewarded prompt they evaluated (on the training seeds)"
        + (
            "; *SQL (greedy)* is the same SQL run's greedy decoding of its Q-head"
            if "SQL (greedy)" in learners
            else ""
        )
        + (
            "; *SQL (CLIP prior)* is SQL with the per-word Q-head that starts from the CLIP "
            "text-image similarity of each next prompt (`--q-head candidates`), reporting its "
            "best-rewarded prompt"
            if "SQL (CLIP prior)" in learners
            else ""
        )
        + (
            "; *SQL (candidates, no prior)* is the same head with `--prior-weight 0` (the CLIP "
            "similarities are still among its inputs, but its policy starts uniform)"
            if "SQL (candidates, no prior)" in learners
            else ""
        )
        + (
            "; REINFORCE and MaskablePPO report their greedy policy's prompt"
            if {"REINFORCE", "MaskablePPO"} & set(learners)
            else ""
        )
        + ". Per-task optimisation (each run optimises one "
        "task, as in Naik et al.). "
        + (
            "One CPU thread per process; wall time summed over the processes "
            if len(result.get("commands", [])) > 1
            else "One CPU thread; total wall time "
        )
        + f"{result['wall_time_s'] / 60:.1f} min.",
        "",
        "Mean similarity (± std of the per-seed means); *gap* = share of the gap between the seed "
        "prompt and the ground truth that a method closes (left out where the ground truth beats "
        f"the seed prompt by less than {MIN_GAP}).",
        "",
        "| category | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for cat in sorted(summary, key=lambda c: (c == "all", c)):  # "all" last
        row = summary[cat]
        cells = []
        for m in methods:
            s = row[m]
            spread = s["std_over_seeds"] if m in METHODS else None
            gap = None if m in ("seed prompt", "ground truth") else s["gap_recovered"]
            cells.append(cell(s["similarity"], spread, gap))
        name = f"**{cat}**" if cat == "all" else cat
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    paired = result.get("paired_vs_random", {})
    if paired:
        lines += [
            "",
            "Paired against random search (same task and seed; a method's similarity minus random "
            "search's, mean ± standard error over the runs):",
            "",
            "| method | difference | better / tied / worse |",
            "|---|---|---|",
        ]
        for m, d in paired.items():
            worse = d["n"] - d["wins"] - d["ties"]
            lines.append(
                f"| {m} | {d['mean']:+.3f} ± {d['se']:.3f} | {d['wins']} / {d['ties']} / {worse} |"
            )
    lines += [
        "",
        f"Reward evaluations/s (each = {speed['images_per_evaluation']} images + CLIP): "
        f"**{speed['cold_evals_per_s']:.2f}** with a cold cache, "
        f"**{speed['warm_evals_per_s']:,.0f}** with a warm one (rewards, images and embeddings "
        "are cached by (prompt, seed)).",
        "",
        "## Learned prompts (Gudibande & Zhu, Table 4)",
        "",
        "| category | seed prompt | removed (ground truth) | method | seed | appended | similarity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        if r["method"] in ("seed prompt", "ground truth"):
            continue
        removed = removed_words(r["seed_prompt"], r["ground_truth"]) or "—"
        lines.append(
            f"| {r['category']} | {r['seed_prompt']} | {removed} | {r['method']} | {r['seed']} | "
            f"{r.get('appended', '')} | {r['similarity']:.3f} |"
        )
    lines += [
        "",
        f"![seed prompt / {fig_rows[0]['method']} prompt / target]({cfg['name']}.png)",
        "",
        f"*Left: the seed prompt's image; middle: the {fig_rows[0]['method']} prompt's image "
        "(evaluation seed "
        f"{cfg['eval_seeds'][0]}); right: the target. Rows: "
        + "; ".join(f"{r['category']}: +{r['appended']!r}" for r in fig_rows)
        + ".*",
        "",
    ]
    return "\n".join(lines)
