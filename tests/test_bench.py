"""The leaderboard (agents/bench/): one evaluation for every entrant, the cell JSON, the page."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from agents.bench.entrants import Budget, CurvePoint, Diverged, Entrant, Trained, load_entrant
from agents.bench.page import render_page
from agents.bench.run import BenchConfig, main, resolve, run_cell
from agents.bench.schema import SCHEMA, CellResult, cell_path, load_cells
from agents.bench.tasks import TASKS, get_task


class BaseModelEntrant:
    """Trains nothing: returns a copy of the base denoiser (its evaluation must equal the base's)."""

    name = "identity"
    summary = "the base model itself"

    def train(self, task, budget, seed, run_dir) -> Trained:
        from agents.bench.evaluate import make_eval_envs

        unet = copy.deepcopy(make_eval_envs(task, num_envs=1).unwrapped.sampler.unet)
        return Trained(unet, [CurvePoint(budget.images, 0.5, 0.0)], {"note": "no training"})


class BaseNoiseEntrant:
    """A noise-mode policy that is the base sampler: mean 0, std 1 for every step."""

    name = "base-noise"
    summary = "the base sampler, as a noise-mode policy"

    def train(self, task, budget, seed, run_dir) -> Trained:
        import torch

        def policy(obs):
            latent = torch.as_tensor(obs["latent"])
            return torch.zeros_like(latent), torch.ones_like(latent)

        return Trained(None, [CurvePoint(budget.images, 0.5, 0.0)], noise_policy=policy)


class DivergingEntrant:
    """Diverges after one update (as an unregularised policy under a linear reward does)."""

    name = "diverging"
    summary = "leaves the model's range"

    def train(self, task, budget, seed, run_dir) -> Trained:
        raise Diverged("x_t left [-10000, 10000]", [CurvePoint(64, 0.1, 5.0)])


def _quick(tmp_path: Path, **changes) -> BenchConfig:
    return resolve(BenchConfig(quick=True, out=tmp_path, eval_episodes=4, **changes))


def test_identity_entrant_scores_exactly_the_base_model(tmp_path: Path) -> None:
    cfg = _quick(tmp_path)
    cell = run_cell(cfg, "pastel", f"{__name__}:BaseModelEntrant", seed=0)
    assert cell.final == cell.base  # the same prompts, x_T and step noise
    assert cell.final["kl_to_base"] == 0.0
    assert cell.gain_base_std == 0.0 and cell.diversity_ratio == 1.0
    assert 0.0 <= cell.final["prompt_following"] <= 1.0 and "independent" in cell.final
    saved = json.loads(cell_path(cfg.out, "pastel", "identity", 0).read_text())
    assert saved["schema"] == SCHEMA and CellResult.from_json(saved) == cell


def test_a_noise_mode_policy_is_evaluated_with_the_same_noise_as_the_base(tmp_path: Path) -> None:
    cell = run_cell(_quick(tmp_path), "pastel", f"{__name__}:BaseNoiseEntrant", seed=0)
    assert cell.final["kl_to_base"] == 0.0
    for key in ("reward_mean", "reward_std", "diversity", "prompt_following", "independent"):
        assert cell.final[key] == pytest.approx(cell.base[key], abs=1e-4), key


def test_sb3_ppo_entrant_trains_in_noise_mode(tmp_path: Path) -> None:
    cell = run_cell(_quick(tmp_path), "pastel", "sb3-ppo", seed=0)
    assert [p[0] for p in cell.curve] == [16, 32]  # two PPO updates of 16 images
    assert cell.final["kl_to_base"] > 0 and cell.config["n_epochs"] == 4
    assert "SB3 adapter" in load_entrant("sb3-ppo").cannot_run(TASKS["reference-2d"])


def test_sb3_ppo_blowing_up_is_reported_as_divergence(tmp_path: Path) -> None:
    from agents.bench.sb3_entrant import SB3PPOEntrant

    # Measured: at lr 1e-3 the policy's weights turn non-finite within two updates (seeded).
    with pytest.raises(Diverged, match="non-finite"):
        SB3PPOEntrant(learning_rate=1e-3).train(TASKS["pastel"], Budget(32, 600.0), 0, tmp_path)


def test_builtin_entrant_cell_and_page(tmp_path: Path) -> None:
    # The reduced run of CI: two REINFORCE updates on the world, in a child process.
    main(BenchConfig(quick=True, tasks=("pastel",), entrants=("reinforce",), out=tmp_path))
    (cell,) = load_cells(tmp_path / "quick")
    assert (cell.task, cell.entrant, len(cell.curve)) == ("pastel", "reinforce", 2)
    assert cell.budget["images"] == 32 and cell.curve[-1][0] == 32
    assert cell.final["kl_to_base"] > 0  # it trained
    assert cell.peak_rss_gb > 0 and cell.world["world"].startswith("v")
    page = render_page(tmp_path / "quick", tmp_path / "images", "images/")
    assert "## pastel" in page and "| reinforce | 1 |" in page
    assert (tmp_path / "images" / "leaderboard_pastel.png").is_file()


def test_reference_cell_measures_the_distance_to_the_optimum(tmp_path: Path) -> None:
    cfg = resolve(BenchConfig(quick=True, out=tmp_path, tasks=("reference-2d",)))
    cfg = replace(cfg, eval_episodes=500)
    cell = run_cell(cfg, "reference-2d", "ppo-kl", seed=0)
    assert cell.budget["images"] == 128 and len(cell.curve) == 2  # two updates of 64
    base, final = cell.base, cell.final
    assert base["kl_to_base"] == 0.0 and final["kl_to_base"] > 0
    assert base["optimum_objective"] > base["objective"]  # the base model is not the optimum
    assert 0 < base["sw2_noise_floor"] < base["sw2_to_pstar"]
    page = render_page(tmp_path / "quick", tmp_path / "images", "images/")
    assert "objective E[r] - β·KL (optimum)" in page and "| ppo-kl | 1 |" in page


def test_a_diverged_policy_is_a_result_not_a_crash(tmp_path: Path) -> None:
    cfg = resolve(BenchConfig(quick=True, out=tmp_path, tasks=("reference-2d",)))
    cfg = replace(cfg, eval_episodes=200)
    cell = run_cell(cfg, "reference-2d", f"{__name__}:DivergingEntrant", seed=1)
    assert cell.diverged and cell.final == {} and cell.note == "x_t left [-10000, 10000]"
    assert cell.curve == [[64, 0.1, 5.0]] and cell.base["objective"] == cell.base["objective"]
    saved = CellResult.from_json(
        json.loads(cell_path(cfg.out, "reference-2d", "diverging", 1).read_text())
    )
    assert saved.status == "diverged" and saved.gain_base_std != saved.gain_base_std  # NaN
    page = render_page(cfg.out, tmp_path / "images", "images/")
    assert (
        "| diverging | 1 | **diverged** (seed 1: x_t left [-10000, 10000] after 64 training images)"
        in page
    )


def test_reinforce_reports_divergence_instead_of_crashing_the_env() -> None:
    # Unregularised REINFORCE under the reference task's linear reward, with a huge step size.
    task = TASKS["reference-2d"]
    task = replace(task, recipe={**task.recipe, "learning_rate": 1.0})
    with pytest.raises(Diverged, match=r"x_t left \[-10000, 10000\]") as err:
        load_entrant("reinforce").train(task, Budget(64 * 20, 600.0), 0, Path("unused"))
    assert len(err.value.curve) >= 1


def test_entrants_that_do_not_apply_are_skipped_and_listed(tmp_path: Path) -> None:
    from agents.bench.entrants import cannot_run

    draft = load_entrant("draft")
    assert "no gradients" in cannot_run(draft, TASKS["jpeg"])
    assert "decoder" in cannot_run(draft, TASKS["reference-2d"])
    assert cannot_run(draft, TASKS["pastel"]) is None
    assert cannot_run(load_entrant("reinforce"), TASKS["jpeg"]) is None  # no such method
    # The one-command sweep skips the cell instead of failing (no SystemExit), and writes nothing.
    main(BenchConfig(quick=True, tasks=("jpeg",), entrants=("draft",), out=tmp_path, page=None))
    assert load_cells(tmp_path / "quick") == []
    cfg = replace(
        resolve(BenchConfig(quick=True, out=tmp_path, tasks=("reference-2d",))), eval_episodes=200
    )
    run_cell(cfg, "reference-2d", f"{__name__}:DivergingEntrant", seed=0)
    page = render_page(cfg.out, tmp_path / "images", "images/")
    assert "Not applicable: draft, refl (it back-propagates" in page
    assert "Not measured yet: grpo, ppo, ppo-gae, ppo-kl, reinforce" in page
    assert "## Tasks not measured yet" in page and "jpeg" in page


def test_reward_at_seconds_reads_the_curve_at_the_wall_clock_budget() -> None:
    cell = CellResult(
        task="t",
        entrant="e",
        seed=0,
        budget={"images": 64, "seconds": 10.0},
        curve=[[16, 2.0, 1.0], [32, 5.0, 2.0], [48, 9.0, 3.0], [64, 12.0, 9.0]],
        base={"reward_mean": 0.0, "reward_std": 2.0, "diversity": 1.0},
        final={"reward_mean": 1.0, "diversity": 0.25},
        train_seconds=12.0,
        peak_rss_gb=1.0,
    )
    assert cell.reward_at_seconds == pytest.approx(2.0)  # mean of the last 3 points by 10 s
    assert cell.gain_base_std == pytest.approx(0.5) and cell.diversity_ratio == 0.25
    assert replace(cell, budget={"images": 64, "seconds": 1.0}).reward_at_seconds is None


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown leaderboard task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="Unknown entrant 'nope'"):
        load_entrant("nope")
    with pytest.raises(ValueError, match="Cannot load entrant"):
        load_entrant("agents.bench.tasks:NoSuchEntrant")
    with pytest.raises(TypeError, match=r"docs/benchmark\.md"):
        load_entrant("agents.bench.entrants:Budget")  # wrong signature: not an entrant
    with pytest.raises(ValueError, match="less than one ppo update"):
        load_entrant("ppo").config(TASKS["pastel"], Budget(8, 60.0), 0, tmp_path / "r")
    with pytest.raises(ValueError, match="schema"):
        CellResult.from_json({"schema": "other"})


def test_every_builtin_entrant_implements_the_interface() -> None:
    from agents.bench.entrants import entrant_names

    for name in entrant_names():
        entrant = load_entrant(name)
        assert isinstance(entrant, Entrant) and entrant.name == name and entrant.summary
