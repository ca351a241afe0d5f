"""The ``diffenvs`` command line.

diffenvs envs                                   list registered environments
diffenvs demo                                   the quick-start demo
diffenvs world sample "PROMPT" --n 8 --out grid.png
diffenvs world render "PROMPT" --out render.png
diffenvs world evaluate                         every number of docs/world.md
diffenvs train tabular --algo q_learning        train an agent (see `diffenvs train --help`)
diffenvs preference make-tasks|synthetic-label|train   reward models from rankings
diffenvs label serve TASKS_DIR --db labels.sqlite   the labeling web app (docs/label.md)

The ``train`` group is not a list written here: every agent package under ``agents/`` declares its
agents (``AGENTS``, see ``agents.common.contract``) and the group is built from what
``discover()`` finds. Heavy modules (torch, the agents' training code) load only when a command
runs, so ``diffenvs --help`` and ``diffenvs train --help`` stay fast.
"""

from __future__ import annotations

import sys
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
    gen = ImageGenerator(
        cfg.model, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale
    )
    images = gen.images([cfg.prompt] * cfg.n, list(range(cfg.seed, cfg.seed + cfg.n)))
    save_grid(images, cfg.out, cols=min(cfg.n, 8), scale=cfg.scale)
    print(f"wrote {cfg.out} ({cfg.n} images for {cfg.prompt!r})")
    return cfg.out


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
    mods = tuple(found.pop("modifiers", []))  # type: ignore[arg-type]
    scene = Scene(**found, modifiers=mods)  # type: ignore[arg-type]
    images = np.stack([np.asarray(render(scene, cfg.seed + i)) for i in range(cfg.n)])
    save_grid(images, cfg.out, cols=min(cfg.n, 8), scale=cfg.scale)
    print(f"wrote {cfg.out}: {scene.caption()!r}")
    return cfg.out


@dataclass
class Demo:
    """The quick-start demo: samples of the embedded world, then a short PPO run (a few minutes)."""

    out: Path = Path("out/demo")
    """Output folder."""
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0
    ppo_updates: int = 40
    """Updates of the PPO run (the agent's quick preset, ~3 min on 2 cores); 0 skips it."""


def demo(cfg: Annotated[Demo, tyro.conf.OmitArgPrefixes]) -> Path:
    """Run the quick-start demo: world samples, then PPO on DiffusionDenoise-v0 (out/demo)."""
    from diffenvs.demo import run_demo, run_ppo_demo

    if cfg.ppo_updates < 0:
        raise ValueError(f"--ppo-updates must be >= 0 (0 skips PPO); got {cfg.ppo_updates}.")
    path = run_demo(cfg.out, steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed)
    if cfg.ppo_updates:
        run_ppo_demo(cfg.out, updates=cfg.ppo_updates, seed=cfg.seed)
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


def _world_commands() -> dict[str, tuple[type, Callable]]:
    from diffenvs.world.evaluate import EvaluateConfig
    from diffenvs.world.evaluate import main as evaluate

    return {
        "sample": (Sample, world_sample),
        "render": (Render, world_render),
        "evaluate": (EvaluateConfig, evaluate),
    }


def _train_commands() -> dict[str, Command]:
    """Every agent the packages under ``agents/`` declare; training code loads only on use."""
    from agents.common.contract import discover

    def runner(spec: Any) -> Callable[[Any], Any]:
        return lambda cfg: spec.load_train()(cfg)

    return {
        name: Command(spec.config, runner(spec), spec.summary) for name, spec in discover().items()
    }


def _preference_commands() -> dict[str, tuple[type, Callable]]:
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


def _label_commands() -> dict[str, tuple[type, Callable]]:
    from diffenvs.label.commands import COMMANDS

    return dict(COMMANDS)


GROUPS: dict[str, Callable[[], dict[str, Any]]] = {
    "world": _world_commands,
    "train": _train_commands,
    "preference": _preference_commands,
    "label": _label_commands,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in GROUPS:
        # A group's commands are (config, run) or (config, run, summary) tuples.
        commands = {k: Command(*c) for k, c in GROUPS[argv[0]]().items()}
        cfg = tyro.cli(_subcommands(commands), args=argv[1:], prog=f"diffenvs {argv[0]}")
        for command in commands.values():
            if type(cfg) is command.config:
                if is_dataclass(cfg) and any(f.name == "explicit" for f in fields(cfg)):
                    # The config has presets: the options the user typed win over them.
                    from agents.common.cli_args import options_in_argv

                    cfg = replace(cfg, explicit=options_in_argv(argv[2:], command.config))
                command.run(cfg)
                return
    top: dict[str, Callable] = {"envs": envs, "demo": demo}
    for name in GROUPS:

        def show(name: str = name) -> None:
            print(f"usage: diffenvs {name} SUBCOMMAND ...   (see `diffenvs {name} --help`)")

        show.__doc__ = f"Commands of the {name} group (run `diffenvs {name} --help`)."
        top[name] = show
    tyro.extras.subcommand_cli_from_dict(top, args=argv, prog="diffenvs")


if __name__ == "__main__":
    main()
