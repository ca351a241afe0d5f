"""Procedural captioned-image renderer: the ground truth of the embedded world.

A :class:`Scene` is a small set of attributes (count, shape, colour, size, position, background and
style modifiers). :func:`render` draws it deterministically for a seed with PIL and numpy, and
:meth:`Scene.caption` writes it as a prompt such as
``"two small red circles on the left of a grass field, striped, glowing"``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from diffenvs.world.attributes import (
    ATTRIBUTE_CLASSES,
    COLOUR_RGB,
    COLOURS,
    COUNTS,
    MODIFIER_CATEGORIES,
    MODIFIER_CATEGORY,
    MODIFIERS,
    POSITION_PHRASES,
    POSITIONS,
    SCENE_ARTICLES,
    SCENES,
    SHAPE_PLURALS,
    SHAPES,
    SIZES,
)

IMAGE_SIZE = 64
_SUPERSAMPLE = 2  # draw at 2x and downsample, for anti-aliased edges


@dataclass(frozen=True)
class Scene:
    """One image's attributes. ``modifiers`` holds at most one modifier per category."""

    count: str = "one"
    shape: str = "circle"
    colour: str = "red"
    size: str = "large"
    position: str = "middle"
    scene: str = "grass field"
    modifiers: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("count", COUNTS),
            ("shape", SHAPES),
            ("colour", COLOURS),
            ("size", SIZES),
            ("position", POSITIONS),
            ("scene", SCENES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"Scene {name}={value!r} is not one of {list(allowed)}.")
        seen: set[str] = set()
        for m in self.modifiers:
            if m not in MODIFIERS:
                raise ValueError(
                    f"Unknown style modifier {m!r}; known modifiers: {list(MODIFIERS)}."
                )
            cat = MODIFIER_CATEGORY[m]
            if cat in seen:
                raise ValueError(
                    f"Scene has two {cat!r} modifiers in {self.modifiers}; use at most one per "
                    f"category ({ {c: list(v) for c, v in MODIFIER_CATEGORIES.items()} })."
                )
            seen.add(cat)
        # Canonical order (category order) so equal scenes compare and hash equal.
        ordered = tuple(sorted(self.modifiers, key=MODIFIERS.index))
        object.__setattr__(self, "modifiers", ordered)

    def modifier_in(self, category: str) -> str:
        """The modifier of ``category`` in this scene, or ``"none"``."""
        for m in self.modifiers:
            if MODIFIER_CATEGORY[m] == category:
                return m
        return "none"

    def labels(self) -> dict[str, int]:
        """Class index of every oracle attribute (see ``ATTRIBUTE_CLASSES``)."""
        values = {
            "count": self.count,
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "position": self.position,
            "scene": self.scene,
            **{cat: self.modifier_in(cat) for cat in MODIFIER_CATEGORIES},
        }
        return {k: ATTRIBUTE_CLASSES[k].index(v) for k, v in values.items()}

    def base_caption(self) -> str:
        noun = self.shape if self.count == "one" else SHAPE_PLURALS[self.shape]
        where = POSITION_PHRASES[self.position]
        article = SCENE_ARTICLES[self.scene]
        return f"{self.count} {self.size} {self.colour} {noun} {where} {article} {self.scene}"

    def caption(self) -> str:
        return ", ".join([self.base_caption(), *self.modifiers])

    def with_(self, **changes: object) -> Scene:
        return replace(self, **changes)


def is_held_out(caption: str) -> bool:
    """A fixed 10 % of all captions never appear in training; evaluations use them."""
    digest = hashlib.sha256(caption.encode()).digest()
    return digest[0] % 10 == 0


