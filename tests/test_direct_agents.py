"""The direct reward fine-tuning agents (agents/direct) on a tiny random pipeline.

Behaviour: a short run raises the reward it differentiates; every algorithm trains only what it
should; checkpoints resume to the same parameters as an uninterrupted run; the CLI finds the
agents; bad settings and non-differentiable rewards are refused with clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_denoise import single_thread, tiny_pipeline  # noqa: F401

from agents.direct.config import DirectConfig, resolve_config
from diffenvs.rewards import NotDifferentiableError

PROMPT = "prompt:one red circle"


def tiny_config(pipe, **kwargs) -> DirectConfig:
    base = {
        "model": pipe,
        "prompts": PROMPT,
        "eval_prompts": PROMPT,
        "reward": "target_rmse",
        "num_steps": 3,
        "batch_size": 2,
        "num_updates": 2,
        "eval_episodes": 4,
        "eval_oracle": False,
        "save": False,
        "progress": False,
    }
    return DirectConfig(**(base | kwargs))


def test_a_short_run_raises_the_reward(pipe):
    from agents.direct.train import train

    cfg = tiny_config(
        pipe, algorithm="draft", draft_k=3, finetune="full", learning_rate=3e-3, num_updates=12
    )
    result = train(cfg)
    before, after = result["eval"]["before"]["rewards"], result["eval"]["after"]["rewards"]
    assert after > before + 0.05
    assert len(result["history"]) == 12
    assert all(np.isfinite(h["loss"]) for h in result["history"])


@pytest.mark.parametrize("algorithm", ["refl", "draft", "draft-lv", "alignprop"])
def test_every_algorithm_trains_only_the_lora_weights(pipe, algorithm):
    from agents.direct.train import train

    result = train(
        tiny_config(
            pipe,
            algorithm=algorithm,
            kl_coef=0.1,
            learning_rate=1e-2,
            eval_episodes=0,
            reward_norm="none",
        )
    )
    assert result["params"] and all("lora_" in k for k in result["params"])
    moved = [
        k
        for k in result["params"]
        if not torch.equal(result["params"][k], result["initial_params"][k])
    ]
    assert moved
    assert all(np.isfinite(h["kl"]) and h["kl"] >= 0 for h in result["history"])
    # The frozen base model is left alone.
    assert not any("lora" in n for n, _ in pipe.unet.named_parameters())


def test_a_saved_run_keeps_both_evaluations_and_the_grid(pipe, tmp_path):
    from agents.direct.train import train

    train(tiny_config(pipe, algorithm="refl", save=True, output_dir=str(tmp_path), run_name="r"))
    run = tmp_path / "r"
    before, after = np.load(run / "eval_before.npz"), np.load(run / "eval_after.npz")
    assert before["images"].shape == after["images"].shape == (4, 16, 16, 3)
    assert (run / "before_after.png").is_file()


def test_resume_continues_like_an_uninterrupted_run(pipe, tmp_path):
    from agents.direct.train import train

    common = {
        "algorithm": "alignprop",
        "num_updates": 4,
        "eval_episodes": 0,
        "reward_norm": "none",
        "save": True,
        "save_every": 1,
        "output_dir": str(tmp_path),
        "learning_rate": 1e-2,
    }
    full = train(tiny_config(pipe, run_name="full", **common))
    train(tiny_config(pipe, run_name="cut", stop_after_updates=2, **common))
    assert (tmp_path / "cut" / "checkpoints" / "update_000002" / "model.safetensors").is_file()
    resumed = train(tiny_config(pipe, run_name="cut", resume=True, **common))
    assert len(resumed["history"]) == 4
    for k, v in full["params"].items():
        torch.testing.assert_close(resumed["params"][k], v, atol=1e-6, rtol=1e-5)
    assert (tmp_path / "cut" / "progress.csv").read_text().count("\n") == 5  # header + 4 rows


def test_the_cli_finds_the_agents():
    from agents.common.contract import discover

    found = discover()
    for name in ("direct", "refl", "draft", "alignprop"):
        assert found[name].train == "agents.direct.train:main"
    assert found["refl"].config().algorithm == "refl"
    assert found["alignprop"].config().algorithm == "alignprop"


def test_bad_settings_are_refused_clearly(pipe):
    from agents.direct.train import train

    with pytest.raises(NotDifferentiableError, match="JPEG"):
        train(tiny_config(pipe, reward="jpeg_compressibility"))
    with pytest.raises(ValueError, match="draft_k"):
        resolve_config(DirectConfig(num_steps=4, draft_k=5))
    with pytest.raises(ValueError, match="eval_episodes"):
        resolve_config(DirectConfig(eval_episodes=0))
    with pytest.raises(ValueError, match="Unknown preset"):
        resolve_config(DirectConfig(preset="nope"))  # type: ignore[arg-type]
    assert resolve_config(DirectConfig(preset="quick", num_updates=3)).num_updates == 3
    # The command's algorithm wins over the preset's; plain `direct` takes the preset's.
    from agents.direct.config import AlignPropConfig, ReFLConfig

    assert resolve_config(ReFLConfig(preset="target-image")).algorithm == "refl"
    assert resolve_config(AlignPropConfig(preset="target-image")).algorithm == "alignprop"
    assert resolve_config(DirectConfig(preset="target-image")).algorithm == "draft"
