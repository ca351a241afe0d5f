"""The world's acceptance bars and the markdown page ``diffenvs world evaluate`` writes.

The bars are the world-v2 issue's: every number is read from the results JSON, so the page and the
JSON can never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffenvs.world.attributes import ATTRIBUTES

T2I_AT_90 = ("shape", "colour", "scene", "size")
T2I_AT_85 = ("count", "position")

# (label, path into the results, bar, direction): "min" means measured ≥ bar, "max" measured ≤ bar.
# A path that starts with "t2i" / "t2i_short" reads the first / second entry of
# ``t2i_prompt_following_heldout`` (by default 20 and 10 DDIM steps at the default guidance).
BARS: list[tuple[str, tuple[str, ...], float, str]] = [
    *[
        (f"VAE reconstructions, oracle {a}", ("vae_reconstruction", "oracle", a), 0.97, "min")
        for a in ATTRIBUTES
    ],
    *[
        (f"oracle {a} (rendered)", ("oracle_accuracy_rendered_heldout", a), 0.97, "min")
        for a in ATTRIBUTES
    ],
    *[
        (f"judge {a} (rendered)", ("judge_accuracy_rendered_heldout", a), 0.97, "min")
        for a in ATTRIBUTES
    ],
    *[
        (f"CLIP zero-shot {a}", ("clip_rendered_heldout", "zero_shot_accuracy", a), 0.90, "min")
        for a in ATTRIBUTES
    ],
    (
        "CLIP true vs one-changed caption",
        ("clip_rendered_heldout", "true_vs_one_attribute_changed"),
        0.95,
        "min",
    ),
    *[(f"T2I {a}", ("t2i", a), 0.90, "min") for a in T2I_AT_90],
    *[(f"T2I {a}", ("t2i", a), 0.85, "min") for a in T2I_AT_85],
    ("T2I modifier presence", ("t2i", "modifier_presence"), 0.80, "min"),
    ("T2I modifier false positives", ("t2i", "modifier_false_positive"), 0.10, "max"),
]


def _t2i_entry(results: dict, which: int) -> dict:
    per = results.get("t2i_prompt_following_heldout", {})
    keys = list(per)
    return per[keys[which]] if len(keys) > which else {}


def bar_rows(results: dict) -> list[tuple[str, float, float, str]]:
    """(label, measured, bar, direction) for every bar whose measurement is in ``results``.

    With a second T2I setting (10 steps by default), each T2I attribute bar also gets a row
    "within 5 points of the first setting": measured = second − first, bar = −0.05.
    """
    rows = []
    for label, keys, bar, direction in BARS:
        node: object = results
        if keys[0] == "t2i":
            node, keys = _t2i_entry(results, 0), keys[1:]
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, int | float):
            rows.append((label, float(node), bar, direction))
    first, second = _t2i_entry(results, 0), _t2i_entry(results, 1)
    if first and second:
        for a in (*T2I_AT_90, *T2I_AT_85, "modifier_presence"):
            if a in first and a in second:
                rows.append(
                    (f"T2I {a}: second setting − first", second[a] - first[a], -0.05, "min")
                )
    return rows


def _met(value: float, bar: float, direction: str) -> bool:
    return value >= bar if direction == "min" else value <= bar


def _pct(x: object) -> str:
    return f"{100 * float(x):.1f} %"  # type: ignore[arg-type]


def _table(title: str, values: dict[str, float]) -> list[str]:
    return (
        [f"## {title}", "", "| attribute | accuracy |", "|---|---|"]
        + [f"| {a} | {_pct(v)} |" for a, v in values.items()]
        + [""]
    )


def write_metrics_page(results: dict, path: Path) -> None:
    """Render the metrics JSON as a markdown page (``world_metrics.md``)."""
    lines = [
        "# World metrics",
        "",
        "Written by `diffenvs world evaluate` (do not edit by hand). Configuration: "
        f"`{json.dumps(results['config'])}`.",
        "",
    ]
    rows = bar_rows(results)
    if rows:
        met = sum(_met(v, b, d) for _, v, b, d in rows)
        lines += [
            "## Against the world issue's bars",
            "",
            f"{met} of {len(rows)} bars met.",
            "",
            "| measurement | measured | bar | met |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {_pct(v)} | {'≥' if d == 'min' else '≤'} {_pct(b)} | "
            f"{'yes' if _met(v, b, d) else '**no**'} |"
            for n, v, b, d in rows
        ]
        lines.append("")
    if "vae_reconstruction" in results:
        vae = results["vae_reconstruction"]
        lines += [
            "## VAE reconstructions of held-out renders",
            "",
            f"PSNR {vae['psnr_db']:.2f} dB. Accuracy of each reader on the reconstructions:",
            "",
            "| attribute | " + " | ".join(r for r in vae if r != "psnr_db") + " |",
            "|---|" + "---|" * (len(vae) - 1),
        ]
        readers = [r for r in vae if r != "psnr_db"]
        lines += [
            f"| {a} | " + " | ".join(_pct(vae[r][a]) for r in readers) + " |" for a in ATTRIBUTES
        ] + [""]
    for key, title in (
        ("oracle_accuracy_rendered_heldout", "Oracle accuracy on held-out rendered images"),
        ("judge_accuracy_rendered_heldout", "Judge accuracy on held-out rendered images"),
    ):
        if key in results:
            lines += _table(title, results[key])
    if "clip_rendered_heldout" in results:
        c = results["clip_rendered_heldout"]
        lines += _table(
            "CLIP zero-shot accuracy on held-out rendered images", c["zero_shot_accuracy"]
        )
        lines += [
            "True caption ranked above a caption with one attribute changed: "
            f"**{_pct(c['true_vs_one_attribute_changed'])}** of pairs.",
            "",
        ]
    if "t2i_prompt_following_heldout" in results:
        lines += _t2i_lines(results)
    if "sampling_images_per_second" in results:
        s = results["sampling_images_per_second"]
        lines += ["## Speed", ""]
        lines += [
            f"- {name}: **{v:.1f} images/s** ({results['sampling_setting']})"
            for name, v in s.items()
        ]
        lines.append("")
    from diffenvs.io import atomic_write_bytes

    atomic_write_bytes(path, "\n".join(lines).encode())


def _t2i_lines(results: dict) -> list[str]:
    per = results["t2i_prompt_following_heldout"]
    settings = list(per)
    lines = [
        "## Text-to-image: generated images on held-out prompts",
        "",
        "Accuracy against the prompt's attributes as read by the oracle (and by the independent "
        "judge, where shipped).",
        "",
        "| metric | " + " | ".join(settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for key, value in per[settings[0]].items():
        if isinstance(value, dict):
            continue
        fmt = (lambda v: f"{v:.2f}") if "distance" in key else _pct
        cells = [fmt(per[s][key]) if key in per[s] else "—" for s in settings]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if "judge" in per[settings[0]]:
        for key in per[settings[0]]["judge"]:
            lines.append(
                f"| judge: {key} | "
                + " | ".join(_pct(per[s]["judge"][key]) for s in settings)
                + " |"
            )
    lines.append("")
    if "frechet_clip_distance_render_vs_render" in results:
        lines.append(
            "Reference Fréchet CLIP distance between two independent sets of renders of the same "
            f"prompts: {results['frechet_clip_distance_render_vs_render']:.2f}."
        )
    if "diversity_same_prompt_mean_clip_distance" in results:
        d = results["diversity_same_prompt_mean_clip_distance"]
        lines.append(
            "Diversity (mean pairwise CLIP distance between 8 seeds of one prompt): "
            f"generated {d['generated']:.3f}, rendered {d['rendered']:.3f}."
        )
    lines.append("")
    return lines
