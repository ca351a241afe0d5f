"""Checkpoints of the diffusion-policy PPO agent.

:func:`save_checkpoint` writes ``checkpoints/update_NNNNNN/`` (safetensors and JSON, no pickle)
and :func:`load_checkpoint` restores it for ``resume=True``; the helpers turn optimizer and RNG
state into flat tensor dicts and back.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.ppo.policy import trainable_state

# --------------------------------------------------------------------------------------------
# Save and load


def save_checkpoint(
    run_dir: Path,
    update: int,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    accelerator: Any,
) -> Path:
    """``checkpoints/update_NNNNNN/`` (safetensors + JSON), then the ``latest.json`` pointer.

    Every file is written atomically and the pointer last, so a run killed mid-save resumes from
    the previous complete checkpoint.
    """
    from diffenvs.io import save_tensors, write_json

    folder = run_dir / "checkpoints" / f"update_{update:06d}"
    # Each process saves its own RNG state; parameters and optimiser state are identical on all.
    save_tensors(rng_to_tensors(), folder / f"rng_rank{accelerator.process_index}.safetensors")
    if accelerator.is_main_process:
        save_tensors(trainable_state(accelerator.unwrap_model(model)), folder / "model.safetensors")
        inner = getattr(optimizer, "optimizer", optimizer)
        tensors, meta = optimizer_to_tensors(inner)
        save_tensors(tensors, folder / "optimizer.safetensors", metadata={"meta": meta})
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        write_json(folder / "state.json", {**state, "scheduler": sched, "update": update})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(run_dir / "checkpoints" / "latest.json", {"folder": folder.name})
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: Any, scheduler: Any, accelerator: Any
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns the saved training state."""
    from safetensors import safe_open

    from diffenvs.io import load_tensors

    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.exists():
        raise FileNotFoundError(
            f"resume=True but {pointer} does not exist; start without --resume or point "
            "--output-dir/--run-name at an earlier run."
        )
    folder = run_dir / "checkpoints" / json.loads(pointer.read_text())["folder"]
    params = load_tensors(folder / "model.safetensors")
    unwrapped = accelerator.unwrap_model(model)
    expected = trainable_state(unwrapped)
    if set(params) != set(expected):
        raise ValueError(
            f"Checkpoint {folder} holds different trainable parameters than this configuration "
            "(was it saved with another finetune / lora_rank / advantage setting?)."
        )
    unwrapped.load_state_dict(params, strict=False)
    with safe_open(str(folder / "optimizer.safetensors"), "pt") as f:
        meta = f.metadata()["meta"]
    inner = getattr(optimizer, "optimizer", optimizer)
    optimizer_from_tensors(inner, load_tensors(folder / "optimizer.safetensors"), meta)
    state = json.loads((folder / "state.json").read_text())
    sched = scheduler.state_dict()
    sched.update(state.pop("scheduler"))
    scheduler.load_state_dict(sched)
    rng_file = folder / f"rng_rank{accelerator.process_index}.safetensors"
    if rng_file.exists():
        rng_from_tensors(load_tensors(rng_file))
    return state


# --------------------------------------------------------------------------------------------
# Optimizer and RNG state as tensors (so checkpoints are safetensors without pickle)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """Optimizer state → (flat tensors, JSON of the param groups and scalar state)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, json.dumps(meta)


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: str
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    info = json.loads(meta)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def rng_to_tensors() -> dict[str, torch.Tensor]:
    """Python, NumPy (legacy global) and torch RNG states as integer tensors."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    if np_name != "MT19937":
        raise ValueError(f"Unexpected NumPy global RNG {np_name!r}.")
    out = {
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor(
            [gauss is not None, 0.0 if gauss is None else gauss], dtype=torch.float64
        ),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_extra": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def rng_from_tensors(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_to_tensors`."""
    py = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((int(py[0]), tuple(int(x) for x in py[1:]), gauss if has_gauss else None))
    pos, has_np_gauss = state["numpy_extra"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy"].numpy().astype(np.uint32),
            int(pos),
            int(has_np_gauss),
            float(state["numpy_gauss"][0]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = sorted(k for k in state if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state[k] for k in cuda])
