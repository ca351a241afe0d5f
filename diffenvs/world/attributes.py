"""The vocabulary of the embedded world: every attribute a scene can have, in a fixed order.

Orders matter: value lists are semantically ordered (neighbouring values look alike), which the
grammar-grid environment relies on, and indices into these tuples are the oracle's class labels.
"""

from __future__ import annotations

COUNTS: tuple[str, ...] = ("one", "two", "three")

# Ordered roughly by how many corners a shape has, so neighbours look alike.
SHAPES: tuple[str, ...] = ("circle", "diamond", "square", "triangle", "cross", "star")
SHAPE_PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES} | {"cross": "crosses"}

# Ordered around the hue wheel.
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (250, 135, 15),
    "yellow": (250, 225, 30),
    "green": (35, 200, 55),
    "cyan": (40, 215, 225),
    "blue": (35, 65, 235),
    "purple": (150, 45, 210),
    "pink": (255, 120, 195),
}

SIZES: tuple[str, ...] = ("small", "large")

POSITIONS: tuple[str, ...] = ("left", "middle", "right")
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left of",
    "middle": "in the middle of",
    "right": "on the right of",
}

# Ordered so that similar backgrounds are neighbours (dark/blue → light → warm ground → wall).
SCENES: tuple[str, ...] = (
    "night sky",
    "ocean",
    "snow field",
    "desert",
    "grass field",
    "brick wall",
)
SCENE_ARTICLES: dict[str, str] = {s: "a" for s in SCENES} | {"ocean": "an"}

# Style modifiers, at most one per category in a scene.
MODIFIER_CATEGORIES: dict[str, tuple[str, ...]] = {
    "pattern": ("striped", "dotted"),
    "effect": ("outlined", "glowing", "shadowed"),
    "finish": ("pastel", "pixelated", "blurred"),
}
MODIFIERS: tuple[str, ...] = tuple(m for ms in MODIFIER_CATEGORIES.values() for m in ms)
MODIFIER_CATEGORY: dict[str, str] = {m: cat for cat, ms in MODIFIER_CATEGORIES.items() for m in ms}

# Every attribute the oracle predicts, with its classes. Modifier categories include "none".
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "count": COUNTS,
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "scene": SCENES,
    **{cat: ("none", *ms) for cat, ms in MODIFIER_CATEGORIES.items()},
}
ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_CLASSES)


def world_words() -> list[str]:
    """Every word a world caption can contain, for building the world tokenizer."""
    words: set[str] = set()
    phrases = [
        *COUNTS,
        *SHAPES,
        *SHAPE_PLURALS.values(),
        *COLOURS,
        *SIZES,
        *POSITION_PHRASES.values(),
        *SCENES,
        *SCENE_ARTICLES.values(),
        *MODIFIERS,
        "a photo of an image with",
    ]
    for phrase in phrases:
        words.update(phrase.split())
    return sorted(words)
