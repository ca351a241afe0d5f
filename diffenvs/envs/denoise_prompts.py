"""Prompt sets for the denoising environment: a list, a file, or the world's prompt sampler."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

WORLD_SPLITS = ("train", "heldout", "any")


class PromptSource:
    """Draws prompts with the environment's own ``np.random.Generator`` (so seeding is exact)."""

    description: str = "prompts"

    def sample(self, rng: np.random.Generator) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


class ListPrompts(PromptSource):
    """Uniform over a fixed list of prompts."""

    def __init__(self, prompts: Sequence[str], origin: str = "list") -> None:
        prompts = list(prompts)
        if not prompts:
            raise ValueError(
                f"The prompt set ({origin}) is empty; pass at least one prompt, or prompts='world' "
                "for the world's prompt sampler."
            )
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(
                    f"Prompt {i} of the prompt set ({origin}) is a {type(p).__name__}, not a str."
                )
            if not p.strip():
                raise ValueError(
                    f"Prompt {i} of the prompt set ({origin}) is empty ({p!r}); every prompt must "
                    "be non-empty text."
                )
        self.prompts = prompts
        self.description = f"{len(prompts)} prompts from {origin}"

    def sample(self, rng: np.random.Generator) -> str:
        return self.prompts[int(rng.integers(len(self.prompts)))]


class WorldPrompts(PromptSource):
    """Fresh captions from the world's scene sampler, restricted to a split (seed-exact)."""

    def __init__(self, split: str = "train", modifier_prob: float = 0.45) -> None:
        if split not in WORLD_SPLITS:
            raise ValueError(
                f"Unknown world prompt split {split!r}; use one of {list(WORLD_SPLITS)}, e.g. 'world:heldout'."
            )
        self.split, self.modifier_prob = split, modifier_prob
        self.description = f"world:{split}"

    def sample(self, rng: np.random.Generator) -> str:
        from diffenvs.world.render import is_held_out, sample_scene

        while True:
            caption = sample_scene(rng, self.modifier_prob).caption()
            if self.split == "any" or (self.split == "heldout") == is_held_out(caption):
                return caption


class CallablePrompts(PromptSource):
    """A user function ``fn(rng) -> str``."""

    def __init__(self, fn: Callable[[np.random.Generator], str]) -> None:
        self.fn = fn
        self.description = getattr(fn, "__name__", "callable")

    def sample(self, rng: np.random.Generator) -> str:
        prompt = self.fn(rng)
        if not isinstance(prompt, str):
            raise TypeError(
                f"The prompt function {self.description} returned a {type(prompt).__name__}, not a str."
            )
        if not prompt.strip():
            raise ValueError(
                f"The prompt function {self.description} returned an empty prompt ({prompt!r})."
            )
        return prompt


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` (one per line; blank lines and ``#`` comments skipped), a ``.json``
    list of strings, or a ``.jsonl`` file of ``{"prompt": ...}`` objects (or bare strings)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise ValueError("the top level is not a list of prompts")
            prompts = [d["prompt"] if isinstance(d, dict) else d for d in data]
        elif path.suffix == ".jsonl":
            prompts = []
            for line in text.splitlines():
                if line.strip():
                    d = json.loads(line)
                    prompts.append(d["prompt"] if isinstance(d, dict) else d)
        else:
            prompts = [
                ln.strip()
                for ln in text.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")
            ]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"Could not read prompts from {path} ({type(err).__name__}: {err}). Use a .txt file with "
            'one prompt per line, a .json list of strings, or .jsonl lines like {"prompt": "..."}.'
        ) from err
    return prompts


def count_prompts(split: str = "train", n: int = 64, seed: int = 0) -> list[str]:
    """World captions without style modifiers, the three counts in turn (``split``: train/heldout).

    The oracle reward checks every attribute a caption names, counts included; these short
    captions make counting a large share of what it checks.
    """
    from diffenvs.world.attributes import COUNTS
    from diffenvs.world.render import is_held_out, sample_scene

    if split not in ("train", "heldout"):
        raise ValueError(f"count prompt split must be 'train' or 'heldout', got {split!r}.")
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    misses = 0
    # A long run of draws with nothing new means the split has fewer than n captions.
    while len(out) < n and misses < 20_000:
        misses += 1
        scene = sample_scene(rng, modifier_prob=0.0).with_(count=COUNTS[len(out) % len(COUNTS)])
        caption = scene.caption()
        if caption not in seen and is_held_out(caption) == (split == "heldout"):
            seen.add(caption)
            out.append(caption)
            misses = 0
    if len(out) < n:
        raise ValueError(
            f"Found only {len(out)} distinct {split} count prompts, fewer than n={n}; ask for fewer "
            "(the world has ~4,700 training and ~500 held-out modifier-free captions)."
        )
    return out


def make_prompt_source(spec: Any = "world") -> PromptSource:
    """``"world"``/``"world:SPLIT"``, ``"counts"``/``"counts:SPLIT"`` (64 :func:`count_prompts`)
    or ``"counts:SPLIT:N"`` (N of them), ``"prompt:TEXT"`` (TEXT as the only prompt), a prompt file
    path, a list of prompts, ``fn(rng) -> str``, or a :class:`PromptSource`."""
    if isinstance(spec, PromptSource):
        return spec
    if spec is None:
        spec = "world"
    if isinstance(spec, str | Path):
        text = str(spec)
        if text == "world" or text.startswith("world:"):
            return WorldPrompts(text.partition(":")[2] or "train")
        if text == "counts" or text.startswith("counts:"):
            split, _, size = text.partition(":")[2].partition(":")
            if size and not (size.isdigit() and int(size) >= 1):
                raise ValueError(
                    f"prompts={text!r}: write 'counts:SPLIT:N' with N a positive number of prompts "
                    "(e.g. counts:train:2048)."
                )
            return ListPrompts(count_prompts(split or "train", n=int(size or 64)), origin=text)
        if text.startswith("prompt:"):
            if not text[7:].strip():
                raise ValueError("prompts='prompt:' names no prompt; write 'prompt:TEXT'.")
            return ListPrompts([text[7:].strip()], origin=text)
        path = Path(text).expanduser()
        if path.is_file():
            return ListPrompts(read_prompt_file(path), origin=str(path))
        raise ValueError(
            f"prompts={text!r} is neither 'world', 'world:SPLIT' ({'/'.join(WORLD_SPLITS)}) nor an "
            f"existing prompt file. To use it as the only prompt, pass 'prompt:{text}' (or "
            f"prompts=[{text!r}] from Python)."
        )
    if callable(spec):
        return CallablePrompts(spec)
    if isinstance(spec, Sequence | np.ndarray):
        return ListPrompts(spec)
    raise TypeError(
        f"prompts must be 'world', a file path, a list of str, or a function rng -> str; got {type(spec).__name__}."
    )
