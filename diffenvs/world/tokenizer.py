"""A small CLIP-format BPE tokenizer whose merges cover every word of the world.

Merges are learned by plain byte-pair encoding over the world's words, so each world word is one
token, while any other text still tokenizes (down to single bytes) like it would with CLIP's own
tokenizer. Special tokens come last, so ``<|endoftext|>`` has the largest id: open_clip pools text
features at the arg-max token id, exactly as with OpenAI's vocabulary.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

from diffenvs.world.attributes import world_words

CONTEXT_LENGTH = 32
EXTRA_WORDS = (",", "an", "image", "of", "with", "and", "the")


def _bytes_to_unicode() -> dict[int, str]:
    # The reversible byte → printable-character table that GPT-2 and CLIP tokenizers share.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges until every word is a single symbol (ties broken alphabetically)."""
    corpus = [[*w[:-1], w[-1] + "</w>"] for w in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols in corpus:
            pairs.update(itertools.pairwise(symbols))
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for i, symbols in enumerate(corpus):
            out, j = [], 0
            while j < len(symbols):
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == best:
                    out.append(symbols[j] + symbols[j + 1])
                    j += 2
                else:
                    out.append(symbols[j])
                    j += 1
            corpus[i] = out


def write_tokenizer_files(directory: str | Path, extra_words: list[str] | None = None) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP format) for the world's words."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    words = [*world_words(), *EXTRA_WORDS, *(extra_words or [])]
    merges = learn_merges(words)
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [b + "</w>" for b in base] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n")
    return directory


def build_world_tokenizer(directory: str | Path):  # -> transformers.CLIPTokenizer
    """Create (or reload) the world tokenizer saved in ``directory``."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    if not (directory / "vocab.json").exists():
        write_tokenizer_files(directory)
    vocab = json.loads((directory / "vocab.json").read_text())
    merge_lines = (directory / "merges.txt").read_text().splitlines()[1:]
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(line.split(" ")) for line in merge_lines if line],
        model_max_length=CONTEXT_LENGTH,
        pad_token="<|endoftext|>",
    )
    return tok
