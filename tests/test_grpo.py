"""GRPO (agents/grpo/): group advantages, the window of SDE steps and its deterministic steps, the
exact ratio of the first epoch, learning, resume and clear errors. On the tiny random pipeline
(tests/tiny_denoise.py); a few seconds per training test on one thread."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_denoise import ENV_ID, PROMPTS

from agents.common.contract import discover
from agents.grpo.config import PRESETS, GRPOConfig, resolve_config
from agents.grpo.rollout import collect_groups, run_window_episodes
from agents.grpo.sampling import deterministic_step, ode_sampler, unguided_sampler
from agents.grpo.train import train
from agents.grpo.update import group_advantages
from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
from agents.ppo.rollout import make_prompt_source, run_episodes

TINY = GRPOConfig(
    num_steps=4,
    num_envs=4,
    group_size=2,
    sde_window=2,
    num_updates=3,
    eval_episodes=0,
    reward_norm="none",
    eval_oracle=False,
    save=False,
    progress=False,
    tensorboard=False,
    cpu=True,
)


def brightness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """A simple reward the tiny random model can learn: the decoded image's mean pixel."""
    return images.mean((1, 2, 3))


def _envs(pipe, n: int = 4, **kwargs):
    kwargs = {
        "num_steps": 4,
        "reward": "zero",
        "action_mode": "latent",
        "base_step": "auto",
    } | kwargs
    return gym.make_vec(ENV_ID, num_envs=n, model=pipe, prompts=PROMPTS, **kwargs)


def _policy(envs, sampler=None) -> DiffusionActorCritic:
    base = envs.unwrapped.sampler
    return DiffusionActorCritic(build_policy_unet(base.unet, TINY), sampler or base)


def test_group_advantages_are_zero_mean_per_group() -> None:
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 8, generator=g) * 3 + 1
    groups = torch.arange(24).reshape(3, 8) // 4
    for std in ("group", "batch", "none"):
        adv = group_advantages(rewards, groups, std)
        assert adv.shape == rewards.shape
        for gid in groups.unique():
            rows = groups == gid
            assert abs(float(adv[rows].mean())) < 1e-6
            if std == "group":
                assert abs(float(adv[rows].std(unbiased=False)) - 1) < 1e-3
    centred = group_advantages(rewards, groups, "none")
    assert torch.allclose(
        centred, rewards - rewards.reshape(6, 4).mean(1).repeat_interleave(4).reshape(3, 8)
    )
    tied = group_advantages(torch.ones(4), torch.tensor([0, 0, 1, 1]), "group")
    assert torch.equal(tied, torch.zeros(4))  # a group of equal rewards teaches nothing
    with pytest.raises(ValueError, match="one image"):
        group_advantages(torch.ones(3), torch.tensor([0, 0, 1]))


def test_deterministic_step_is_ddim_with_eta_zero(pipe) -> None:
    envs = _envs(pipe)
    sampler = envs.unwrapped.sampler
    ode = ode_sampler(sampler)
    assert float(ode.sigma.abs().max()) == 0.0
    scheduler = envs.unwrapped.core.scheduler
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *sampler.latent_shape, generator=g)
    out = torch.randn(4, *sampler.latent_shape, generator=g)
    for k in range(sampler.num_steps):
        kk = torch.full((4,), k)
        got = deterministic_step(ode, out, x, kk)
        want = scheduler.step(out, int(sampler.timesteps[k]), x, eta=0.0).prev_sample
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_window_steps_are_the_only_stochastic_steps(pipe) -> None:
    envs = _envs(pipe)
    policy = _policy(envs)
    prompts = PROMPTS[:2] * 2
    a = run_window_episodes(policy, envs, prompts, [1, 2], env_seed=3, noise_seed=1)
    b = run_window_episodes(policy, envs, prompts, [1, 2], env_seed=3, noise_seed=2)
    assert a["latents"].shape == (2, 4, *envs.unwrapped.sampler.latent_shape)
    # Step 0 is deterministic: the window starts from the same x_t whatever the noise.
    assert torch.equal(a["latents"][0], b["latents"][0])
    assert not torch.equal(a["next_latents"][0], b["next_latents"][0])


