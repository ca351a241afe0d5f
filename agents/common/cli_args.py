"""Which config fields a command line names, so options typed by the user win over a preset."""

from __future__ import annotations

from dataclasses import fields


def options_in_argv(argv: list[str], config_type: type) -> tuple[str, ...]:
    """The fields of the dataclass ``config_type`` that ``argv`` names, in order of appearance.

    ``--kl-loss-coef 1e-3`` and ``--kl-loss-coef=1e-3`` name ``kl_loss_coef``; a tyro boolean flag
    ``--no-group-std`` names ``group_std``. Arguments that name no field are ignored. An agent
    stores the result in its config (e.g. ``explicit``) so that an option the user typed overrides
    the preset even where its value equals the default.
    """
    names = {f.name for f in fields(config_type)}
    found: list[str] = []
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in names and name.startswith("no_"):
            name = name[3:]
        if name in names and name not in found:
            found.append(name)
    return tuple(found)
