"""DiffusionDenoise-v0: API conformance, determinism, pipeline equivalence, vector env, bad input.

Everything runs on a tiny randomly initialised Stable Diffusion pipeline (8 x 8 latents), so the
tests are fast and independent of the world's trained weights; one smoke test uses the world.
"""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
)
from gymnasium.utils.env_checker import check_env
from tiny_denoise import ENV_ID, PROMPTS, make, run_episode, single_thread, tiny_pipeline  # noqa: F401

import diffenvs  # noqa: F401
from diffenvs.envs.diffusion_denoise import DiffusionDenoiseEnv
from diffenvs.logprob import step_log_prob


@pytest.mark.parametrize("action_mode", ["noise", "latent"])
def test_gymnasium_check_env(pipe, action_mode):
    env = make(pipe, action_mode=action_mode, render_mode="rgb_array")
    check_env(env.unwrapped)
    check_env(env, skip_render_check=False)


@pytest.mark.parametrize("action_mode", ["noise", "latent"])
def test_sb3_check_env(pipe, action_mode):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(make(pipe, action_mode=action_mode).unwrapped, warn=False)


def test_spaces_and_episode_structure(pipe):
    env = make(pipe, num_steps=4)
    obs_space, act_space = env.observation_space, env.action_space
    assert set(obs_space.spaces) == {"latent", "timestep", "prompt_embeds"}
    assert act_space.shape == (4, 8, 8) and act_space.dtype == np.float32
    traj = run_episode(env, seed=1)
    assert len(traj) == 5  # reset + num_steps steps
    assert [r for _, r, _ in traj[:-1]] == [0.0] * 4
    for obs, _, _ in traj:
        assert obs in obs_space
    final = traj[-1][2]
    assert final["image"].shape == (16, 16, 3) and final["image"].dtype == np.uint8
    assert final["terminal_reward"] == traj[-1][1]
    assert set(final["reward_details"]) == {"vivid_ratio", "hue_entropy"}
    assert traj[-1][0]["timestep"][0] == 0.0
    timesteps = [info["timestep"] for _, _, info in traj[1:]]
    assert timesteps == sorted(timesteps, reverse=True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(act_space.sample())


def test_action_space_sample_is_standard_normal(pipe):
    env = make(pipe)
    env.action_space.seed(0)
    draws = np.stack([env.action_space.sample() for _ in range(50)])
    assert abs(draws.mean()) < 0.05 and abs(draws.std() - 1) < 0.05


def test_same_seed_same_episode(pipe):
    a, b = make(pipe), make(pipe)
    ta, tb = run_episode(a, seed=5), run_episode(b, seed=5)
    for (oa, ra, ia), (ob, rb, ib) in zip(ta, tb, strict=True):
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])
        assert ra == rb and ia["prompt"] == ib["prompt"]
    np.testing.assert_array_equal(ta[-1][2]["image"], tb[-1][2]["image"])
    # Re-seeding the same env replays the episode; another seed does not.
    again = run_episode(a, seed=5)
    np.testing.assert_array_equal(again[-1][0]["latent"], ta[-1][0]["latent"])
    other = run_episode(a, seed=6)
    assert not np.array_equal(other[0][0]["latent"], ta[0][0]["latent"])


# --------------------------------------------------------------------------------------------
# Equivalence with diffusers


