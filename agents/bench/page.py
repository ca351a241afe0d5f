"""The leaderboard page, generated from the cells' JSON: ``python -m agents.bench.page``.

One table per task (entrants as rows, means over seeds ± the spread between seeds) and one figure
per task (training reward against images and against wall-clock, mean over seeds). Nothing on
the page is typed by hand: re-running the command after new cells land refreshes it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from agents.bench.schema import CellResult, load_cells
from agents.bench.tasks import TASKS


def _mean_spread(values: list[float]) -> str:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3g}"
    return f"{statistics.fmean(vals):.3g} ± {statistics.pstdev(vals):.2g}"


def _delta(cells: list[CellResult], key: str) -> str:
    pairs = [(c.base.get(key), c.final.get(key)) for c in cells if key in c.final]
    if not pairs:
        return "–"
    b = statistics.fmean(p[0] for p in pairs)
    a = statistics.fmean(p[1] for p in pairs)
    return f"{100 * b:.1f} → {100 * a:.1f}"


def _by_entrant(
    cells: list[CellResult],
) -> tuple[dict[str, list[CellResult]], dict[str, list[CellResult]]]:
    """Cells grouped by entrant: those that finished, and those whose policy diverged."""
    ok: dict[str, list[CellResult]] = defaultdict(list)
    diverged: dict[str, list[CellResult]] = defaultdict(list)
    for c in cells:
        (diverged if c.diverged else ok)[c.entrant].append(c)
    return ok, diverged


def _diverged_lines(diverged: dict[str, list[CellResult]], columns: int) -> list[str]:
    """One row per entrant with diverged seeds: which seeds, why and when (not ranked)."""
    rows = []
    for name, group in sorted(diverged.items()):
        seeds = ", ".join(str(c.seed) for c in group)
        why = "; ".join(sorted({c.note for c in group if c.note})) or "diverged"
        last = sorted(int(c.curve[-1][0]) for c in group if c.curve)
        when = ""
        if last:
            span = f"{last[0]:,}" if last[0] == last[-1] else f"{last[0]:,}–{last[-1]:,}"
            when = f" after {span} training images"
        rows.append(
            f"| {name} | {len(group)} | **diverged** (seed {seeds}: {why}{when}) |"
            + " – |" * (columns - 3)
        )
    return rows


def _entrant_list() -> list[str]:
    """The built-in entrants, one line each (their ``summary``)."""
    from agents.bench.entrants import ENTRANTS, load_entrant

    lines = ["Built-in entrants (`agents/bench/`):", ""]
    for name in sorted(ENTRANTS):
        lines.append(f"* **{name}**: {load_entrant(name).summary}.")
    return [*lines, ""]


def _missing_entrants(task_name: str, present: set[str]) -> list[str]:
    """The built-in entrants without cells on the task: those that do not apply to it (and why),
    and those not measured yet (and the command that adds them)."""
    from agents.bench.entrants import ENTRANTS, cannot_run, load_entrant

    if task_name not in TASKS:
        return []
    reasons: dict[str, list[str]] = defaultdict(list)
    not_yet = []
    for name in sorted(set(ENTRANTS) - present):
        reason = cannot_run(load_entrant(name), TASKS[task_name])
        if reason is None:
            not_yet.append(name)
        else:
            reasons[reason].append(name)
    lines = [f"Not applicable: {', '.join(n)} ({r})." for r, n in sorted(reasons.items())]
    if not_yet:
        lines.append(
            f"Not measured yet: {', '.join(not_yet)} (`python -m agents.bench.run --tasks "
            f"{task_name} --entrants {' '.join(not_yet)}`)."
        )
    return ["", *lines] if lines else []


def task_table(cells: list[CellResult]) -> list[str]:
    lines = [
        "| entrant | seeds | held-out reward (base → final) | gain (base std) | train reward at "
        "the wall-clock budget | KL to base (nats/image) | diversity after / before | prompt "
        "following, judge (%) | reward's target, judge (%) | train time (s) | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_entrant, diverged = _by_entrant(cells)
    ranked = sorted(
        by_entrant.items(), key=lambda kv: -statistics.fmean(c.gain_base_std for c in kv[1])
    )
    for name, group in ranked:
        base = statistics.fmean(c.base["reward_mean"] for c in group)
        lines.append(
            f"| {name} | {len(group)} | {base:.3g} → "
            f"{_mean_spread([c.final['reward_mean'] for c in group])} | "
            f"{_mean_spread([c.gain_base_std for c in group])} | "
            f"{_mean_spread([c.reward_at_seconds for c in group])} | "
            f"{_mean_spread([c.final['kl_to_base'] for c in group])} | "
            f"{_mean_spread([c.diversity_ratio for c in group])} | "
            f"{_delta(group, 'prompt_following')} | {_delta(group, 'independent')} | "
            f"{_mean_spread([c.train_seconds for c in group])} | "
            f"{_mean_spread([c.peak_rss_gb for c in group])} |"
        )
    return lines + _diverged_lines(diverged, columns=11)


def reference_table(cells: list[CellResult]) -> list[str]:
    """Reference tasks: how far from the known optimum p*_β each entrant ends."""
    first = cells[0]
    lines = [
        f"Optimum: E[r] = {first.base['optimum_reward']:.3g}, KL = {first.base['optimum_kl']:.3g},"
        f" objective E[r] - β·KL = {first.base['optimum_objective']:.3g}. Base sampler: objective"
        f" {first.base['objective']:.3g}, sliced W2 to p* {first.base['sw2_to_pstar']:.3g}; noise "
        f"floor (two exact samples of p*) {first.base.get('sw2_noise_floor', float('nan')):.3g}.",
        "",
        "| entrant | seeds | objective E[r] - β·KL (optimum) | E[r] | path KL | sliced W2 to p* | "
        "kNN KL to p* | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_entrant, diverged = _by_entrant(cells)
    ranked = sorted(
        by_entrant.items(), key=lambda kv: -statistics.fmean(c.final["objective"] for c in kv[1])
    )
    for name, group in ranked:
        f = [c.final for c in group]
        lines.append(
            f"| {name} | {len(group)} | {_mean_spread([x['objective'] for x in f])} "
            f"({group[0].final['optimum_objective']:.3g}) | "
            f"{_mean_spread([x['reward_mean'] for x in f])} | "
            f"{_mean_spread([x['kl_to_base'] for x in f])} | "
            f"{_mean_spread([x['sw2_to_pstar'] for x in f])} | "
            f"{_mean_spread([x['knn_kl_to_pstar'] for x in f])} | "
            f"{_mean_spread([c.train_seconds for c in group])} |"
        )
    return lines + _diverged_lines(diverged, columns=8)


def task_figure(cells: list[CellResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    by_entrant: dict[str, list[CellResult]] = defaultdict(list)
    for c in cells:
        by_entrant[c.entrant].append(c)
    for name, group in sorted(by_entrant.items()):
        n = min(len(c.curve) for c in group)
        if n == 0:
            continue
        curves = np.array([[p[2] for p in c.curve[:n]] for c in group])
        images = [p[0] for p in group[0].curve[:n]]
        seconds = np.mean([[p[1] for p in c.curve[:n]] for c in group], axis=0)
        (line,) = axes[0].plot(images, curves.mean(0), label=f"{name} ({len(group)} seeds)")
        axes[1].plot(seconds, curves.mean(0), color=line.get_color())
    axes[0].set_xlabel("training images")
    axes[1].set_xlabel("wall-clock (s, one thread)")
    for ax in axes:
        ax.set_ylabel(f"train reward ({cells[0].task})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_page(out: Path, images_dir: Path, image_prefix: str) -> str:
    cells = load_cells(out)
    by_task: dict[str, list[CellResult]] = defaultdict(list)
    for c in cells:
        by_task[c.task].append(c)
    worlds = sorted(
        {c.world.get("world", "?") for c in cells if c.task in TASKS and TASKS[c.task].world_only}
    )
    loads = [c.machine["load_start"] for c in cells if "load_start" in c.machine]
    load = (
        f" The machine's 1-minute load average while cells trained: {min(loads):.1f}–"
        f"{max(loads):.1f} on {cells[0].machine.get('cpus', '?')} CPUs (wall-clock columns are "
        "slower by about that factor than on an idle machine)."
        if loads
        else ""
    )
    budgets = sorted({(int(c.budget["images"]), int(c.budget["seconds"])) for c in cells})
    lines = [
        "# Leaderboard",
        "",
        "Every diffusion agent of the suite on the same tasks, seeds and budgets, evaluated the "
        "same way on held-out prompts with fixed x_T and step noise. Generated from the cells' "
        "JSON by `python -m agents.bench.page`; run the cells with `python -m agents.bench.run` "
        "(`docs/benchmark.md` shows how to add your own algorithm).",
        "",
        f"**Measured on:** world {', '.join(worlds) or '–'} (each world task names its own "
        f"below; the reference tasks do not use the world); budgets (training images, "
        f"seconds): {', '.join(f'{i}, {s}' for i, s in budgets) or '–'}; one CPU thread per "
        f"cell.{load} Raw cells: `benchmarks/results/leaderboard/<task>/<entrant>/seed<k>.json`.",
        "",
        "Columns: the held-out reward of the base model and of the fine-tuned model (mean over "
        "seeds ± their spread), the gain in units of the base model's reward std, the training "
        "reward the curve had reached at the wall-clock budget, the path KL to the base model "
        "(sum of the closed-form per-step KLs), prompt-to-prompt image diversity after / before "
        "(below 0.5: collapse), and the independent judge: its prompt following on the held-out "
        "prompts, and, where the reward is an oracle proxy, its own reading of the reward's "
        "target (a proxy reward that rises while the judge's reading does not is reward hacking).",
        "",
        *_entrant_list(),
    ]
    for name in sorted(by_task):
        group = by_task[name]
        summary = TASKS[name].summary if name in TASKS else ""
        figure = images_dir / f"leaderboard_{name}.png"
        task_figure(group, figure)
        lines += [f"## {name}", "", summary[:1].upper() + summary[1:] + ".", ""]
        if name in TASKS and TASKS[name].world_only:
            on = sorted({c.world.get("world", "?") for c in group})
            mixed = " (cells of different worlds: re-run the older ones)" if len(on) > 1 else ""
            lines += [f"Measured on world {', '.join(on)}{mixed}.", ""]
        is_reference = (
            TASKS[name].is_reference if name in TASKS else "sw2_to_pstar" in group[0].base
        )
        lines += reference_table(group) if is_reference else task_table(group)
        lines += _missing_entrants(name, {c.entrant for c in group})
        lines += [
            "",
            f"![{name}: training reward per image and per second]({image_prefix}{figure.name})",
            "",
        ]
    if not cells:
        lines += ["No cells yet: run `python -m agents.bench.run`.", ""]
    elif unmeasured := sorted(set(TASKS) - set(by_task)):
        lines += [
            "## Tasks not measured yet",
            "",
            f"{', '.join(unmeasured)}: `python -m agents.bench.run --tasks "
            f"{' '.join(unmeasured)}` (`docs/benchmark.md` describes them).",
            "",
        ]
    return "\n".join(lines)


def write_page(out: Path, page: Path) -> Path:
    from diffenvs.io import atomic_write_bytes

    images = page.parent.parent / "images"
    text = render_page(out, images, "../images/")
    atomic_write_bytes(page, text.encode())
    return page


if __name__ == "__main__":
    import tyro

    def _main(
        out: Path = Path("benchmarks/results/leaderboard"),
        page: Path = Path("docs/results/leaderboard.md"),
    ) -> None:
        """Regenerate the leaderboard page from the cells under ``out``."""
        print(write_page(out, page))

    tyro.cli(_main)