def sample_scene(rng: np.random.Generator, modifier_prob: float = 0.45) -> Scene:
    """Uniform over attributes; each modifier category present with ``modifier_prob``."""
    mods = tuple(
        str(rng.choice(ms)) for ms in MODIFIER_CATEGORIES.values() if rng.random() < modifier_prob
    )
    return Scene(
        count=str(rng.choice(COUNTS)),
        shape=str(rng.choice(SHAPES)),
        colour=str(rng.choice(COLOURS)),
        size=str(rng.choice(SIZES)),
        position=str(rng.choice(POSITIONS)),
        scene=str(rng.choice(SCENES)),
        modifiers=mods,
    )


def sample_scenes(
    n: int, seed: int, split: str = "train", modifier_prob: float = 0.45
) -> list[Scene]:
    """``n`` scenes whose captions belong to ``split`` ("train", "heldout" or "any")."""
    if split not in ("train", "heldout", "any"):
        raise ValueError(f"split must be 'train', 'heldout' or 'any', got {split!r}.")
    rng = np.random.default_rng(seed)
    scenes: list[Scene] = []
    while len(scenes) < n:
        s = sample_scene(rng, modifier_prob)
        held = is_held_out(s.caption())
        if split == "any" or (split == "heldout") == held:
            scenes.append(s)
    return scenes


_WORD_TO_VALUE: dict[str, tuple[str, str]] = {}
for _c in COUNTS:
    _WORD_TO_VALUE[_c] = ("count", _c)
for _s in SHAPES:
    _WORD_TO_VALUE[_s] = ("shape", _s)
    _WORD_TO_VALUE[SHAPE_PLURALS[_s]] = ("shape", _s)
for _c in COLOURS:
    _WORD_TO_VALUE[_c] = ("colour", _c)
for _s in SIZES:
    _WORD_TO_VALUE[_s] = ("size", _s)
for _p in POSITIONS:
    _WORD_TO_VALUE[_p] = ("position", _p)
_WORD_TO_VALUE["center"] = ("position", "middle")


def parse_prompt(prompt: str) -> dict[str, str | list[str]]:
    """Read world attributes out of free text; attributes the text does not name are absent.

    Later mentions win, and modifiers are collected in a list, e.g.
    ``parse_prompt("a red star, glowing")`` gives ``{"colour": "red", "shape": "star",
    "modifiers": ["glowing"]}``.
    """
    text = prompt.lower()
    found: dict[str, str | list[str]] = {}
    for scene in SCENES:
        if scene in text:
            found["scene"] = scene
            text = text.replace(scene, " ")
    mods: list[str] = []
    for word in re.findall(r"[a-z]+", text):
        if word in MODIFIERS and word not in mods:
            mods.append(word)
        elif word in _WORD_TO_VALUE:
            attr, value = _WORD_TO_VALUE[word]
            found[attr] = value
    if mods:
        found["modifiers"] = mods
    return found