@pytest.mark.parametrize(
    ("scheduler", "eta", "guidance", "prediction_type"),
    [
        ("ddim", 1.0, 4.0, "epsilon"),
        ("ddim", 0.5, 1.0, "epsilon"),
        ("ddpm", 1.0, 3.0, "epsilon"),
        ("ddim", 1.0, 4.0, "v_prediction"),
    ],
)
def test_noise_mode_reproduces_the_pipeline(scheduler, eta, guidance, prediction_type):
    pipe = tiny_pipeline(prediction_type)
    prompt, seed, steps = PROMPTS[1], 11, 5
    cls = DDIMScheduler if scheduler == "ddim" else DDPMScheduler
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    reference = pipe(
        prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        eta=eta,
        negative_prompt="blurred" if guidance > 1 else None,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images[0]
    env = gym.make(
        ENV_ID,
        model=pipe,
        prompts=[prompt],
        num_steps=steps,
        scheduler=scheduler,
        eta=eta,
        guidance_scale=guidance,
        negative_prompt="blurred" if guidance > 1 else None,
        reward="zero",
    )
    env.reset(seed=seed)
    # The noise the pipeline draws: x_T first, then one standard normal per step, one generator.
    generator = torch.Generator().manual_seed(seed)
    torch.randn((1, *env.action_space.shape), generator=generator)
    done = False
    while not done:
        noise = torch.randn((1, *env.action_space.shape), generator=generator)[0].numpy()
        _, _, done, _, info = env.step(noise)
    core = env.unwrapped.core
    image = core.decode(core.latents).permute(0, 2, 3, 1)[0].numpy()
    assert np.abs(image - reference).max() <= 1e-5
    np.testing.assert_array_equal(info["image"], (reference * 255).round().astype(np.uint8))


def test_latent_mode_agrees_with_noise_mode_and_log_probs(pipe):
    noise_env, latent_env = make(pipe), make(pipe, action_mode="latent")
    _, info_n = noise_env.reset(seed=2)
    _, info_l = latent_env.reset(seed=2)
    rng = np.random.default_rng(0)
    done = False
    d = math.prod(noise_env.action_space.shape)
    while not done:
        eps = rng.standard_normal(noise_env.action_space.shape).astype(np.float32)
        x_prev = info_l["next_mean"] + info_l["next_std"] * eps
        core = latent_env.unwrapped.core
        x_t, k = core.latents.clone(), int(core.step_index[0])
        obs_n, r_n, done, _, info_n = noise_env.step(eps)
        obs_l, r_l, _, _, info_l = latent_env.step(x_prev)
        np.testing.assert_allclose(obs_l["latent"], obs_n["latent"], atol=1e-5)
        # Noise mode: log-prob of mean + std * eps is the standard normal's over std^D.
        expected = -0.5 * float((eps.astype(np.float64) ** 2).sum()) - d * (
            math.log(info_n["std"]) + 0.5 * math.log(2 * math.pi)
        )
        assert info_n["log_prob"] == pytest.approx(expected, rel=1e-4, abs=1e-2)
        # The agent-facing function gives the env's log-prob from (model output, x_t, x_{t-1}, t).
        t = core.timesteps[k : k + 1]
        out = core.model_output(x_t, t, core.embeds)
        lp = step_log_prob(
            core.scheduler, out, t, x_t, torch.from_numpy(obs_l["latent"])[None], eta=1.0
        )
        assert float(lp[0]) == pytest.approx(info_l["log_prob"], rel=1e-5, abs=1e-3)
    assert r_n == pytest.approx(r_l, abs=1e-3)


# --------------------------------------------------------------------------------------------
# Rewards and the KL penalty


def test_named_and_custom_rewards(pipe):
    def brightness(images, prompts):
        assert images.shape[1] == 3 and len(prompts) == len(images)
        return images.mean((1, 2, 3))

    traj = run_episode(make(pipe, reward=brightness), seed=0)
    assert 0.0 <= traj[-1][1] <= 1.0
    traj = run_episode(make(pipe, reward="jpeg_compressibility"), seed=0)
    assert traj[-1][1] < 0 and "size_kb" in traj[-1][2]["reward_details"]
    raw = run_episode(make(pipe, reward="colourfulness"), seed=0)[-1][1]
    std = run_episode(make(pipe, reward="colourfulness", reward_standardisation=(1.0, 2.0)), seed=0)
    assert std[-1][1] == pytest.approx((raw - 1.0) / 2.0, abs=1e-5)
    assert std[-1][2]["reward_details"]["raw"] == pytest.approx(raw, abs=1e-5)


def test_kl_penalty_uses_k3_of_the_reported_policy_log_prob(pipe):
    env = make(pipe, kl_coef=0.5, reward="zero")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="set_policy_log_prob"):
        env.step(env.action_space.sample())
    eps = np.zeros(env.action_space.shape, np.float32)
    base_lp = (
        -0.5 * math.prod(eps.shape) * math.log(2 * math.pi)
    )  # N(0, I) density of eps in noise space
    env.unwrapped.set_policy_log_prob(base_lp)
    _, reward, _, _, info = env.step(eps)
    assert info["kl"] == pytest.approx(0.0, abs=1e-9) and reward == pytest.approx(0.0, abs=1e-9)
    env.unwrapped.set_policy_log_prob(base_lp + 1.0)  # policy more confident than the base
    _, reward, _, _, info = env.step(eps)
    log_r = -1.0
    assert info["kl"] == pytest.approx(math.expm1(log_r) - log_r, rel=1e-6)
    assert reward == pytest.approx(-0.5 * info["kl"], rel=1e-6)


# --------------------------------------------------------------------------------------------
# Prompt sets, reset options, rendering


def test_prompt_sets(pipe, tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("# my prompts\none red circle\n\ntwo blue stars\n")
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS))
    for spec, allowed in [(str(txt), {"one red circle", "two blue stars"}), (jsonl, set(PROMPTS))]:
        env = make(pipe, prompts=spec)
        seen = {env.reset(seed=s)[1]["prompt"] for s in range(8)}
        assert seen <= allowed and len(seen) > 1
    world = make(pipe, prompts="world:heldout")
    prompt = world.reset(seed=0)[1]["prompt"]
    assert (prompt == world.reset(seed=0)[1]["prompt"] and "," in prompt) or " " in prompt
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": "not a list"}')
    with pytest.raises(ValueError, match="not a list"):
        make(pipe, prompts=bad)
    single = make(pipe, prompts="prompt:two blue stars on a grass field")
    assert {single.reset(seed=s)[1]["prompt"] for s in range(3)} == {
        "two blue stars on a grass field"
    }
    with pytest.raises(ValueError, match="names no prompt"):
        make(pipe, prompts="prompt: ")
    fixed = make(pipe, prompts=lambda rng: "three green squares")
    assert fixed.reset()[1]["prompt"] == "three green squares"
    _, info = fixed.reset(options={"prompt": "one red circle"})
    assert info["prompt"] == "one red circle"


