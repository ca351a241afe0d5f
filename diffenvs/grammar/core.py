"""Context-free grammars whose slots span a grid of prompts (Marathe, "RLDF", §3).

A :class:`Grammar` is ``G = <T, N, S, R>``: terminals, non-terminals, a start symbol and rules.
Two kinds of non-terminal exist:

* **structural rules** have exactly one production, a sequence of symbols
  (``S -> Object Where Background``), and only fix the sentence's shape;
* **slots** (:class:`Slot`) have one production per value (``Colour -> red | orange | yellow``).
  Each slot is one axis of the grid and its values are that axis's ordered coordinates, so the
  order must have *semantic locality*: neighbouring values should look alike (orange sits between
  red and yellow), because an agent moves one step at a time.

A grid state is one value per slot; :meth:`Grammar.render` expands the start symbol with those
values into a prompt. Grammars can be written in Python, as a dict/JSON, or as text::

    # one rule per line; '|' separates values; quote multi-word terminals
    S -> Count "large" Colour Shape "in the middle of" Scene
    Count[count] -> one | two | three
    Colour[colour] -> red | orange | yellow | green
    Shape[shape] -> circles | squares | stars
    Scene[scene] -> "a night sky" | "an ocean" | "a snow field"

``[attribute]`` ties a slot to an attribute of the embedded world (see
:mod:`diffenvs.world.attributes`) so the attribute oracle can read it off generated images.
:func:`world_grammar` builds the default grammar over the world's slots.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffenvs.errors import summarise
from diffenvs.grammar.slot import SYMBOL, GrammarError, Slot


@dataclass(frozen=True, eq=False)
class Grammar:
    """A context-free grammar laid out as an n-dimensional grid (one axis per slot).

    Args:
        rules: structural non-terminals, each with its single production (a sequence of symbols).
            A symbol that is neither a rule nor a slot is a terminal and is written as is.
        slots: the grid axes, in coordinate order.
        start: the start symbol (a key of ``rules`` or a slot name).
        inflections: number agreement for structural rules: ``{rule: (slot, {slot value: text})}``
            writes ``text`` instead of the rule's production when ``slot`` takes that value (so a
            fixed noun can still agree with a count axis: ``{"Shape": ("Count", {"two": "circles"})}``).
    """

    rules: Mapping[str, tuple[str, ...]]
    slots: tuple[Slot, ...]
    start: str = "S"
    inflections: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)
    _order: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rules = {str(k): tuple(str(s) for s in v) for k, v in dict(self.rules).items()}
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "slots", tuple(self.slots))
        if not self.slots:
            raise GrammarError(
                "The grammar has no slots, so the grid has no axes. Add at least one slot, e.g. "
                "Slot('Colour', ('red', 'green', 'blue'))."
            )
        names = [s.name for s in self.slots]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GrammarError(f"Slots {dupes} are defined twice; give every slot a unique name.")
        both = sorted(set(names) & set(rules))
        if both:
            raise GrammarError(
                f"{both} are defined both as a slot and as a rule; a non-terminal is either a slot "
                "(many one-terminal productions) or a rule (one production). Keep one."
            )
        for name, production in rules.items():
            if not SYMBOL.fullmatch(name):
                raise GrammarError(
                    f"Rule name {name!r} is not a valid non-terminal symbol; use letters, digits "
                    "and underscores starting with a letter."
                )
            if not production:
                raise GrammarError(
                    f"Rule {name!r} has an empty production; give it at least one symbol or "
                    "remove it."
                )
        if self.start not in rules and self.start not in names:
            raise GrammarError(
                f"Start symbol {self.start!r} is neither a rule nor a slot; define it, e.g. "
                f"{self.start} -> {' '.join(names)}."
            )
        order = self._expansion_order()
        unused = [n for n in names if n not in order]
        if unused:
            raise GrammarError(
                f"Slots {unused} are never reached from the start symbol {self.start!r}, so they "
                "would be grid axes that change nothing. Use them in a rule or remove them."
            )
        twice = sorted({n for n in order if order.count(n) > 1})
        if twice:
            raise GrammarError(
                f"Slots {twice} appear more than once in the expansion of {self.start!r}; each "
                "slot must be written once per prompt."
            )
        object.__setattr__(self, "_order", tuple(order))
        by_name = {s.name: s for s in self.slots}
        for rule, (slot_name, forms) in dict(self.inflections).items():
            if rule not in rules:
                raise GrammarError(
                    f"Inflection for {rule!r}, which is not a structural rule; use one of {list(rules)}."
                )
            if slot_name not in by_name:
                raise GrammarError(
                    f"Inflection of {rule!r} follows {slot_name!r}, which is not a slot; use one of {names}."
                )
            bad = sorted(set(forms) - set(by_name[slot_name].values))
            if bad:
                raise GrammarError(
                    f"Inflection of {rule!r} has forms for {bad}, which are not values of {slot_name!r}."
                )
        for slot in self.slots:
            if slot.agree_with is None:
                continue
            other = by_name.get(slot.agree_with)
            if other is None or other is slot:
                raise GrammarError(
                    f"Slot {slot.name!r} agrees with {slot.agree_with!r}, which is not another "
                    f"slot of this grammar; use one of {[n for n in names if n != slot.name]}."
                )
            bad = sorted(set(slot.agreement) - set(other.values))
            if bad:
                raise GrammarError(
                    f"Slot {slot.name!r} has agreement forms for {bad}, which are not values of "
                    f"{other.name!r} ({list(other.values)}); fix the keys."
                )

    def _expansion_order(self) -> list[str]:
        slot_names = {s.name for s in self.slots}
        order: list[str] = []

        def visit(symbol: str, stack: tuple[str, ...]) -> None:
            if symbol in slot_names:
                order.append(symbol)
            elif symbol in self.rules:
                if symbol in stack:
                    cycle = " -> ".join([*stack[stack.index(symbol) :], symbol])
                    raise GrammarError(
                        f"Rule {symbol!r} is recursive ({cycle}); a grid grammar must derive a "
                        "finite sentence, so break the cycle."
                    )
                for s in self.rules[symbol]:
                    visit(s, (*stack, symbol))

        visit(self.start, ())
        return order

    # ------------------------------------------------------------------ the sets of G = <T, N, S, R>
    @property
    def nonterminals(self) -> tuple[str, ...]:
        return (*self.rules, *(s.name for s in self.slots))

    @property
    def terminals(self) -> tuple[str, ...]:
        """Every terminal: the literal words of the rules, then every slot value."""
        nts = set(self.nonterminals)
        literals = [s for p in self.rules.values() for s in p if s not in nts]
        values = [v for s in self.slots for v in s.values]
        return tuple(dict.fromkeys([*literals, *values]))

    # ------------------------------------------------------------------ the grid
    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(s.values) for s in self.slots)

    @property
    def n_states(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def slot(self, name: str) -> Slot:
        for s in self.slots:
            if s.name == name:
                return s
        raise KeyError(f"No slot named {name!r}; slots are {list(self.axes)}.")

    def check_coords(
        self, coords: Sequence[int] | np.ndarray, what: str = "coordinates"
    ) -> tuple[int, ...]:
        """Validate grid coordinates and return them as a tuple of ints."""
        try:
            arr = np.asarray(coords)
        except (ValueError, TypeError):  # ragged nesting
            arr = np.empty(0, dtype=object)
        if arr.shape != (len(self.slots),) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{what} {summarise(coords)} must be {len(self.slots)} integers, one per slot "
                f"{list(self.axes)}; the grid's shape is {self.shape}."
            )
        for i, (c, slot) in enumerate(zip(arr.tolist(), self.slots, strict=True)):
            if not 0 <= c < len(slot.values):
                raise ValueError(
                    f"{what} {tuple(arr.tolist())} are outside the grid: axis {i} ({slot.name!r}) "
                    f"has {len(slot.values)} values (0..{len(slot.values) - 1}) but got {c}. Pass "
                    f"coordinates within the grid's shape {self.shape}."
                )
        return tuple(int(c) for c in arr.tolist())

    def values(self, coords: Sequence[int]) -> dict[str, str]:
        """Slot name → value at ``coords``."""
        coords = self.check_coords(coords)
        return {s.name: s.values[c] for s, c in zip(self.slots, coords, strict=True)}

    def coords(self, values: Mapping[str, str]) -> tuple[int, ...]:
        """Coordinates of a slot-name → value mapping (every slot must be given)."""
        out = []
        for s in self.slots:
            if s.name not in values:
                raise ValueError(
                    f"No value given for slot {s.name!r}; pass one of {list(s.values)}."
                )
            v = values[s.name]
            if v not in s.values:
                raise ValueError(
                    f"{v!r} is not a value of slot {s.name!r}; use one of {list(s.values)}."
                )
            out.append(s.values.index(v))
        return tuple(out)

    def index(self, coords: Sequence[int]) -> int:
        """Flat state index (C order) of ``coords``."""
        return int(np.ravel_multi_index(self.check_coords(coords), self.shape))

    def unindex(self, index: int) -> tuple[int, ...]:
        if not 0 <= int(index) < self.n_states:
            raise ValueError(f"State index {index} is outside 0..{self.n_states - 1}.")
        return tuple(int(c) for c in np.unravel_index(int(index), self.shape))

    def all_coords(self) -> Iterator[tuple[int, ...]]:
        """Every state, in flat-index order."""
        for idx in np.ndindex(*self.shape):
            yield tuple(int(c) for c in idx)

    # ------------------------------------------------------------------ prompts
    def render(self, coords: Sequence[int]) -> str:
        """The prompt the grammar derives at grid state ``coords``."""
        chosen = self.values(coords)
        by_name = {s.name: s for s in self.slots}
        words: list[str] = []

        def expand(symbol: str) -> None:
            if symbol in by_name:
                slot = by_name[symbol]
                other = chosen[slot.agree_with] if slot.agree_with else None
                words.append(slot.text(chosen[symbol], other))
            elif (
                symbol in self.inflections
                and chosen[self.inflections[symbol][0]] in self.inflections[symbol][1]
            ):
                slot_name, forms = self.inflections[symbol]
                words.append(forms[chosen[slot_name]])
            elif symbol in self.rules:
                for s in self.rules[symbol]:
                    expand(s)
            else:
                words.append(symbol)

        expand(self.start)
        text = " ".join(w for w in words if w)
        # Surface forms such as ", striped" leave a space before the comma; tidy it.
        return re.sub(r"\s+", " ", text.replace(" ,", ",")).strip(" ,")

    def parse(self, prompt: str) -> tuple[int, ...]:
        """Coordinates of the state whose prompt matches ``prompt`` (the inverse of render).

        Each slot takes the value whose text (in any agreement form) occurs in ``prompt`` as whole
        words, longest match first; a slot with no match is an error that names it.
        """
        text = " " + re.sub(r"\s+", " ", prompt.lower().replace(",", " , ")) + " "
        coords = []
        for slot in self.slots:
            candidates: list[tuple[int, int]] = []  # (length of text, value index)
            for i, value in enumerate(slot.values):
                forms = {value, slot.text(value)} | {
                    m[value] for m in slot.agreement.values() if value in m
                }
                for form in forms:
                    form = form.strip(" ,").lower()
                    if form and f" {form} " in text:
                        candidates.append((len(form), i))
            if not candidates:
                empty = [i for i, v in enumerate(slot.values) if not slot.text(v).strip(" ,")]
                if empty:  # a value written as nothing ("none") is what an absent mention means
                    coords.append(empty[0])
                    continue
                raise ValueError(
                    f"Prompt {prompt!r} names no value of slot {slot.name!r}; it must contain one "
                    f"of {list(slot.values)}."
                )
            coords.append(max(candidates)[1])
        return tuple(coords)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": self.start,
            "rules": {k: list(v) for k, v in self.rules.items()},
            "slots": {s.name: s.to_dict() for s in self.slots},
        }
        if self.inflections:
            out["inflections"] = {k: [s, dict(f)] for k, (s, f) in self.inflections.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grammar:
        """Build from ``{"start": ..., "rules": {name: [symbols]}, "slots": {name: {...}}}``."""
        if not isinstance(data, Mapping) or "slots" not in data:
            raise GrammarError(
                "A grammar dict needs a 'slots' mapping (name -> {'values': [...], 'attribute': ...})"
                " and usually 'rules' (name -> [symbols]) and 'start'."
            )
        slots_data = data["slots"]
        if not isinstance(slots_data, Mapping):
            raise GrammarError("'slots' must map slot names to {'values': [...], ...} objects.")
        slots = []
        for name, spec in slots_data.items():
            if isinstance(spec, list | tuple):
                spec = {"values": spec}
            allowed = {"values", "attribute", "surface", "agree_with", "agreement"}
            extra = sorted(set(spec) - allowed)
            if extra:
                raise GrammarError(
                    f"Slot {name!r} has unknown keys {extra}; allowed keys are {sorted(allowed)}."
                )
            slots.append(
                Slot(
                    name=name,
                    values=tuple(spec.get("values", ())),
                    attribute=spec.get("attribute"),
                    surface=dict(spec.get("surface", {})),
                    agree_with=spec.get("agree_with"),
                    agreement={k: dict(v) for k, v in spec.get("agreement", {}).items()},
                )
            )
        rules = {}
        for name, production in dict(data.get("rules", {})).items():
            rules[name] = tuple(
                shlex.split(production) if isinstance(production, str) else production
            )
        inflections = {k: (v[0], dict(v[1])) for k, v in dict(data.get("inflections", {})).items()}
        return cls(
            rules=rules, slots=tuple(slots), start=data.get("start", "S"), inflections=inflections
        )

    @classmethod
    def from_text(cls, text: str) -> Grammar:
        """Parse the text form shown in the module docstring.

        A rule with one production is structural; a rule with ``|`` alternatives, or with an
        ``[attribute]`` tag, is a slot whose alternatives must be single (quoted) terminals. The
        first rule's left-hand side is the start symbol.
        """
        rules: dict[str, tuple[str, ...]] = {}
        slots: list[Slot] = []
        start: str | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if "->" not in line:
                raise GrammarError(
                    f"Line {lineno} ({raw.strip()!r}) has no '->'; write rules as "
                    "'Name -> symbols' or slots as 'Name[attribute] -> a | b | c'."
                )
            lhs, rhs = (part.strip() for part in line.split("->", 1))
            m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_]*)\s*(?:\[\s*([A-Za-z_]*)\s*\])?", lhs)
            if m is None:
                raise GrammarError(
                    f"Line {lineno}: {lhs!r} is not a valid left-hand side; use a name such as "
                    "'Colour' or 'Colour[colour]'."
                )
            name, attribute = m.group(1), m.group(2) or None
            if name in rules or any(s.name == name for s in slots):
                raise GrammarError(
                    f"Line {lineno}: {name!r} is defined twice; merge the two lines."
                )
            start = start or name
            try:
                alternatives = [shlex.split(alt) for alt in rhs.split("|")] if rhs else []
            except ValueError as err:
                raise GrammarError(
                    f"Line {lineno}: cannot read {rhs!r} ({err}); check the quotes."
                ) from err
            is_slot = attribute is not None or len(alternatives) > 1 or not any(alternatives)
            if is_slot:
                values = [a for a in alternatives if a]
                if any(len(a) > 1 for a in values):
                    raise GrammarError(
                        f"Line {lineno}: slot {name!r} has an alternative of several symbols; each "
                        'value must be one terminal, so quote multi-word values like "night sky".'
                    )
                slots.append(Slot(name, tuple(a[0] for a in values), attribute=attribute))
            else:
                rules[name] = tuple(alternatives[0])
        if start is None:
            raise GrammarError(
                "The grammar text has no rules; write at least 'S -> Slot' and a slot line."
            )
        return cls(rules=rules, slots=tuple(slots), start=start)

    def to_text(self) -> str:
        """The text form (surface and agreement forms are not representable and are dropped)."""

        def q(s: str) -> str:
            return s if re.fullmatch(r"[A-Za-z0-9_\-']+", s) else json.dumps(s)

        lines = [f"{k} -> {' '.join(q(s) for s in v)}" for k, v in self.rules.items()]
        for s in self.slots:
            tag = f"[{s.attribute}]" if s.attribute else ""
            lines.append(f"{s.name}{tag} -> {' | '.join(q(v) for v in s.values)}")
        if self.start in self.rules:  # the first line must be the start rule
            first = next(i for i, k in enumerate(self.rules) if k == self.start)
            lines.insert(0, lines.pop(first))
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        """A short human-readable summary: axes, sizes and the number of states."""
        parts = [f"{s.name}({len(s.values)})" for s in self.slots]
        return f"{' x '.join(parts)} = {self.n_states} states"