def test_a_window_of_every_step_is_the_ppo_rollout(pipe) -> None:
    envs = _envs(pipe, reward="colourfulness")
    policy = _policy(envs)
    prompts = PROMPTS[:2] * 2
    grpo = run_window_episodes(policy, envs, prompts, [0, 1, 2, 3], env_seed=5, noise_seed=7)
    ppo = run_episodes(policy, envs, prompts, env_seed=5, noise_seed=7)
    torch.testing.assert_close(grpo["rewards"], ppo["rewards"])
    torch.testing.assert_close(grpo["log_probs"].T, ppo["log_probs"])


def test_ratio_is_exactly_one_in_the_first_epoch(pipe) -> None:
    # One optimiser step per epoch: every block of epoch 1 is recomputed with the rollout's batch
    # and parameters, so the new log-probs equal the stored ones bit for bit.
    cfg = replace(TINY, num_epochs=2, learning_rate=1e-3, finetune="full", kl_coef=0.1)
    result = train(cfg, model=pipe, reward=brightness)
    for h in result["history"]:
        assert h["ratio_dev_first_step"] == 0.0
        assert h["inner_steps"] == 2
        assert h["ratio_max"] != 1.0  # epoch 2 sees the moved policy
        assert np.isfinite(h["kl"]) and h["kl_loss"] >= 0