def test_reset_latents_option_and_render(pipe):
    env = make(pipe, render_mode="rgb_array")
    x_t = np.full(env.action_space.shape, 0.5, np.float32)
    obs, _ = env.reset(options={"latents": x_t})
    np.testing.assert_array_equal(obs["latent"], x_t)
    frame = env.render()
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
    with pytest.raises(ValueError, match="latents"):
        env.reset(options={"latents": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="Unknown reset options"):
        env.reset(options={"promt": "typo"})


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (np.zeros((4, 8, 7), np.float32), ValueError, r"shape \(4, 8, 7\), expected \(4, 8, 8\)"),
        (np.zeros((1, 4, 8, 8), np.float32), ValueError, "shape"),
        (np.zeros((4, 8, 8), np.int64), TypeError, "int64"),
        (np.zeros((4, 8, 8), bool), TypeError, "bool"),
        (np.full((4, 8, 8), np.nan, np.float32), ValueError, "NaN"),
        (np.full((4, 8, 8), np.inf, np.float32), ValueError, "infinite"),
        ("noise", TypeError, "float"),
        (torch.zeros(4, 8, 8, dtype=torch.int32), TypeError, "int32"),
    ],
)
def test_bad_actions_raise_clear_errors_and_leave_state_intact(pipe, action, error, match):
    env = make(pipe)
    obs, _ = env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)
    assert env.unwrapped.core.step_index[0] == 0
    np.testing.assert_array_equal(
        env.unwrapped.core.observation(np.zeros(1, int))["latent"][0], obs["latent"]
    )
    env.step(np.zeros((4, 8, 8), np.float64))  # float64 is fine


def test_bad_vector_actions(pipe):
    envs = gym.make_vec(ENV_ID, num_envs=2, model=pipe, prompts=PROMPTS, num_steps=2, reward="zero")
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected \(2, 4, 8, 8\)"):
        envs.step(np.zeros((3, 4, 8, 8), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reward": "colourfullness"}, ValueError, "Unknown reward.*colourfulness"),
        ({"scheduler": "euler"}, ValueError, "Unknown scheduler 'euler'"),
        ({"action_mode": "pixels"}, ValueError, "Unknown action_mode"),
        ({"prompts": []}, ValueError, "prompt set.*empty"),
        ({"prompts": "a cat"}, ValueError, r"prompts=\['a cat'\]"),
        ({"eta": 0.0}, ValueError, "eta"),
        ({"num_steps": 0}, ValueError, "num_steps"),
        ({"kl_coef": -1.0}, ValueError, "kl_coef"),
        ({"render_mode": "human"}, ValueError, "render_mode"),
        ({"reward": 42}, TypeError, "reward must be"),
        ({"prompts": ["a red circle", 7]}, TypeError, "Prompt 1 .* not a str"),
        ({"negative_prompt": 3}, TypeError, "negative_prompt"),
    ],
)
def test_bad_constructor_arguments(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        DiffusionDenoiseEnv(**{"model": pipe, "prompts": PROMPTS, **kwargs})


def test_unknown_model_names_a_clear_error(tmp_path):
    from diffenvs.models import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="does-not-exist"):
        DiffusionDenoiseEnv(model=str(tmp_path / "does-not-exist"), reward="zero")
    with pytest.raises(TypeError, match="pipeline"):
        DiffusionDenoiseEnv(model=object(), reward="zero")


def test_step_before_reset_raises(pipe):
    env = DiffusionDenoiseEnv(model=pipe, prompts=PROMPTS, reward="zero")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((4, 8, 8), np.float32))


# --------------------------------------------------------------------------------------------
# The embedded world


def test_world_model_is_the_default():
    from diffenvs.models import world_pipeline_path

    if not (world_pipeline_path() / "model_index.json").is_file():
        pytest.skip("the world's text-to-image weights are not trained yet")
    env = gym.make(ENV_ID, num_steps=2)
    obs, info = env.reset(seed=0)
    assert obs["latent"].shape == env.action_space.shape and obs["latent"].shape[1:] == (16, 16)
    assert isinstance(info["prompt"], str)
    _, _, _, _, info = env.step(env.action_space.sample())
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and info["image"].shape == (64, 64, 3) and np.isfinite(reward)