def scene_from_prompt(prompt: str) -> Scene:
    """The scene a prompt describes (:func:`parse_prompt`): attributes it does not name keep
    :class:`Scene`'s defaults, and within a modifier category the later modifier wins."""
    found = parse_prompt(prompt)
    mods = {MODIFIER_CATEGORY[m]: m for m in found.pop("modifiers", [])}
    return Scene(**found, modifiers=tuple(mods.values()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Drawing


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(offset + angle + 2 * math.pi * k / n),
                cy + radius * math.sin(offset + angle + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "square":
        return ring(4, r * 1.05, math.pi / 4)
    if shape == "diamond":
        pts = ring(4, 1.0, 0.0)
        return [(cx + (x - cx) * r * 0.8, cy + (y - cy) * r * 1.15) for x, y in pts]
    if shape == "triangle":
        return ring(3, r * 1.15, -math.pi / 2)
    if shape == "star":
        outer = ring(5, r * 1.2, -math.pi / 2)
        inner = ring(5, r * 0.5, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        w = r * 0.38
        pts = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]
    raise ValueError(shape)


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    fill: int | tuple[int, ...],
    outline: int | None = None,
    width: int = 0,
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)
    else:
        pts = _polygon(shape, cx, cy, r, angle)
        draw.polygon(pts, fill=fill, outline=outline, width=width)


def _background(scene: str, size: int, rng: np.random.Generator) -> Image.Image:
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / size
    img = np.zeros((h, w, 3), np.float32)

    def fill(rgb: tuple[float, float, float]) -> None:
        img[:] = np.array(rgb, np.float32)

    if scene == "night sky":
        top, bottom = np.array([8, 10, 35]), np.array([35, 40, 90])
        img[:] = top + (bottom - top) * yy[..., None]
        for _ in range(int(rng.integers(14, 22))):
            x, y = rng.integers(0, w), rng.integers(0, h)
            s = max(1, size // 64)
            img[y : y + s, x : x + s] = 240
    elif scene == "ocean":
        phase = rng.uniform(0, 2 * math.pi)
        waves = np.sin(xx * 2 * math.pi * 2.0 + yy * 40 + phase)
        img[:] = np.array([25, 85, 150], np.float32)
        img += (waves > 0.75)[..., None] * np.array([50, 70, 70], np.float32)
    elif scene == "snow field":
        top, bottom = np.array([200, 215, 235]), np.array([245, 247, 252])
        img[:] = top + (bottom - top) * np.clip(yy * 1.6, 0, 1)[..., None]
        for _ in range(int(rng.integers(10, 18))):
            x, y = rng.integers(0, w), rng.integers(0, h)
            s = max(1, size // 64)
            img[y : y + s, x : x + s] = (170, 185, 210)
    elif scene == "desert":
        fill((225, 190, 120))
        phase = rng.uniform(0, 2 * math.pi)
        dunes = 0.5 + 0.15 * np.sin(xx * 2 * math.pi * 1.3 + phase)
        img[yy > dunes] = (195, 150, 85)
        img[yy < 0.2] = (240, 215, 160)
    elif scene == "grass field":
        fill((95, 150, 60))
        blades = rng.random((h, w)) < 0.06
        img[blades] = (60, 105, 35)
        img[yy < 0.15] = (150, 195, 225)
    elif scene == "brick wall":
        fill((200, 195, 185))  # mortar
        brick_h = size / 8
        row = (yy * size / brick_h).astype(int)
        offset = (row % 2) * 0.5
        u = (xx * size / (2 * brick_h) + offset) % 1.0
        v = (yy * size / brick_h) % 1.0
        mortar = (u < 0.07) | (v < 0.12)
        img[~mortar] = (155, 60, 45)
    else:  # pragma: no cover - Scene validates names
        raise ValueError(scene)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _place(
    count: int, r: float, position: str, size: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    x_lo, x_hi = {"left": (0.08, 0.34), "middle": (0.38, 0.62), "right": (0.66, 0.92)}[position]
    y_lo, y_hi = 0.2, 0.82
    min_dist = 2.05 * r
    for _ in range(300):
        pts = [
            (rng.uniform(x_lo, x_hi) * size, rng.uniform(y_lo, y_hi) * size) for _ in range(count)
        ]
        if all(
            math.dist(pts[i], pts[j]) >= min_dist for i in range(count) for j in range(i + 1, count)
        ):
            return pts
    # Fallback: a vertical column, always valid for the sizes used here.
    xc = (x_lo + x_hi) / 2 * size
    ys = np.linspace(y_lo, y_hi, count) * size if count > 1 else [(y_lo + y_hi) / 2 * size]
    return [(xc + rng.uniform(-1, 1), float(y)) for y in ys]


def _pattern_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / 10
    if kind == "striped":
        return ((xx + yy + rng.uniform(0, period)) % period) < period * 0.45
    if kind == "dotted":
        p = size / 12
        du = (xx + p / 2) % p - p / 2
        dv = (yy + p / 2) % p - p / 2
        return du**2 + dv**2 < (p * 0.28) ** 2
    raise ValueError(kind)


def render(scene: Scene, seed: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw ``scene`` as an RGB PIL image of ``size``×``size``; deterministic for ``seed``."""
    return render_with_mask(scene, seed, size)[0]


def render_with_mask(
    scene: Scene, seed: int = 0, size: int = IMAGE_SIZE
) -> tuple[Image.Image, np.ndarray]:
    """Like :func:`render`, plus the objects' coverage mask (float32 in [0, 1], ``size``×``size``)."""
    rng = np.random.default_rng(seed)
    big = size * _SUPERSAMPLE
    count = COUNTS.index(scene.count) + 1
    r = (0.085 if scene.size == "small" else 0.125) * big
    centres = _place(count, r, scene.position, big, rng)
    angles = [rng.uniform(-0.25, 0.25) for _ in centres]
    jitter = rng.integers(-12, 13, size=3)
    colour = tuple(
        int(np.clip(c + j, 0, 255)) for c, j in zip(COLOUR_RGB[scene.colour], jitter, strict=True)
    )

    canvas = _background(scene.scene, big, rng)
    mask = Image.new("L", (big, big), 0)
    mdraw = ImageDraw.Draw(mask)
    for (cx, cy), a in zip(centres, angles, strict=True):
        _draw_shape(mdraw, scene.shape, cx, cy, r, a, fill=255)

    effect = scene.modifier_in("effect")
    if effect == "shadowed":
        off = int(0.05 * big)
        shadow = Image.new("L", (big, big), 0)
        shadow.paste(mask, (off, off))
        shadow = shadow.filter(ImageFilter.GaussianBlur(0.015 * big))
        canvas = Image.composite(
            Image.new("RGB", canvas.size, (15, 15, 15)),
            canvas,
            shadow.point(lambda v: int(v * 0.85)),
        )
    elif effect == "glowing":
        halo = mask.filter(ImageFilter.MaxFilter(_odd(0.06 * big))).filter(
            ImageFilter.GaussianBlur(0.04 * big)
        )
        glow = tuple(int(255 * 0.55 + c * 0.45) for c in colour)
        canvas = Image.composite(
            Image.new("RGB", canvas.size, glow),
            canvas,
            halo.point(lambda v: min(255, int(v * 1.6))),
        )

    obj = np.zeros((big, big, 3), np.uint8)
    obj[:] = colour
    pattern = scene.modifier_in("pattern")
    if pattern != "none":
        pm = _pattern_mask(pattern, big, rng)
        # A darker shade of the object's colour keeps the silhouette visible on any background.
        obj[pm] = (np.array(colour) * 0.4).astype(np.uint8)
    canvas = Image.composite(Image.fromarray(obj), canvas, mask)

    if effect == "outlined":
        odraw = ImageDraw.Draw(canvas)
        for (cx, cy), a in zip(centres, angles, strict=True):
            _draw_shape(
                odraw, scene.shape, cx, cy, r, a, fill=None, outline=0, width=int(0.028 * big)
            )

    image = canvas.resize((size, size), Image.Resampling.BOX)
    finish = scene.modifier_in("finish")
    if finish == "pastel":
        arr = np.asarray(image, np.float32)
        grey = arr.mean(axis=2, keepdims=True)
        arr = 0.6 * (0.6 * arr + 0.4 * grey) + 0.4 * 255
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif finish == "pixelated":
        block = max(2, size // 16)
        small = image.resize((size // block, size // block), Image.Resampling.BOX)
        image = small.resize((size, size), Image.Resampling.NEAREST)
    elif finish == "blurred":
        image = image.filter(ImageFilter.GaussianBlur(size / 40))
    coverage = np.asarray(mask.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0
    return image, coverage


def _odd(x: float) -> int:
    n = max(3, int(x))
    return n if n % 2 else n + 1


def render_array(
    scenes: list[Scene], seeds: list[int] | None = None, size: int = IMAGE_SIZE
) -> np.ndarray:
    """Render many scenes into a uint8 array of shape (N, size, size, 3)."""
    seeds = list(range(len(scenes))) if seeds is None else seeds
    return np.stack([np.asarray(render(s, sd, size)) for s, sd in zip(scenes, seeds, strict=True)])
