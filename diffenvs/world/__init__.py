"""The embedded text-to-image world: renderer, attribute vocabulary, tokenizer and shipped models."""

from diffenvs.world.attributes import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTES,
    COLOURS,
    COUNTS,
    MODIFIER_CATEGORIES,
    MODIFIERS,
    POSITIONS,
    SCENES,
    SHAPES,
    SIZES,
)
from diffenvs.world.render import (
    IMAGE_SIZE,
    Scene,
    is_held_out,
    parse_prompt,
    render,
    render_array,
    sample_scene,
    sample_scenes,
)

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_CLASSES",
    "COLOURS",
    "COUNTS",
    "IMAGE_SIZE",
    "MODIFIERS",
    "MODIFIER_CATEGORIES",
    "POSITIONS",
    "SCENES",
    "SHAPES",
    "SIZES",
    "Scene",
    "is_held_out",
    "parse_prompt",
    "render",
    "render_array",
    "sample_scene",
    "sample_scenes",
]
