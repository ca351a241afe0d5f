"""Tabular Q-learning, SARSA and random agents on GrammarGrid-v0 (Marathe, RLDF, Algorithm 1)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tyro

from agents.common.grid import episode_statistics
from agents.grid.config import TabularConfig
from agents.grid.tabular import train
from diffenvs.io import load_tensors

FAST = {"model": "renderer", "detector": "exact", "save": False, "progress": False}


def cfg(**kwargs) -> TabularConfig:
    return TabularConfig(**{**FAST, **kwargs})


def test_q_learning_beats_random_on_the_default_grid() -> None:
    # The documented default budget (5,000 episodes) on the default 864-state grid.
    q = train(cfg(algo="q_learning", eval_episodes=100))["eval"]
    rnd = train(cfg(algo="random", episodes=20, eval_episodes=100))["eval"]
    assert q["success_rate"] >= 0.9
    assert q["steps"] < rnd["steps"]
    assert q["D_f"] < rnd["D_f"]


@pytest.mark.parametrize("algo", ["q_learning", "sarsa"])
@pytest.mark.parametrize("reward", ["multi_semantic", "partial_semantic"])
def test_learns_the_tiny_grid(algo: str, reward: str) -> None:
    out = train(cfg(algo=algo, reward=reward, grammar="tiny", episodes=400, eval_episodes=30))
    stats = out["eval"]
    assert stats["success_rate"] == 1.0
    # Greedy paths are close to the shortest ones (at most 2 + 2 + 1 = 5 steps on this grid).
    assert stats["steps"] <= 6
    assert stats["D_f"] == 0.0 and stats["fine_gain"] >= 0.0


def test_deterministic_for_a_seed() -> None:
    a = train(cfg(algo="sarsa", grammar="tiny", episodes=60, eval_episodes=5, seed=3))
    b = train(cfg(algo="sarsa", grammar="tiny", episodes=60, eval_episodes=5, seed=3))
    c = train(cfg(algo="sarsa", grammar="tiny", episodes=60, eval_episodes=5, seed=4))
    assert np.array_equal(a["q"], b["q"])
    assert [r["length"] for r in a["train"]] == [r["length"] for r in b["train"]]
    assert not np.array_equal(a["q"], c["q"])


def test_schedules() -> None:
    out = train(
        cfg(
            grammar="tiny",
            episodes=50,
            eval_episodes=2,
            epsilon=0.5,
            epsilon_final=0.0,
            alpha_schedule="visits",
            alpha=1.0,
        )
    )
    rows = out["train"]
    assert rows[0]["epsilon"] == 0.5 and rows[-1]["epsilon"] == 0.0
    assert 0 < rows[-1]["alpha"] < 1.0  # α / n(s,a)^0.8 shrinks with visits


def test_save_and_resume(tmp_path) -> None:
    base = {**FAST, "save": True, "output_dir": str(tmp_path), "run_name": "run", "grammar": "tiny"}
    first = train(TabularConfig(**base, episodes=30, eval_episodes=3))
    ckpt = tmp_path / "run" / "q_table.safetensors"
    saved = load_tensors(ckpt)
    assert np.allclose(saved["q"].numpy(), first["q"]) and int(saved["episodes_done"]) == 30
    assert (tmp_path / "run" / "eval.json").exists()
    second = train(TabularConfig(**base, episodes=50, eval_episodes=3, resume=str(ckpt)))
    assert [r["episode"] for r in second["train"]] == list(range(30, 50))
    with (tmp_path / "run" / "progress.csv").open() as f:
        assert [int(r["episode"]) for r in csv.DictReader(f)] == list(range(50))
    import torch

    from diffenvs.io import save_tensors

    save_tensors({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a tabular-agent checkpoint"):
        train(TabularConfig(**base, episodes=1, resume=str(tmp_path / "other.safetensors")))
    (tmp_path / "corrupt.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="corrupt"):
        train(TabularConfig(**base, episodes=1, resume=str(tmp_path / "corrupt.safetensors")))
    with pytest.raises(ValueError, match="same grammar"):
        train(TabularConfig(**{**base, "grammar": "default"}, episodes=1, resume=str(ckpt)))


def test_statistics_table_columns() -> None:
    records = [
        {
            "distances": [3, 2, 1, 0],
            "success": True,
            "length": 3,
            "return": 1.0,
            "fine_start": 1,
            "fine_end": 3,
            "scene_start": False,
            "scene_end": True,
        },
        {
            "distances": [2, 3, 4],
            "success": False,
            "length": 2,
            "return": -4.0,
            "fine_start": 2,
            "fine_end": 1,
            "scene_start": True,
            "scene_end": True,
        },
    ]
    s = episode_statistics(records)
    assert s["D_f"] == 2.0 and s["D_max"] == 3.5 and s["D_min"] == 1.0
    assert s["conv"] == 0.5 and s["fine_gain"] == 0.5 and s["coarse_gain"] == 0.5
    assert s["var"] == pytest.approx((np.var([3, 2, 1, 0]) + np.var([2, 3, 4])) / 2)


def test_cli_and_bad_config() -> None:
    parsed = tyro.cli(
        TabularConfig, args=["--algo", "sarsa", "--epsilon", "0.01", "--target", "1,2,3,4"]
    )
    assert parsed.algo == "sarsa" and parsed.epsilon == 0.01 and parsed.target == "1,2,3,4"
    with pytest.raises(ValueError, match=r"epsilon=1.5 must lie in \[0, 1\]"):
        train(cfg(epsilon=1.5))
    with pytest.raises(ValueError, match="Discrete or MultiDiscrete"):
        train(cfg(grammar="tiny", env_kwargs={"observation": "image"}, episodes=1))
    with pytest.raises(ValueError, match="outside the grid"):
        train(cfg(target="9,9,9,9", episodes=1))


def test_sb3_dqn_adapter_runs(tmp_path) -> None:
    from agents.adapters.sb3.config import SB3GrammarConfig
    from agents.adapters.sb3.grammar import train as sb3_main

    out = sb3_main(
        SB3GrammarConfig(
            grammar="tiny",
            model="renderer",
            detector="exact",
            total_timesteps=1_200,
            eval_episodes=3,
            output_dir=str(tmp_path),
            progress=False,
        )
    )
    assert 0.0 <= out["eval"]["success_rate"] <= 1.0
    assert set(load_tensors(tmp_path / "dqn_multi_semantic_seed0" / "policy.safetensors"))


@pytest.mark.slow  # Tianshou JIT-compiles its replay buffer with numba (~10 s) on first use
def test_tianshou_dqn_adapter_runs() -> None:
    from agents.adapters.tianshou.config import TianshouGrammarConfig
    from agents.adapters.tianshou.grammar import train as ts_main

    out = ts_main(
        TianshouGrammarConfig(
            grammar="tiny",
            model="renderer",
            detector="exact",
            num_train_envs=2,
            epochs=1,
            epoch_num_steps=400,
            max_episode_steps=20,
            test_episodes=2,
            eval_episodes=3,
            save=False,
            progress=False,
        )
    )
    assert 0.0 <= out["eval"]["success_rate"] <= 1.0
    with pytest.raises(ValueError, match="one-hot encodes MultiDiscrete"):
        ts_main(
            TianshouGrammarConfig(
                grammar="tiny", model="renderer", detector="exact", observation="image", save=False
            )
        )
