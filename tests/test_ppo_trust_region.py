"""Diffusion-policy PPO's trust region (issue 20): the log-prob reduction against DDPO's
formulation, the clip fraction and approximate KL logs, early stopping at a target KL, no
base-model pass without a KL term, and collapse detection. Tiny configs: 2 sampler steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.ppo.config import PPOConfig, resolve_config
from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
from agents.ppo.rollout import run_episodes
from agents.ppo.train import train

TINY = PPOConfig(
    num_steps=2,
    num_envs=4,
    samples_per_prompt=2,
    minibatch_size=4,
    grad_accum_steps=2,
    num_updates=3,
    eval_episodes=0,
    reward_norm="none",
    eval_oracle=False,
    save=False,
    progress=False,
    tensorboard=False,
    cpu=True,
)


def test_mean_reduction_is_ddpos_ratio() -> None:
    from agents.ppo.losses import clipped_surrogate, step_log_ratio
    from diffenvs.logprob import gaussian_log_prob

    # DDPO's step log-prob: the per-dimension Gaussian log-density averaged over the latent.
    g = torch.Generator().manual_seed(0)
    b, shape = 6, (8, 16, 16)
    d = int(np.prod(shape))
    x = torch.randn(b, *shape, generator=g, dtype=torch.float64)
    old_mean = torch.randn(b, *shape, generator=g, dtype=torch.float64)
    new_mean = old_mean + 0.003 * torch.randn(b, *shape, generator=g, dtype=torch.float64)
    std = torch.full((b,), 0.7, dtype=torch.float64)

    def ddpo(mean: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(mean, 0.7).log_prob(x).mean(dim=(1, 2, 3))

    new_sum, old_sum = gaussian_log_prob(x, new_mean, std), gaussian_log_prob(x, old_mean, std)
    mean_ratio = step_log_ratio(new_sum, old_sum, "mean", d)
    assert torch.allclose(mean_ratio, ddpo(new_mean) - ddpo(old_mean), rtol=1e-9, atol=1e-12)
    assert torch.allclose(mean_ratio * d, step_log_ratio(new_sum, old_sum, "sum", d))
    # The same clip range then clips the same samples as DDPO's formulation.
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    ours = clipped_surrogate(mean_ratio, adv, 1e-4)
    theirs = clipped_surrogate(ddpo(new_mean) - ddpo(old_mean), adv, 1e-4)
    assert torch.allclose(ours[0], theirs[0]) and torch.equal(ours[2], theirs[2])


def test_clip_acts_under_mean_and_saturates_under_sum() -> None:
    import gymnasium as gym

    import diffenvs  # noqa: F401
    from agents.ppo.losses import approx_kl, clipped_surrogate, step_log_ratio

    envs = gym.make_vec(
        "DiffusionDenoise-v0", num_envs=4, num_steps=2, action_mode="latent", reward="zero"
    )
    cfg = replace(TINY, finetune="full")
    model = DiffusionActorCritic(build_policy_unet(envs.sampler.unet, cfg), envs.sampler)
    out = run_episodes(
        model, envs, ["one large red circle in the middle of a grass field"] * 4, 3, 4
    )
    # A small perturbation of every weight (1e-4 of its spread): a policy one small step away.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g) * 1e-4 * p.std())
    b, t = out["log_probs"].shape
    k, r = torch.arange(t).repeat(b), torch.arange(b).repeat_interleave(t)
    with torch.no_grad():
        log_prob, _, _ = model(out["latents"][r, k], k, out["embeds"][r], out["next_latents"][r, k])
    d = int(np.prod(out["latents"].shape[2:]))
    adv = torch.tensor([1.0, -1.0]).repeat(b * t // 2)
    frac = {}
    for reduction in ("mean", "sum"):
        lr = step_log_ratio(log_prob, out["log_probs"][r, k], reduction, d)
        _, ratio, clipped = clipped_surrogate(lr, adv, 1e-4)
        frac[reduction] = (
            float(((ratio - 1).abs() > 1e-4).float().mean()),
            float(clipped.float().mean()),
        )
        assert approx_kl(lr) >= 0
    # 'mean' (DDPO's scale): some samples inside the trust region, some clipped.
    assert 0 < frac["mean"][0] < 1 and 0 < frac["mean"][1] < 0.5
    # 'sum': the same ε on the whole latent, so every sample is outside and the clip saturates.
    assert frac["sum"][0] == 1.0 and frac["sum"][1] >= frac["mean"][1]


def test_one_step_per_rollout_mean_and_sum_train_the_same_weights_without_grad_clip() -> None:
    # With one optimiser step per rollout the ratio is 1 when the gradient is taken, so the loss
    # gradient under 'sum' is exactly D times the one under 'mean'. Adam is invariant to that
    # factor (up to its eps), so the reduction changes training only through the gradient-norm
    # clip, which binds at D times smaller gradients under 'sum' (presets with one step per rollout).
    cfg = replace(TINY, finetune="full", learning_rate=1e-3, adam_eps=1e-30, weight_decay=0.0,
                  max_grad_norm=1e12, num_updates=2)  # fmt: skip
    runs = {r: train(replace(cfg, logprob_reduction=r)) for r in ("mean", "sum")}
    for name, p in runs["mean"]["params"].items():
        assert torch.allclose(p, runs["sum"]["params"][name], rtol=1e-5, atol=1e-8), name
    initial = runs["mean"]["initial_params"]
    assert any(not torch.equal(p, initial[n]) for n, p in runs["mean"]["params"].items())


def test_progress_logs_kl_and_clip_fraction_and_target_kl_stops_early(tmp_path: Path) -> None:
    import csv

    # Two optimiser steps per epoch, four epochs: the later steps see an off-policy ratio.
    cfg = replace(TINY, finetune="full", learning_rate=1e-3, grad_accum_steps=1, num_epochs=4,
                  num_updates=2, save=True, output_dir=str(tmp_path), run_name="free")  # fmt: skip
    free = train(cfg)["history"]
    assert all(h["inner_steps"] == 8 and h["early_stop"] == 0 for h in free)
    assert free[-1]["approx_kl_max"] > 0 and 0 < free[-1]["clipfrac_max"] <= 1
    with open(tmp_path / "free" / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"approx_kl", "clipfrac", "approx_kl_max", "clipfrac_max", "inner_steps"} <= set(rows[0])
    assert float(rows[0]["kl"]) != float(rows[0]["kl"])  # NaN: no KL term, so no base pass
    with open(tmp_path / "free" / "inner_steps.csv") as f:
        inner = list(csv.DictReader(f))
    assert len(inner) == 16 and {"update", "inner_step", "approx_kl", "clipfrac"} <= set(inner[0])
    # The first optimiser step of an update is on-policy: ratio 1, nothing clipped.
    assert float(inner[0]["clipfrac"]) == 0.0
    # A target KL that the second step already exceeds stops every update after one step.
    stopped = train(replace(cfg, target_kl=1e-12, run_name="stopped"))["history"]
    assert all(h["inner_steps"] == 1 and h["early_stop"] == 1 for h in stopped)


def test_no_base_pass_unless_a_kl_term_needs_it() -> None:
    from agents.ppo.config import needs_base_model

    assert not needs_base_model(TINY)
    assert needs_base_model(replace(TINY, kl="fixed"))
    assert needs_base_model(replace(TINY, kl_loss_coef=1e-3))
    assert needs_base_model(replace(TINY, track_base_kl=True))
    for preset in ("colourfulness-kl", "prompt-alignment"):
        assert needs_base_model(resolve_config(PPOConfig(preset=preset)))
    # target-image has no KL term since world v2: its rollouts skip the base model.
    assert not needs_base_model(resolve_config(PPOConfig(preset="target-image")))


def test_collapse_detection() -> None:
    from agents.ppo.evaluate import collapse_check, eval_summary, image_diversity

    g = np.random.default_rng(0)
    varied = g.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    same = np.repeat(varied[:1], 6, axis=0)
    prompts = ["a", "a", "b", "b", "c", "c"]
    assert image_diversity(same, prompts) == 0.0 and image_diversity(varied, prompts) > 0.2
    # Only pairs of images from different prompts are compared.
    two = np.concatenate([varied[:3], varied[:3]])
    assert image_diversity(two, ["a", "b", "c", "a", "b", "c"]) > 0
    result = {"rewards": np.arange(6.0), "accuracy": np.full(6, np.nan)}
    before = eval_summary({**result, "images": varied}, prompts)
    after = eval_summary({**result, "images": same}, prompts)
    assert before["reward_p90"] > before["reward_p10"] and "reward_std" in before
    with pytest.warns(RuntimeWarning, match="MODE COLLAPSE"):
        check = collapse_check(before, after)
    assert check["collapsed"] and check["diversity_ratio"] == 0.0
    assert not collapse_check(before, before)["collapsed"]


def test_prompt_stat_tracker_uses_each_prompts_history_once_it_has_enough() -> None:
    from agents.ppo.losses import PromptStatTracker

    tracker = PromptStatTracker(buffer=4, min_count=3)
    prompts = ["a", "a", "b", "b"]
    first = tracker.standardise(prompts, torch.tensor([1.0, 3.0, 10.0, 12.0]))
    # Two rewards per prompt < min_count: the whole batch's mean (6.5) and std are the baseline.
    assert first[0] < 0 and first[1] < 0 and first[2] > 0 and first[3] > 0
    second = tracker.standardise(prompts, torch.tensor([2.0, 4.0, 11.0, 13.0]))
    # Now each prompt has 4 stored rewards: its own history's mean and std are the baseline.
    a, b = np.array([1.0, 3.0, 2.0, 4.0]), np.array([10.0, 12.0, 11.0, 13.0])
    expect = np.concatenate(
        [([2.0, 4.0] - a.mean()) / a.std(), ([11.0, 13.0] - b.mean()) / b.std()]
    )
    assert np.allclose(second.numpy(), expect, atol=1e-5)
    assert tracker.history["a"] == [1.0, 3.0, 2.0, 4.0]
    tracker.standardise(["a"], torch.tensor([5.0]))
    assert tracker.history["a"] == [3.0, 2.0, 4.0, 5.0]  # the buffer keeps the last 4
    assert tracker.standardise(["a"], torch.tensor([5.0]), scale=False).item() == pytest.approx(
        5.0 - np.mean([2.0, 4.0, 5.0, 5.0])
    )


def test_tracker_config_errors() -> None:
    with pytest.raises(ValueError, match="tracker_buffer >= tracker_min_count"):
        resolve_config(PPOConfig(prompt_stats="tracker", tracker_buffer=4, tracker_min_count=8))
    with pytest.raises(ValueError, match="advantage='per-prompt'"):
        resolve_config(PPOConfig(prompt_stats="tracker", advantage="gae"))


def test_tracker_run_trains_and_resumes_exactly(tmp_path: Path) -> None:
    cfg = PPOConfig(
        num_steps=2,
        num_envs=4,
        samples_per_prompt=2,
        minibatch_size=4,
        grad_accum_steps=2,
        num_updates=3,
        eval_episodes=0,
        reward_norm="none",
        eval_oracle=False,
        progress=False,
        tensorboard=False,
        cpu=True,
        prompts="prompt:one red circle",
        prompt_stats="tracker",
        tracker_buffer=8,
        tracker_min_count=4,
        output_dir=str(tmp_path),
        run_name="tracked",
        save_every=1,
    )
    full = train(cfg)
    stopped = train(replace(cfg, run_name="resumed", stop_after_updates=2))
    assert stopped["stopped"]
    resumed = train(replace(cfg, run_name="resumed", resume=True))
    for name, value in full["params"].items():
        assert torch.equal(value, resumed["params"][name]), name


def test_jpeg_paired_baseline_replays_the_training_rollouts(tmp_path: Path) -> None:
    # benchmarks/ppo_jpeg_paired.py reruns the base model on the rollouts of every update; at
    # update 1 the policy is still the base model, so the replay must give the logged reward.
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("ppo_jpeg_paired", root / "benchmarks" / "ppo_jpeg_paired.py")  # fmt: skip
    paired = importlib.util.module_from_spec(spec)
    sys.modules["ppo_jpeg_paired"] = paired  # its dataclass looks its module up there
    spec.loader.exec_module(paired)
    cfg = replace(TINY, finetune="full", num_updates=1, seed=3)
    logged = train(cfg)["history"][0]["reward_mean"]
    assert paired.base_rewards(cfg, 1)[0] == pytest.approx(logged, abs=1e-6)
