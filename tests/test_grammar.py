"""The grid grammar: prompts, coordinates, (de)serialisation and clear errors."""

from __future__ import annotations

import json

import pytest

from diffenvs.grammar import (
    GRAMMAR_PRESETS,
    Grammar,
    GrammarError,
    Slot,
    load_grammar,
    world_grammar,
)
from diffenvs.world.attributes import COLOURS, COUNTS, SCENES, SHAPES
from diffenvs.world.render import Scene

TEXT = """
# the paper's notation: S -> P NP ... ; slots are rules with '|' alternatives
S -> P Count Colour Noun I Scene
P -> "a photo of"
I -> in
Count[count] -> one | many
Colour[colour] -> red | orange | yellow
Noun -> "toy cars"
Scene[scene] -> "a park" | "a vegetable garden" | "a train station"
"""


def test_default_grammar_matches_world_captions() -> None:
    g = load_grammar("default")
    assert g.axes == ("Count", "Shape", "Colour", "Scene")
    assert g.shape == (len(COUNTS), len(SHAPES), len(COLOURS), len(SCENES))
    assert g.n_states == 864
    for coords in [(0, 0, 0, 0), (1, 5, 3, 1), (2, 4, 7, 5)]:
        v = g.values(coords)
        scene = Scene(count=v["Count"], shape=v["Shape"], colour=v["Colour"], scene=v["Scene"])
        # Identical to the captions the world's models were trained on.
        assert g.render(coords) == scene.caption()
        assert g.parse(scene.caption()) == coords


def test_presets_and_nine_fold_scale() -> None:
    sizes = {name: load_grammar(name).n_states for name in GRAMMAR_PRESETS}
    assert sizes["default_9x"] == 9 * sizes["default"]
    assert sizes["tiny"] == 18
    # A fixed noun still agrees in number with a count axis.
    tiny = load_grammar("tiny")
    assert tiny.render((1, 0, 0)).startswith("two large red circles")
    assert tiny.render((0, 0, 0)).startswith("one large red circle ")


def test_modifier_slots_render_like_captions() -> None:
    g = load_grammar("modifiers")
    coords = g.parse("three large blue stars in the middle of an ocean, dotted, blurred")
    scene = Scene("three", "star", "blue", scene="ocean", modifiers=("dotted", "blurred"))
    assert g.render(coords) == scene.caption()


def test_text_grammar_sets_and_rendering() -> None:
    g = Grammar.from_text(TEXT)
    assert g.start == "S"
    assert g.axes == ("Count", "Colour", "Scene")
    assert g.shape == (2, 3, 3)
    assert "a photo of" in g.terminals and "orange" in g.terminals
    assert set(g.nonterminals) >= {"S", "P", "I", "Noun", "Count", "Colour", "Scene"}
    assert g.render((1, 2, 1)) == "a photo of many yellow toy cars in a vegetable garden"
    assert g.parse("a photo of one orange toy cars in a train station") == (0, 1, 2)
    assert g.slot("Scene").attribute == "scene"


def test_round_trips() -> None:
    for g in [load_grammar("default"), load_grammar("tiny"), Grammar.from_text(TEXT)]:
        again = Grammar.from_dict(json.loads(json.dumps(g.to_dict())))
        assert [again.render(c) for c in again.all_coords()] == [
            g.render(c) for c in g.all_coords()
        ]
    g = Grammar.from_text(TEXT)
    assert Grammar.from_text(g.to_text()).render((1, 1, 1)) == g.render((1, 1, 1))


def test_index_round_trip_and_order() -> None:
    g = load_grammar("default")
    coords = list(g.all_coords())
    assert len(coords) == g.n_states
    assert [g.index(c) for c in coords] == list(range(g.n_states))
    assert all(g.unindex(g.index(c)) == c for c in coords[::37])


def test_load_grammar_from_files(tmp_path) -> None:
    (tmp_path / "g.txt").write_text(TEXT)
    (tmp_path / "g.json").write_text(json.dumps(load_grammar("tiny").to_dict()))
    assert load_grammar(str(tmp_path / "g.txt")).shape == (2, 3, 3)
    assert load_grammar(tmp_path / "g.json").n_states == 18
    assert (
        load_grammar({"slots": {"A": ["x", "y"]}, "rules": {"S": "the A"}}).render((1,)) == "the y"
    )


def test_world_grammar_options() -> None:
    g = world_grammar(("colour",), values={"colour": ("red", "orange")}, fixed={"count": "three"})
    assert g.shape == (2,)
    assert g.render((1,)) == "three large orange circles in the middle of a grass field"


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Slot("Colour", ()), ["'Colour'", "no values", "at least one value"]),
        (lambda: Grammar.from_text("S -> Colour\nColour[colour] ->"), ["'Colour'", "no values"]),
        (lambda: Slot("Colour", ("red", "red")), ["more than once"]),
        (lambda: Slot("Colour", ("red",), attribute="flavour"), ["'flavour'", "use one of"]),
        (lambda: Grammar({"S": ("A",)}, ()), ["no slots"]),
        (lambda: Grammar({"S": ("X",), "X": ("S",)}, (Slot("A", ("a",)),)), ["recursive"]),
        (lambda: Grammar({"S": ("B",)}, (Slot("A", ("a", "b")),)), ["never reached"]),
        (lambda: Grammar({"S": ("A", "A")}, (Slot("A", ("a", "b")),)), ["more than once"]),
        (lambda: Grammar({"S": ("A",)}, (Slot("A", ("a",)),), start="T"), ["Start symbol 'T'"]),
        (lambda: Grammar.from_text("S -> A\nA -> x y | z"), ["several symbols", "quote"]),
        (lambda: Grammar.from_text("just words"), ["no '->'"]),
        (lambda: load_grammar("no-such-grammar"), ["Unknown grammar", "preset"]),
        (lambda: world_grammar(("flavour",)), ["'flavour'", "not a world attribute"]),
        (lambda: world_grammar(values={"colour": ("red", "gold")}), ["'gold'"]),
    ],
)
def test_bad_grammars_say_what_to_do(build, words) -> None:
    with pytest.raises(GrammarError) as err:
        build()
    for w in words:
        assert w in str(err.value)


def test_bad_coordinates_and_prompts() -> None:
    g = load_grammar("default")
    with pytest.raises(ValueError, match=r"outside the grid: axis 2 \('Colour'\) has 8 values"):
        g.check_coords((0, 0, 8, 0))
    with pytest.raises(ValueError, match="must be 4 integers"):
        g.check_coords((0, 0))
    with pytest.raises(ValueError, match="names no value of slot 'Shape'"):
        g.parse("two red things on an ocean")
    with pytest.raises(GrammarError, match="not a world shape"):
        Slot("Shape", ("blob",), attribute="shape").world_class("blob")
