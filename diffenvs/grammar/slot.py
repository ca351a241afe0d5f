"""Grid axes of a grammar: :class:`Slot` (a non-terminal whose ordered values are one axis's
coordinates) and :class:`GrammarError`. The grammar itself is :mod:`diffenvs.grammar.core`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffenvs.world.attributes import ATTRIBUTE_CLASSES, MODIFIER_CATEGORIES

#: A valid non-terminal symbol (slot and rule names).
SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class GrammarError(ValueError):
    """A grammar that cannot be laid out as a grid; the message says what to change."""


@dataclass(frozen=True, eq=False)
class Slot:
    """One grid axis: a non-terminal whose productions are ordered terminal values.

    Args:
        name: the non-terminal's symbol, e.g. ``"Colour"``.
        values: the ordered values (coordinates 0, 1, ...). Neighbours should look alike.
        attribute: the world attribute this slot controls (``"count"``, ``"shape"``, ``"colour"``,
            ``"size"``, ``"position"``, ``"scene"`` or a modifier category), or ``None`` for slots
            the world oracle cannot read (then only the CLIP reward can score them).
        surface: text written for a value when it differs from the value, e.g.
            ``{"ocean": "an ocean", "none": ""}``; an empty string writes nothing.
        agree_with: another slot whose value changes this slot's text (number agreement).
        agreement: ``{other slot's value: {value: text}}``, e.g.
            ``{"two": {"circle": "circles"}}`` with ``agree_with="Count"``.
    """

    name: str
    values: tuple[str, ...]
    attribute: str | None = None
    surface: Mapping[str, str] = field(default_factory=dict)
    agree_with: str | None = None
    agreement: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(str(v) for v in self.values))
        if not SYMBOL.fullmatch(self.name):
            raise GrammarError(
                f"Slot name {self.name!r} is not a valid non-terminal symbol; use letters, digits "
                "and underscores starting with a letter, e.g. 'Colour'."
            )
        if not self.values:
            raise GrammarError(
                f"Slot {self.name!r} has no values, so its grid axis would be empty. Give it at "
                f"least one value, e.g. {self.name} -> red | orange | yellow."
            )
        dupes = sorted({v for v in self.values if self.values.count(v) > 1})
        if dupes:
            raise GrammarError(
                f"Slot {self.name!r} lists {dupes} more than once; each value must be one distinct "
                "grid coordinate, so remove the duplicates."
            )
        if self.attribute is not None and self.attribute not in ATTRIBUTE_CLASSES:
            raise GrammarError(
                f"Slot {self.name!r} names world attribute {self.attribute!r}, which does not exist; "
                f"use one of {list(ATTRIBUTE_CLASSES)} or None."
            )
        unknown = sorted(set(self.surface) - set(self.values))
        if unknown:
            raise GrammarError(
                f"Slot {self.name!r} gives surface text for {unknown}, which are not among its "
                f"values {list(self.values)}; fix the spelling or add the values."
            )
        if self.agreement and self.agree_with is None:
            raise GrammarError(
                f"Slot {self.name!r} has agreement forms but no agree_with slot; set agree_with to "
                "the slot whose value selects the form (e.g. 'Count')."
            )

    def text(self, value: str, other: str | None = None) -> str:
        """The words written for ``value`` (``other`` is the agree_with slot's value)."""
        if other is not None and value in self.agreement.get(other, {}):
            return self.agreement[other][value]
        return self.surface.get(value, value)

    def world_class(self, value: str) -> int:
        """Index of ``value`` among the oracle's classes for this slot's attribute."""
        if self.attribute is None:
            raise GrammarError(
                f"Slot {self.name!r} is not tied to a world attribute, so the oracle cannot read "
                f"it; set Slot(attribute=...) to one of {list(ATTRIBUTE_CLASSES)} or use the CLIP "
                "reward."
            )
        classes = ATTRIBUTE_CLASSES[self.attribute]
        if value in classes:
            return classes.index(value)
        # Values written as phrases ("an ocean", "circles") still name one world class.
        from diffenvs.world.render import parse_prompt

        found = parse_prompt(value)
        key = "modifiers" if self.attribute in MODIFIER_CATEGORIES else self.attribute
        hit = found.get(key)
        if isinstance(hit, list):
            hit = next((m for m in hit if m in classes), None)
        if hit in classes:
            return classes.index(hit)
        raise GrammarError(
            f"Slot {self.name!r} value {value!r} is not a world {self.attribute}; the world knows "
            f"{list(classes)}. Rename the value or drop attribute={self.attribute!r}."
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"values": list(self.values)}
        if self.attribute is not None:
            out["attribute"] = self.attribute
        if self.surface:
            out["surface"] = dict(self.surface)
        if self.agree_with is not None:
            out["agree_with"] = self.agree_with
            out["agreement"] = {k: dict(v) for k, v in self.agreement.items()}
        return out