def test_tiny_run_raises_a_simple_reward(pipe, tmp_path: Path) -> None:
    cfg = replace(
        TINY,
        num_envs=8,
        group_size=4,
        window_start=0,
        num_updates=10,
        finetune="full",
        learning_rate=1e-3,
        reward_norm="fit",
        eval_episodes=8,
        grid_images=8,
        save=True,
        output_dir=str(tmp_path),
        run_name="learn",
    )
    result = train(cfg, model=pipe, reward=brightness)
    ev = result["eval"]
    # Same held-out prompts, x_T and step noise before and after: a paired comparison.
    assert ev["after"]["reward_mean"] > ev["before"]["reward_mean"] + ev["before"]["reward_std"]
    run = tmp_path / "learn"
    for name in ("samples.png", "reward_hist.png", "curves.png", "progress.csv", "eval.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "latest.json").is_file()
    assert (run / "checkpoints" / "update_000010" / "model.safetensors").is_file()


def test_resume_matches_uninterrupted_run(pipe, tmp_path: Path) -> None:
    cfg = replace(TINY, save=True, output_dir=str(tmp_path), save_every=1, kl_coef=0.05)
    full = train(replace(cfg, run_name="full"), model=pipe, reward=brightness)
    first = train(replace(cfg, run_name="cut", stop_after_updates=1), model=pipe, reward=brightness)
    assert first["stopped"] and len(first["history"]) == 1
    resumed = train(replace(cfg, run_name="cut", resume=True), model=pipe, reward=brightness)
    assert len(resumed["history"]) == cfg.num_updates
    assert set(full["params"]) == set(resumed["params"])
    assert any("lora_" in k for k in full["params"])
    for name, p in full["params"].items():
        assert torch.equal(p, resumed["params"][name]), name
    assert [h["window_start"] for h in full["history"]] == [
        h["window_start"] for h in resumed["history"]
    ]


def test_cfg_free_policy_runs_one_conditional_pass(pipe) -> None:
    envs = _envs(pipe)
    sampler = envs.unwrapped.sampler
    assert sampler.do_cfg  # the env guides (guidance 4)
    free = unguided_sampler(sampler)
    assert not free.do_cfg and free.guidance_scale == 1.0 and sampler.do_cfg
    x = torch.randn(2, *sampler.latent_shape)
    embeds = torch.randn(2, *sampler.embed_shape)
    kk = torch.zeros(2, dtype=torch.long)
    want = sampler.unet(x, sampler.timesteps[0], encoder_hidden_states=embeds).sample
    torch.testing.assert_close(free.model_output(sampler.unet, x, kk, embeds), want)
    result = train(
        replace(TINY, cfg_free=True, num_updates=1, kl_coef=0.1), model=pipe, reward=brightness
    )
    assert np.isfinite(result["history"][0]["kl"])


def test_collect_groups_shares_prompts_within_groups(pipe) -> None:
    envs = _envs(pipe)
    policy = _policy(envs)
    rng = np.random.default_rng(0)
    buffer = collect_groups(policy, envs, make_prompt_source("world"), [0], 2, 2, rng)
    assert buffer.groups.tolist() == [[0, 0, 1, 1], [2, 2, 3, 3]]
    assert buffer.prompts[0] == buffer.prompts[1] and buffer.prompts[4] == buffer.prompts[5]
    with pytest.raises(ValueError, match="multiple of group_size"):
        collect_groups(policy, envs, make_prompt_source("world"), [0], 3, 1, rng)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_envs": 6, "group_size": 4}, "multiple of group_size"),
        ({"group_size": 1, "num_envs": 4}, "group_size must be >= 2"),
        ({"sde_window": 5}, "sde_window must be between 1 and num_steps"),
        ({"sde_window": 2, "window_start": 3}, "window_start must be between 0"),
        ({"episodes_per_update": 3, "grad_accum_steps": 4}, "multiple of grad_accum_steps"),
        ({"kl_coef": -1.0}, "kl_coef must be"),
        ({"reward_norm": "fit", "eval_episodes": 0}, "eval_episodes >= 2"),
        ({"preset": "nope"}, "Unknown preset"),
    ],
)
def test_bad_config_errors(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_config(replace(TINY, **changes))


def test_ddpm_has_no_deterministic_step_for_a_window(pipe) -> None:
    envs = _envs(pipe, scheduler="ddpm")
    policy = _policy(envs)
    with pytest.raises(ValueError, match="deterministic step"):
        run_window_episodes(policy, envs, PROMPTS[:2] * 2, [0], env_seed=0, noise_seed=0)


def test_presets_are_valid_and_the_cli_finds_grpo() -> None:
    for name in PRESETS:
        cfg = resolve_config(GRPOConfig(preset=name))
        assert cfg.num_envs % cfg.group_size == 0
    over = resolve_config(GRPOConfig(preset="target-image", group_size=4, explicit=("group_size",)))
    assert over.group_size == 4 and over.sde_window == 2
    assert discover()["grpo"].config is GRPOConfig


def test_flow_model_window_uses_the_euler_step_and_trains() -> None:
    # The flow family (SD3 layout) behind the same sampler interface: outside the window the
    # deterministic step is the pipeline's Euler step, bit for bit; a windowed run is on-policy.
    tiny_flow = pytest.importorskip("tiny_flow")
    pipe = tiny_flow.tiny_sd3()
    envs = _envs(pipe, n=2)
    sampler = envs.unwrapped.sampler
    ode = ode_sampler(sampler)
    scheduler = envs.unwrapped.core.scheduler
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *sampler.latent_shape, generator=g)
    for k in range(sampler.num_steps):
        v = torch.randn(1, *sampler.latent_shape, generator=g)
        got = deterministic_step(ode, v, x, torch.tensor([k]))
        scheduler._step_index = None  # the diffusers scheduler keeps its own step counter
        want = scheduler.step(v, sampler.timesteps[k], x).prev_sample
        assert torch.equal(got, want)
        x = want
    cfg = replace(TINY, num_updates=1, finetune="full", kl_coef=0.1, cfg_free=True)
    result = train(cfg, model=pipe, reward=brightness)
    assert result["history"][0]["ratio_dev_first_step"] == 0.0
    assert np.isfinite(result["history"][0]["kl"])
