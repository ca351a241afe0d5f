"""The base sampler (diffenvs/sampler.py): the env's public description of its step and the one
guided UNet forward, shared by the env and the PPO policy.

The central check: a freshly initialised PPO policy reproduces the env's base step exactly (mean,
σ_t, log-prob), on the world and on a tiny random LCM-style UNet (``time_cond_proj_dim`` set), whose
guidance reaches the UNet through ``timestep_cond`` instead of a second, unconditional pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_denoise import tiny_pipeline

import diffenvs  # noqa: F401
from agents.ppo.config import PPOConfig
from agents.ppo.policy import DiffusionActorCritic, build_policy_unet
from diffenvs.sampler import BaseSampler, guided_model_output

PROMPTS = ["one large red circle in the middle of a grass field", "two small blue stars"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lcm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random pipeline whose UNet takes a guidance embedding (LCM-style), saved to disk."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pipe = tiny_pipeline()
    torch.manual_seed(1)
    # The tiny UNet's own arguments plus a guidance-embedding width ("_"-keys are bookkeeping
    # that would reset time_cond_proj_dim to its default).
    config = {k: v for k, v in pipe.unet.config.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 16})
    assert unet.time_embedding.cond_proj is not None
    lcm = StableDiffusionPipeline(**{**pipe.components, "unet": unet})
    folder = tmp_path_factory.mktemp("tiny_lcm") / "pipe"
    lcm.save_pretrained(folder)
    return folder


def _vector_env(model, num_steps: int = 2) -> gym.vector.VectorEnv:
    return gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=len(PROMPTS),
        model=model,
        prompts=PROMPTS,
        num_steps=num_steps,
        action_mode="latent",
        reward="zero",
    )


def _assert_policy_reproduces_base_step(envs, finetune: str) -> None:
    """Step the env with the fresh policy's own samples; at every step the policy's Gaussian must
    be the env's base Gaussian, bit for bit."""
    sampler = envs.unwrapped.sampler
    cfg = PPOConfig(finetune=finetune)
    policy = DiffusionActorCritic(build_policy_unet(sampler.unet, cfg), sampler)
    n = envs.num_envs
    obs, _ = envs.reset(seed=3, options={"prompts": PROMPTS})
    embeds = torch.as_tensor(obs["prompt_embeds"])
    gen = torch.Generator().manual_seed(4)
    for k in range(sampler.num_steps):
        x = torch.as_tensor(obs["latent"])
        with torch.no_grad():
            dist = policy.distribution(x, torch.full((n,), k), embeds)
        action = dist.sample(torch.randn(x.shape, generator=gen))
        obs, _, _, _, info = envs.step(action.numpy())
        base_mean = torch.as_tensor(np.stack(info["mean"]))
        base_std = torch.as_tensor(info["std"], dtype=torch.float32)
        base_log_prob = torch.as_tensor(info["log_prob"]).float()
        torch.testing.assert_close(dist.mean, base_mean, rtol=0, atol=0)
        torch.testing.assert_close(dist.std, base_std, rtol=0, atol=0)
        torch.testing.assert_close(dist.log_prob(action), base_log_prob, rtol=0, atol=0)
        torch.testing.assert_close(policy.step_std(torch.tensor([k])), sampler.sigma[[k]])


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_fresh_policy_reproduces_the_world_base_step(finetune: str) -> None:
    envs = _vector_env("world")
    assert envs.unwrapped.sampler.do_cfg and envs.unwrapped.sampler.timestep_cond is None
    _assert_policy_reproduces_base_step(envs, finetune)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_fresh_policy_reproduces_an_lcm_style_base_step(lcm_folder: Path, finetune: str) -> None:
    envs = _vector_env(str(lcm_folder), num_steps=3)
    sampler = envs.unwrapped.sampler
    # A guidance-distilled UNet: no classifier-free guidance pass, the scale goes in as an embedding.
    assert not sampler.do_cfg and sampler.negative_embeds is None
    assert sampler.timestep_cond is not None and sampler.timestep_cond.shape == (1, 16)
    # The embedding changes the UNet's output, so a policy that dropped it would differ.
    x = torch.randn(2, *sampler.latent_shape, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(2, *sampler.embed_shape, generator=torch.Generator().manual_seed(1))
    k = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        with_cond = sampler.model_output(sampler.unet, x, k, emb)
        without = guided_model_output(
            sampler.unet,
            x,
            sampler.timesteps[k],
            emb,
            guidance_scale=sampler.guidance_scale,
            negative_embeds=None,
            timestep_cond=None,
        )
    assert (with_cond - without).abs().max() > 1e-3
    _assert_policy_reproduces_base_step(envs, finetune)


def test_envs_expose_one_read_only_sampler() -> None:
    pipe = tiny_pipeline()
    env = gym.make("DiffusionDenoise-v0", model=pipe, prompts=PROMPTS, num_steps=3)
    sampler = env.unwrapped.sampler
    assert isinstance(sampler, BaseSampler) and sampler is env.unwrapped.core.sampler
    assert sampler.num_steps == 3 and sampler.scheduler_name == "ddim" and sampler.eta == 1.0
    assert sampler.timesteps.shape == sampler.prev_timesteps.shape == (3,)
    assert bool((sampler.prev_timesteps < sampler.timesteps).all())
    assert sampler.sigma.shape == (3,) and bool((sampler.sigma > 0).all())
    assert sampler.latent_shape == (4, 8, 8) and sampler.embed_shape[-1] == 32
    assert sampler.do_cfg and sampler.negative_embeds.shape == (1, *sampler.embed_shape)
    assert sampler.unet is pipe.unet
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.guidance_scale = 1.0  # type: ignore[misc]
    vec = _vector_env(pipe)
    assert isinstance(vec.unwrapped.sampler, BaseSampler)
    assert vec.unwrapped.sampler.num_steps == 2


def test_the_env_forward_is_the_guided_forward_and_differentiable() -> None:
    pipe = tiny_pipeline()
    env = gym.make("DiffusionDenoise-v0", model=pipe, prompts=PROMPTS, num_steps=3)
    core, sampler = env.unwrapped.core, env.unwrapped.sampler
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *sampler.latent_shape, generator=g)
    emb = torch.randn(3, *sampler.embed_shape, generator=g)
    k = torch.tensor([0, 2, 1])  # per-sample timesteps
    env_out = core.model_output(x, sampler.timesteps[k], emb)
    shared = sampler.model_output(pipe.unet, x, k, emb)
    torch.testing.assert_close(env_out, shared.detach(), rtol=0, atol=0)
    # Guidance: uncond + w (text - uncond) of two plain UNet passes.
    uncond = pipe.unet(x, sampler.timesteps[k], sampler.negative_embeds.expand(3, -1, -1)).sample
    text = pipe.unet(x, sampler.timesteps[k], emb).sample
    want = uncond + sampler.guidance_scale * (text - uncond)
    torch.testing.assert_close(shared, want, rtol=1e-4, atol=1e-5)
    # No no_grad inside: a policy's loss reaches the UNet's weights through the guided forward.
    dist = sampler.distribution(shared, x, k)
    dist.mean.square().sum().backward()
    assert pipe.unet.conv_out.weight.grad is not None
    pipe.unet.zero_grad(set_to_none=True)


