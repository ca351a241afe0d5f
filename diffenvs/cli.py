"""The ``diffenvs`` command line.

diffenvs envs                                   list registered environments
diffenvs demo                                   the quick-start demo
diffenvs world sample "PROMPT" --n 8 --out grid.png
diffenvs world render "PROMPT" --out render.png
diffenvs world evaluate                         every number of docs/world.md
diffenvs train tabular --algo q_learning        train an agent (see `diffenvs train --help`)
diffenvs bench --tasks pastel --entrants ppo    leaderboard cells + page (docs/benchmark.md)
diffenvs preference make-tasks|synthetic-label|train   reward models from rankings
diffenvs label serve TASKS_DIR --db labels.sqlite   the labeling web app (docs/label.md)

Global options (anywhere on the line): ``--threads N`` (torch threads per process; default 1, or
``DIFFENVS_THREADS``; see :mod:`diffenvs.runtime`), ``--verbose`` (show model-loading bars) and
``--debug`` (show the traceback of an error; by default a user mistake prints one message).

The ``train`` group is not a list written here: every agent package under ``agents/`` declares its
agents (``AGENTS``, see ``agents.common.contract``) and the group is built from what
``discover()`` finds. Heavy modules (torch, the agents' training code) load only when a command
runs, so ``diffenvs --help`` and ``diffenvs train --help`` stay fast.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union

import tyro


def envs() -> None:
    """List the registered diffenvs environments with a one-line description each."""
    import gymnasium as gym

    import diffenvs

    for env_id in diffenvs.ENV_IDS:
        spec = gym.spec(env_id)
        entry = spec.entry_point
        doc = ""
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            cls = getattr(__import__(module, fromlist=[name]), name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{env_id:24s} {doc}")
    if not diffenvs.ENV_IDS:
        print("(no environments registered)")


@dataclass
class Sample:
    """Generate images for a prompt with the embedded world (or any SD-layout model) and save a grid."""

    prompt: Annotated[str, tyro.conf.Positional]
    """The text prompt, e.g. "two small red circles on the left of a grass field, glowing"."""
    n: int = 8
    """How many images (seeds seed, seed+1, ...)."""
    out: Path = Path("grid.png")
    """Output PNG."""
    model: str = "world"
    """'world', a local Stable Diffusion folder, or a hub id."""
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0
    scale: int = 3
    """Pixel upscaling of the saved grid (nearest neighbour) so small images are easy to see."""


def world_sample(cfg: Sample) -> Path:
    from diffenvs.generate import ImageGenerator
    from diffenvs.world.evaluate import save_grid

    if cfg.n < 1:
        raise SystemExit(f"--n must be at least 1, got {cfg.n}.")
    if not cfg.prompt.strip():
        raise SystemExit(
            'The prompt is empty; pass some text, e.g. "one large blue star on an ocean".'
        )
    unknown = _undrawable_words(cfg.prompt) if cfg.model == "world" else []
    if unknown:
        print(
            f"warning: the world's model never saw {', '.join(repr(w) for w in unknown)}; it will "
            f"draw what it can of the rest. {_vocabulary_hint()}",
            file=sys.stderr,
        )
    gen = ImageGenerator(
        cfg.model, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale
    )
    import numpy as np
    from tqdm.auto import tqdm

    seeds = list(range(cfg.seed, cfg.seed + cfg.n))
    chunks = [seeds[i : i + 8] for i in range(0, cfg.n, 8)]
    images = np.concatenate(
        [
            gen.images([cfg.prompt] * len(chunk), chunk)
            for chunk in tqdm(chunks, desc=f"sampling {cfg.n} images", disable=len(chunks) < 2)
        ]
    )
    save_grid(images, cfg.out, cols=min(cfg.n, 8), scale=cfg.scale)
    print(
        f"wrote {cfg.out}: {cfg.n} images of {cfg.prompt!r} by {cfg.model!r} ({cfg.steps} steps, "
        f"seeds {cfg.seed}-{cfg.seed + cfg.n - 1})"
    )
    return cfg.out


def _undrawable_words(prompt: str) -> list[str]:
    """The words of ``prompt`` outside the world's vocabulary (what its renderer and its models
    were trained on), in order."""
    import re

    from diffenvs.world import attributes as a

    known = {*a.SHAPES, *a.SHAPE_PLURALS.values(), *a.COLOURS, *a.COUNTS, *a.SIZES, *a.MODIFIERS}
    known |= {w for phrase in (*a.SCENES, *a.POSITIONS) for w in phrase.split()} | {"center"}
    filler = {"a", "an", "the", "of", "on", "in", "at", "with", "and", "to"}
    words = re.findall(r"[a-z]+", prompt.lower())
    return [w for w in dict.fromkeys(words) if w not in known and w not in filler]


def _vocabulary_hint() -> str:
    from diffenvs.world import attributes as a

    return (
        "The world draws counts (one, two, three), sizes (small, large), the shapes "
        + ", ".join(a.SHAPES)
        + ", the colours "
        + ", ".join(a.COLOURS)
        + ", positions (on the left of, in the middle of, on the right of), the backgrounds "
        + ", ".join(a.SCENES)
        + " and the modifiers "
        + ", ".join(a.MODIFIERS)
        + ', e.g. "two small red stars on the left of a night sky, glowing".'
    )


def _check_drawable(prompt: str, found: dict[str, Any]) -> None:
    """Refuse a prompt of which the world's renderer recognises nothing or only part.

    The renderer fills every attribute a caption does not name with a default, so "a purple
    elephant on the moon" would otherwise draw a purple circle on grass without a word.
    """
    unknown = _undrawable_words(prompt)
    if not found or unknown:
        known = f"it does not know {', '.join(repr(w) for w in unknown)}. " if unknown else ""
        raise ValueError(f"The world cannot draw {prompt!r}: {known}{_vocabulary_hint()}")


@dataclass
class Render:
    """Draw the ground-truth picture of a world caption with the procedural renderer."""

    prompt: Annotated[str, tyro.conf.Positional]
    out: Path = Path("render.png")
    n: int = 8
    seed: int = 0
    scale: int = 3


def world_render(cfg: Render) -> Path:
    import numpy as np

    from diffenvs.world.evaluate import save_grid
    from diffenvs.world.render import Scene, parse_prompt, render

    found = parse_prompt(cfg.prompt)
    _check_drawable(cfg.prompt, found)
    mods = tuple(found.pop("modifiers", []))  # type: ignore[arg-type]
    scene = Scene(**found, modifiers=mods)  # type: ignore[arg-type]
    images = np.stack([np.asarray(render(scene, cfg.seed + i)) for i in range(cfg.n)])
    save_grid(images, cfg.out, cols=min(cfg.n, 8), scale=cfg.scale)
    print(f"wrote {cfg.out}: {scene.caption()!r}")
    return cfg.out


@dataclass
class Demo:
    """The quick-start demo: samples of the embedded world, then a short RL fine-tuning run (~2
    min on one CPU core)."""

    out: Path = Path("out/demo")
    """Output folder."""
    steps: int = 20
    """Sampler steps of the world samples (part 1)."""
    guidance_scale: float = 4.0
    seed: int = 0
    rl_updates: int | None = None
    """Updates of the RL run (default: the direct agent's ``demo`` preset); 0 skips it."""


def demo(cfg: Annotated[Demo, tyro.conf.OmitArgPrefixes]) -> Path:
    """Run the quick-start demo: world samples, then DRaFT through DiffusionDenoise-v0's sampler
    for prompt following (out/demo)."""
    from diffenvs.demo import run_demo, run_rl_demo

    if cfg.rl_updates is not None and cfg.rl_updates < 0:
        raise ValueError(f"--rl-updates must be >= 0 (0 skips the RL run); got {cfg.rl_updates}.")
    start = time.perf_counter()
    path = run_demo(cfg.out, steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed)
    if cfg.rl_updates != 0:
        run_rl_demo(cfg.out, updates=cfg.rl_updates, seed=cfg.seed)
    print(
        f"Demo done in {(time.perf_counter() - start) / 60:.1f} min; every file is in {cfg.out}/."
    )
    return path


class Command(NamedTuple):
    """One subcommand of a group: its tyro config type, what runs it, and its one-line help."""

    config: type
    run: Callable[[Any], Any]
    summary: str | None = None


def _subcommands(commands: dict[str, Command]) -> object:
    members = tuple(
        Annotated[c.config, tyro.conf.subcommand(k, description=c.summary)]
        for k, c in commands.items()
    )
    return Union[members]  # noqa: UP007  (a runtime-built union needs typing.Union)


@dataclass
class _EvaluateHelp:
    """Every number of docs/results/world.md, measured afresh (minutes; `diffenvs world evaluate
    --help` lists its options)."""


def _world_commands(chosen: str | None = None) -> dict[str, tuple]:
    # The evaluation's config lives beside torch-heavy code: load it only when it is the command.
    if chosen == "evaluate":
        from diffenvs.world.evaluate import EvaluateConfig
        from diffenvs.world.evaluate import main as evaluate

        entry: tuple = (EvaluateConfig, evaluate, "Every number of docs/results/world.md.")
    else:
        entry = (_EvaluateHelp, lambda cfg: None, _EvaluateHelp.__doc__)
    return {
        "sample": (Sample, world_sample),
        "render": (Render, world_render),
        "evaluate": entry,
    }


def _train_commands(chosen: str | None = None) -> dict[str, Command]:
    """Every agent the packages under ``agents/`` declare; training code loads only on use."""
    from agents.common.contract import discover

    def runner(spec: Any) -> Callable[[Any], Any]:
        return lambda cfg: spec.load_train()(cfg)

    return {
        name: Command(spec.config, runner(spec), spec.summary) for name, spec in discover().items()
    }


def _preference_commands(chosen: str | None = None) -> dict[str, tuple[type, Callable]]:
    from diffenvs.preference.commands import (
        MakeTasks,
        SyntheticLabel,
        make_tasks_command,
        synthetic_label_command,
    )
    from diffenvs.preference.train import TrainRewardConfig, train_reward_model

    return {
        "make-tasks": (MakeTasks, make_tasks_command),
        "synthetic-label": (SyntheticLabel, synthetic_label_command),
        "train": (TrainRewardConfig, train_reward_model),
    }


def _label_commands(chosen: str | None = None) -> dict[str, tuple[type, Callable]]:
    from diffenvs.label.commands import COMMANDS

    return dict(COMMANDS)


GROUPS: dict[str, Callable[..., dict[str, Any]]] = {
    "world": _world_commands,
    "train": _train_commands,
    "preference": _preference_commands,
    "label": _label_commands,
}


#: Exceptions that mean "the user asked for something that cannot be done": one message, no
#: traceback (``--debug`` shows it). Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def _is_user_error(err: BaseException) -> bool:
    if isinstance(err, USER_ERRORS):
        return True
    try:  # asking for a device this machine does not have
        from diffenvs.errors import DeviceUnavailableError
    except ImportError:
        return False
    return isinstance(err, DeviceUnavailableError)


def _global_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Take ``--debug``, ``--verbose`` and ``--threads N`` out of ``argv`` (they may be anywhere)."""
    rest: list[str] = []
    opts: dict[str, Any] = {"debug": False, "verbose": False, "threads": None}
    it = iter(argv)
    for arg in it:
        if arg in ("--debug", "--verbose"):
            opts[arg[2:]] = True
        elif arg == "--threads" or arg.startswith("--threads="):
            value = arg.partition("=")[2] if "=" in arg else next(it, "")
            if not (value.isdigit() and int(value) >= 1) and value != "torch":
                raise SystemExit(
                    f"diffenvs: error: --threads needs a whole number >= 1 (or 'torch' for torch's "
                    f"default of one thread per core), got {value!r}."
                )
            opts["threads"] = value
        else:
            rest.append(arg)
    return rest, opts


def _fill_threads(cfg: Any, explicit: tuple[str, ...]) -> Any:
    """An agent's own thread option follows ``--threads``/``DIFFENVS_THREADS`` unless typed."""
    from diffenvs.runtime import requested_threads

    n = requested_threads()
    if n is None or not is_dataclass(cfg):
        return cfg
    names = {f.name for f in fields(cfg)}
    for name in ("threads", "torch_threads"):
        if name in names and name not in explicit and isinstance(getattr(cfg, name), int):
            cfg = replace(cfg, **{name: n})
    return cfg


def _run_group(group: str, argv: list[str]) -> None:
    chosen = argv[1] if len(argv) > 1 else None
    # A group's commands are (config, run) or (config, run, summary) tuples.
    commands = {k: Command(*c) for k, c in GROUPS[group](chosen).items()}
    cfg = tyro.cli(_subcommands(commands), args=argv[1:], prog=f"diffenvs {group}")
    for name, command in commands.items():
        if type(cfg) is command.config:
            from agents.common.cli_args import options_in_argv

            explicit: tuple[str, ...] = ()
            if is_dataclass(command.config):
                explicit = tuple(options_in_argv(argv[2:], command.config))
            if is_dataclass(cfg) and any(f.name == "explicit" for f in fields(cfg)):
                # The config has presets: the options the user typed win over them.
                cfg = replace(cfg, explicit=explicit)
            cfg = _fill_threads(cfg, explicit)
            start = time.perf_counter()
            result = command.run(cfg)
            if group == "train":
                from diffenvs.summary import train_summary

                print(train_summary(name, cfg, result, time.perf_counter() - start))
            return


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, opts = _global_options(argv)
    from diffenvs import runtime

    if opts["verbose"]:
        os.environ[runtime.VERBOSE_VAR] = "1"
    try:
        runtime.prepare_process(opts["threads"])
        _main(argv)
    except KeyboardInterrupt:
        raise SystemExit("diffenvs: interrupted.") from None
    except Exception as err:
        if opts["debug"] or not _is_user_error(err):
            raise
        message = str(err) or type(err).__name__
        if isinstance(err, OSError) and err.filename and str(err.filename) not in message:
            message = f"{message}: {err.filename}"
        print(f"diffenvs: error: {message}", file=sys.stderr)
        print("(run again with --debug to see where it happened)", file=sys.stderr)
        raise SystemExit(1) from None


def _bench_command() -> Callable:
    # The leaderboard's config module is light (no torch); its cells run in child processes.
    from agents.bench.run import BenchConfig
    from agents.bench.run import main as run_bench

    def bench(cfg: BenchConfig) -> None:
        """Run leaderboard cells (task x entrant x seed) and regenerate its page (docs/benchmark.md)."""
        run_bench(cfg)

    # Real objects, not this module's postponed (string) annotations: BenchConfig is local.
    bench.__annotations__ = {
        "cfg": Annotated[BenchConfig, tyro.conf.OmitArgPrefixes],
        "return": None,
    }
    return bench


def _main(argv: list[str]) -> None:
    if argv and argv[0] in GROUPS:
        _run_group(argv[0], argv)
        return
    top: dict[str, Callable] = {"envs": envs, "demo": demo, "bench": _bench_command()}
    for name in GROUPS:

        def show(name: str = name) -> None:
            print(f"usage: diffenvs {name} SUBCOMMAND ...   (see `diffenvs {name} --help`)")

        show.__doc__ = f"Commands of the {name} group (run `diffenvs {name} --help`)."
        top[name] = show
    tyro.extras.subcommand_cli_from_dict(
        top,
        args=argv,
        prog="diffenvs",
        description="Gymnasium environments and agents for RL on text-to-image diffusion. Global "
        "options: --threads N (torch threads per process, default 1; or DIFFENVS_THREADS), "
        "--verbose (model-loading bars), --debug (tracebacks).",
    )


if __name__ == "__main__":
    main()
