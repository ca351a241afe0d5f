"""The default grammar over the embedded world's attributes, the named presets, and
:func:`load_grammar`, which turns a preset name, grammar text, a file or a dict into a
:class:`~diffenvs.grammar.core.Grammar`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffenvs.grammar.core import Grammar
from diffenvs.grammar.slot import GrammarError, Slot
from diffenvs.world.attributes import (
    ATTRIBUTE_CLASSES,
    COUNTS,
    MODIFIER_CATEGORIES,
    POSITION_PHRASES,
    SCENE_ARTICLES,
    SHAPE_PLURALS,
)

WORLD_DEFAULTS: dict[str, str] = {
    "count": "one",
    "shape": "circle",
    "colour": "red",
    "size": "large",
    "position": "middle",
    "scene": "grass field",
    **{cat: "none" for cat in MODIFIER_CATEGORIES},
}
_SLOT_NAMES = {
    "count": "Count",
    "shape": "Shape",
    "colour": "Colour",
    "size": "Size",
    "position": "Position",
    "scene": "Scene",
    **{cat: cat.capitalize() for cat in MODIFIER_CATEGORIES},
}


def world_grammar(
    axes: Sequence[str] = ("count", "shape", "colour", "scene"),
    *,
    values: Mapping[str, Sequence[str]] | None = None,
    fixed: Mapping[str, str] | None = None,
) -> Grammar:
    """A grammar over the embedded world whose prompts read exactly like the world's captions.

    ``S -> Object Where Background Style`` with ``Object -> Count Size Colour Shape``,
    ``Where -> Position``, ``Background -> Scene`` and ``Style -> Pattern Effect Finish``. The
    attributes in ``axes`` become slots (grid axes, in the given order) with the world's
    semantically ordered values (optionally narrowed by ``values``); the others are fixed
    terminals taken from ``fixed`` or :data:`WORLD_DEFAULTS` (one large red circle in the middle of a
    grass field, no modifiers). For example the default grid gives
    ``"two large green triangles in the middle of an ocean"``.
    """
    values = dict(values or {})
    fixed = {**WORLD_DEFAULTS, **dict(fixed or {})}
    axes = tuple(axes)
    for a in (*axes, *values, *fixed):
        if a not in ATTRIBUTE_CLASSES:
            raise GrammarError(
                f"{a!r} is not a world attribute; use some of {list(ATTRIBUTE_CLASSES)}."
            )
    if len(set(axes)) != len(axes):
        raise GrammarError(f"axes {list(axes)} repeat an attribute; list each once.")
    for a, v in fixed.items():
        if v not in ATTRIBUTE_CLASSES[a]:
            raise GrammarError(f"fixed {a}={v!r} is not one of {list(ATTRIBUTE_CLASSES[a])}.")

    def slot_values(attr: str) -> tuple[str, ...]:
        vals = tuple(values.get(attr, ATTRIBUTE_CLASSES[attr]))
        bad = [v for v in vals if v not in ATTRIBUTE_CLASSES[attr]]
        if bad:
            raise GrammarError(
                f"values for {attr!r} include {bad}, which the world does not know; use some of "
                f"{list(ATTRIBUTE_CLASSES[attr])} (in that order, to keep semantic locality)."
            )
        return vals

    plural = dict(SHAPE_PLURALS)
    surfaces: dict[str, dict[str, str]] = {
        "position": dict(POSITION_PHRASES),
        "scene": {s: f"{SCENE_ARTICLES[s]} {s}" for s in ATTRIBUTE_CLASSES["scene"]},
        **{
            cat: {"none": "", **{m: f", {m}" for m in ms}}
            for cat, ms in MODIFIER_CATEGORIES.items()
        },
    }
    if "count" not in axes and fixed["count"] != "one":
        surfaces["shape"] = plural  # a fixed plural count makes every noun plural

    rules: dict[str, tuple[str, ...]] = {
        "S": ("Object", "Where", "Background", "Style"),
        "Object": ("Count", "Size", "Colour", "Shape"),
        "Where": ("Position",),
        "Background": ("Scene",),
        "Style": tuple(_SLOT_NAMES[c] for c in MODIFIER_CATEGORIES),
    }
    slots: list[Slot] = []
    for attr in axes:
        name = _SLOT_NAMES[attr]
        agree: dict[str, Any] = {}
        if attr == "shape" and "count" in axes:
            agree = {
                "agree_with": "Count",
                "agreement": {
                    c: plural for c in COUNTS if c != "one" and c in slot_values("count")
                },
            }
        vals = slot_values(attr)
        surface = {k: v for k, v in surfaces.get(attr, {}).items() if k in vals}
        slots.append(Slot(name, vals, attribute=attr, surface=surface, **agree))
    for attr, name in _SLOT_NAMES.items():
        if attr not in axes:  # a fixed attribute is a structural rule with one terminal
            text = surfaces.get(attr, {}).get(fixed[attr], fixed[attr])
            rules[name] = (text,) if text else ()
    # Structural rules that fixed to nothing (no modifier) are dropped from their parents.
    empty = {k for k, v in rules.items() if not v}
    rules = {k: tuple(s for s in v if s not in empty) for k, v in rules.items() if k not in empty}
    rules = {k: v for k, v in rules.items() if v}
    rules["S"] = tuple(
        s for s in rules.get("S", ()) if s in rules or s in {sl.name for sl in slots}
    )
    inflections: dict[str, tuple[str, dict[str, str]]] = {}
    if "count" in axes and "shape" not in axes:  # the fixed noun still agrees with the count axis
        noun = plural[fixed["shape"]]
        inflections["Shape"] = ("Count", {c: noun for c in slot_values("count") if c != "one"})
    return Grammar(rules=rules, slots=tuple(slots), start="S", inflections=inflections)


GRAMMAR_PRESETS: dict[str, tuple[str, ...]] = {
    # 3 x 6 x 8 x 6 = 864 states, 8 actions.
    "default": ("count", "shape", "colour", "scene"),
    # The default plus position (3) and pattern (3): 9 x 864 = 7,776 states (Marathe scales 9x).
    "default_9x": ("count", "shape", "colour", "scene", "position", "pattern"),
    # The default plus the three modifier categories: 864 x 48 = 41,472 states.
    "modifiers": ("count", "shape", "colour", "scene", "pattern", "effect", "finish"),
    # A tiny 2 x 3 x 3 = 18-state grid for tests and quick demos.
    "tiny": ("count", "colour", "scene"),
}
_TINY_VALUES = {
    "count": ("one", "two"),
    "colour": ("red", "orange", "yellow"),
    "scene": ("night sky", "ocean", "snow field"),
}


def load_grammar(spec: Grammar | str | Path | Mapping[str, Any]) -> Grammar:
    """A grammar from a :class:`Grammar`, a preset name, a dict, grammar text, or a file path.

    Presets: ``"default"`` (count × shape × colour × scene, 864 states), ``"default_9x"`` (adds
    position and pattern, 7,776 states), ``"modifiers"`` (adds all modifier categories) and
    ``"tiny"`` (18 states). Files ending in ``.json`` hold a dict; any other file holds text.
    """
    if isinstance(spec, Grammar):
        return spec
    if isinstance(spec, Mapping):
        return Grammar.from_dict(spec)
    text = str(spec)
    if text in GRAMMAR_PRESETS:
        return world_grammar(GRAMMAR_PRESETS[text], values=_TINY_VALUES if text == "tiny" else None)
    if "->" in text:
        return Grammar.from_text(text)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".json":
            try:
                return Grammar.from_dict(json.loads(path.read_text()))
            except json.JSONDecodeError as err:
                raise GrammarError(f"{path} is not valid JSON ({err}); fix the file.") from err
        return Grammar.from_text(path.read_text())
    raise GrammarError(
        f"Unknown grammar {text!r}: it is not a preset ({list(GRAMMAR_PRESETS)}), not grammar text "
        "(no '->'), and not an existing file. Pass a preset name, a .json/.txt file, or a Grammar."
    )