def test_guidance_off_is_one_conditional_pass() -> None:
    pipe = tiny_pipeline()
    env = gym.make("DiffusionDenoise-v0", model=pipe, prompts=PROMPTS, guidance_scale=1.0)
    sampler = env.unwrapped.sampler
    assert not sampler.do_cfg and sampler.negative_embeds is None
    x = torch.randn(2, *sampler.latent_shape, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(2, *sampler.embed_shape, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([1, 1])
    with torch.no_grad():
        got = sampler.model_output(pipe.unet, x, k, emb)
        want = pipe.unet(x, sampler.timesteps[1], emb).sample
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert replace(sampler, guidance_scale=7.0).guidance_scale == 7.0  # a modified copy is fine


# --------------------------------------------------------------------------------------------
# When the env runs the base model (issue 20): count the UNet forwards per step.


class _Counter:
    """Counts forward calls of a module (one guided pass = one call, both CFG halves batched)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


def _count_base_passes(pipe, base_step: str, action_mode: str = "latent", kl_coef: float = 0.0):
    """(base UNet calls at reset, calls per step, the step infos) over one 3-step episode."""
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=2,
        model=pipe,
        prompts=PROMPTS,
        num_steps=3,
        action_mode=action_mode,
        reward="zero",
        kl_coef=kl_coef,
        base_step=base_step,
    )
    counter = _Counter(envs.unwrapped.sampler.unet)
    obs, reset_info = envs.reset(seed=0)
    at_reset, per_step, infos = counter.calls, [], [reset_info]
    for _ in range(3):
        before = counter.calls
        if kl_coef > 0:
            envs.unwrapped.set_policy_log_prob(np.zeros(2))
        action = obs["latent"] * 0.9 if action_mode == "latent" else np.zeros_like(obs["latent"])
        obs, _, _, _, info = envs.step(action)
        per_step.append(counter.calls - before)
        infos.append(info)
    counter.handle.remove()
    return at_reset, per_step, infos


def test_latent_mode_without_kl_runs_no_base_pass() -> None:
    pipe = tiny_pipeline()
    # 'always' (the default): one guided base pass for the first action and after every
    # non-final step, and the infos carry the base model's Gaussian and log-prob.
    at_reset, per_step, infos = _count_base_passes(pipe, "always")
    assert (at_reset, per_step) == (1, [1, 1, 0])
    assert "next_mean" in infos[0] and {"mean", "log_prob"} <= set(infos[1])
    # 'auto' with no KL penalty: the base model never runs; σ_t (schedule-only) is still there.
    at_reset, per_step, infos = _count_base_passes(pipe, "auto")
    assert (at_reset, per_step) == (0, [0, 0, 0])
    assert "next_mean" not in infos[0] and "next_std" in infos[0]
    assert not {"mean", "log_prob"} & set(infos[1]) and "std" in infos[1]
    assert "terminal_reward" in infos[3]
    # 'auto' with a KL penalty, and noise mode: the env needs the base step, so it runs.
    assert _count_base_passes(pipe, "auto", kl_coef=0.1)[1] == [1, 1, 0]
    assert _count_base_passes(pipe, "auto", action_mode="noise")[1] == [1, 1, 0]


def test_lazy_base_step_still_renders_and_reports_the_same_std() -> None:
    pipe = tiny_pipeline()
    lazy = gym.make("DiffusionDenoise-v0", model=pipe, prompts=PROMPTS, num_steps=3,
                    action_mode="latent", reward="zero", base_step="never",
                    render_mode="rgb_array")  # fmt: skip
    eager = gym.make("DiffusionDenoise-v0", model=pipe, prompts=PROMPTS, num_steps=3,
                     action_mode="latent", reward="zero", render_mode="rgb_array")  # fmt: skip
    obs_l, info_l = lazy.reset(seed=1)
    obs_e, info_e = eager.reset(seed=1)
    assert info_l["next_std"] == pytest.approx(info_e["next_std"])
    counter = _Counter(lazy.unwrapped.sampler.unet)
    # render() shows the base model's x_0 prediction: computed on demand, then cached.
    assert np.array_equal(lazy.render(), eager.render())
    lazy.render()
    assert counter.calls == 1
    _, _, _, _, step_l = lazy.step(obs_l["latent"])
    _, _, _, _, step_e = eager.step(obs_e["latent"])
    assert step_l["std"] == pytest.approx(step_e["std"])
    assert step_l["next_std"] == pytest.approx(step_e["next_std"])
    counter.handle.remove()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_step": "sometimes"}, "Unknown base_step"),
        ({"base_step": "never", "action_mode": "noise"}, "needs action_mode='latent'"),
        ({"base_step": "never", "action_mode": "latent", "kl_coef": 0.1}, "KL penalty"),
    ],
)
def test_base_step_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("DiffusionDenoise-v0", model=tiny_pipeline(), **kwargs)


def test_ppo_rollout_without_kl_costs_one_guided_pass_per_step() -> None:
    from agents.ppo.rollout import run_episodes

    pipe = tiny_pipeline()
    counts = {}
    for base_step in ("auto", "always"):
        envs = gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=pipe, prompts=PROMPTS,
                            num_steps=3, action_mode="latent", reward="zero",
                            base_step=base_step)  # fmt: skip
        sampler = envs.unwrapped.sampler
        policy = DiffusionActorCritic(build_policy_unet(sampler.unet, PPOConfig()), sampler)
        base, own = _Counter(sampler.unet), _Counter(policy.unet)
        out = run_episodes(policy, envs, PROMPTS, env_seed=0, noise_seed=1)
        counts[base_step] = (base.calls, own.calls)
        base.handle.remove()
        own.handle.remove()
        assert (out["base_log_probs"] is None) == (base_step == "auto")
    assert counts["auto"] == (0, 3)  # the policy's own guided pass, nothing else
    assert counts["always"] == (3, 3)  # plus the base model's at every step
