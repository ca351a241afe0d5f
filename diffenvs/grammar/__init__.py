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

from diffenvs.grammar.core import Grammar
from diffenvs.grammar.slot import GrammarError, Slot
from diffenvs.grammar.world import GRAMMAR_PRESETS, WORLD_DEFAULTS, load_grammar, world_grammar

__all__ = [
    "GRAMMAR_PRESETS",
    "WORLD_DEFAULTS",
    "Grammar",
    "GrammarError",
    "Slot",
    "load_grammar",
    "world_grammar",
]
