"""The differentiable rollout (diffenvs.differentiable) and differentiable rewards, on a tiny pipeline.

* A differentiable rollout and an env episode with the same seed end at the same image.
* Its gradients match finite differences; truncation stops them; checkpointing leaves them alone.
* Rewards say whether they can give gradients, and give them; JPEG is refused with a clear error.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_denoise import ENV_ID, PROMPTS, make, single_thread, tiny_pipeline  # noqa: F401

from diffenvs.differentiable import DifferentiableSampler
from diffenvs.rewards import FunctionReward, NotDifferentiableError, Standardised, make_reward


def env_image(env, seed: int, noise: torch.Tensor) -> torch.Tensor:
    """Run an env episode (noise mode) with the given step noise; the decoded float image."""
    env.reset(seed=seed)
    done = False
    k = 0
    while not done:
        _, _, done, _, _ = env.step(noise[k, 0].numpy())
        k += 1
    core = env.unwrapped.core
    return core.decode(core.latents)


@pytest.mark.parametrize(
    ("scheduler", "guidance", "prediction_type"),
    [("ddim", 4.0, "epsilon"), ("ddpm", 3.0, "epsilon"), ("ddim", 1.0, "v_prediction")],
)
def test_rollout_reproduces_the_env_episode(scheduler, guidance, prediction_type):
    pipe = tiny_pipeline(prediction_type)
    env = make(
        pipe, num_steps=4, scheduler=scheduler, guidance_scale=guidance, prompts=[PROMPTS[1]]
    )
    diff = DifferentiableSampler.from_env(env)
    for seed in (3, 11):
        x_T, noise = diff.initial_noise([seed])
        reference = env_image(env, seed, noise)
        out = diff.rollout(diff.sampler.unet, diff.encode_prompts([PROMPTS[1]]), x_T, noise)
        image = diff.decode(out.latents)
        assert float((image - reference).abs().max()) <= 1e-5


def test_batched_rollout_matches_single_rollouts(pipe):
    diff = DifferentiableSampler.from_env(make(pipe, num_steps=3))
    x_T, noise = diff.initial_noise([1, 2])
    emb = diff.encode_prompts(PROMPTS[:2])
    both = diff.rollout(diff.sampler.unet, emb, x_T, noise).latents
    for i in range(2):
        one = diff.rollout(diff.sampler.unet, emb[i : i + 1], x_T[i : i + 1], noise[:, i : i + 1])
        torch.testing.assert_close(both[i : i + 1], one.latents, atol=1e-5, rtol=1e-5)


def _double_setup():
    """A float64 tiny pipeline and a trainable copy of its UNet (finite differences need float64)."""
    import copy

    pipe = tiny_pipeline()
    env = make(pipe, num_steps=3, dtype=torch.float64, prompts=[PROMPTS[0]])
    diff = DifferentiableSampler.from_env(env)
    unet = copy.deepcopy(diff.sampler.unet).requires_grad_(True)
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).double()
    return diff, unet, target


def test_gradient_matches_finite_differences():
    diff, unet, target = _double_setup()
    x_T, noise = diff.initial_noise([5], dtype=torch.float64)
    emb = diff.encode_prompts([PROMPTS[0]])
    weight = unet.conv_out.weight

    def loss_fn() -> torch.Tensor:
        out = diff.rollout(unet, emb, x_T, noise)
        return ((diff.decode(out.latents) - target) ** 2).mean()

    loss = loss_fn()
    (grad,) = torch.autograd.grad(loss, weight)
    direction = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)).double()
    direction /= direction.norm()
    eps = 1e-5
    with torch.no_grad():
        weight += eps * direction
        up = loss_fn()
        weight -= 2 * eps * direction
        down = loss_fn()
        weight += eps * direction
    numeric = float((up - down) / (2 * eps))
    analytic = float((grad * direction).sum())
    assert abs(analytic) > 1e-8
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_gradient_wrt_the_initial_noise_matches_finite_differences():
    diff, unet, target = _double_setup()
    x_T, noise = diff.initial_noise([6], dtype=torch.float64)
    emb = diff.encode_prompts([PROMPTS[0]])
    x = x_T.clone().requires_grad_(True)

    def loss_of(z):
        return ((diff.decode(diff.rollout(unet, emb, z, noise).latents) - target) ** 2).mean()

    (grad,) = torch.autograd.grad(loss_of(x), x)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).double()
    eps = 1e-5
    with torch.no_grad():
        numeric = float((loss_of(x_T + eps * d) - loss_of(x_T - eps * d)) / (2 * eps))
    assert float((grad * d).sum()) == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_truncation_stops_gradients_and_checkpointing_keeps_them():
    diff, unet, target = _double_setup()
    x_T, noise = diff.initial_noise([7], dtype=torch.float64)
    emb = diff.encode_prompts([PROMPTS[0]])
    x = x_T.clone().requires_grad_(True)
    truncated = diff.rollout(unet, emb, x, noise, grad_steps=1)
    assert truncated.grad_from == diff.num_steps - 1
    loss = ((diff.decode(truncated.latents) - target) ** 2).mean()
    grads = torch.autograd.grad(loss, [x, unet.conv_out.weight], allow_unused=True)
    assert grads[0] is None  # nothing flows back past the last K steps
    assert float(grads[1].abs().sum()) > 0
    # Gradient checkpointing changes memory, not the gradient.
    plain, ckpt = [
        torch.autograd.grad(
            (
                (
                    diff.decode(
                        diff.rollout(unet, emb, x_T, noise, grad_steps=2, checkpoint=c).latents
                    )
                    - target
                )
                ** 2
            ).mean(),
            unet.conv_out.weight,
        )[0]
        for c in (False, True)
    ]
    torch.testing.assert_close(plain, ckpt)


def test_stop_at_returns_the_one_step_x0_prediction_and_kl(pipe):
    diff = DifferentiableSampler.from_env(make(pipe, num_steps=4))
    x_T, noise = diff.initial_noise([4])
    emb = diff.encode_prompts([PROMPTS[0]])
    base = diff.sampler.unet
    out = diff.rollout(base, emb, x_T, noise, stop_at=2, grad_steps=1, base_unet=base)
    assert out.steps_run == 3
    dist = diff.distribution(base, out.last_input, 2, emb)
    torch.testing.assert_close(out.latents, dist.pred_original_sample)
    assert float(out.kl.abs().max()) == 0.0  # the base model against itself
    import copy

    moved = copy.deepcopy(base)
    with torch.no_grad():
        moved.conv_out.bias += 0.1
    moved.requires_grad_(True)
    out = diff.rollout(moved, emb, x_T, noise, grad_steps=2, base_unet=base)
    assert len(out.kl_steps) == 2 and float(out.kl[0]) > 0
    (g,) = torch.autograd.grad(out.kl.sum(), moved.conv_out.bias)
    assert float(g.abs().sum()) > 0


def test_env_exposes_its_pipeline_read_only_and_from_env_uses_it(pipe):
    env = make(pipe, num_steps=3)
    assert env.unwrapped.pipeline is pipe
    with pytest.raises(AttributeError):
        env.unwrapped.pipeline = object()
    assert DifferentiableSampler.from_env(env).pipe is pipe
    vec = gym.make_vec(ENV_ID, num_envs=2, model=pipe, prompts=PROMPTS, num_steps=3)
    assert vec.unwrapped.pipeline is pipe
    assert DifferentiableSampler.from_env(vec).pipe is pipe

    class NoPipeline(gym.Env):  # a sampler but no public pipeline: refused with the way out
        sampler = env.unwrapped.sampler

    with pytest.raises(TypeError, match=r"\.pipeline"):
        DifferentiableSampler.from_env(NoPipeline())


def test_rollout_errors_say_what_is_wrong(pipe):
    env = make(pipe, num_steps=3)
    diff = DifferentiableSampler.from_env(env)
    x_T, noise = diff.initial_noise([0])
    emb = diff.encode_prompts([PROMPTS[0]])
    with pytest.raises(ValueError, match="stop_at"):
        diff.rollout(diff.sampler.unet, emb, x_T, noise, stop_at=3)
    with pytest.raises(ValueError, match="grad_steps"):
        diff.rollout(diff.sampler.unet, emb, x_T, noise, grad_steps=4)
    with pytest.raises(ValueError, match="noise has shape"):
        diff.rollout(diff.sampler.unet, emb, x_T, noise[:2])
    with pytest.raises(TypeError, match="DiffusionDenoise-v0"):
        DifferentiableSampler.from_env(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match="pipeline"):
        DifferentiableSampler(diff.sampler, object())
    with pytest.raises(TypeError, match="list of str"):
        diff.encode_prompts("one red circle")


# --------------------------------------------------------------------------------------------
# Differentiable rewards


def _images(requires_grad: bool = True) -> torch.Tensor:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("name", ["target_rmse", "colourfulness", "zero", "oracle", "oracle:red"])
def test_differentiable_rewards_give_gradients(name):
    reward = make_reward(name)
    assert reward.supports_gradients
    x = _images()
    scores = reward.differentiable_score(x, ["one red circle", "two blue stars"])
    assert scores.shape == (2,)
    (g,) = torch.autograd.grad(scores.sum(), x)
    assert torch.isfinite(g).all()
    if name != "zero":
        assert float(g.abs().sum()) > 0


def test_differentiable_score_equals_the_score_for_exact_rewards():
    for name in ("target_rmse", "oracle"):
        reward = make_reward(name)
        x = _images(False)
        torch.testing.assert_close(
            reward.differentiable_score(x, ["one red circle"] * 2),
            reward(x, ["one red circle"] * 2),
        )


def test_colourfulness_stand_in_tracks_the_exact_score():
    reward = make_reward("colourfulness")
    grey = torch.full((1, 3, 16, 16), 0.5)
    vivid = torch.zeros(1, 3, 16, 16)
    vivid[:, 0, :, :8] = 1.0
    vivid[:, 2, :, 8:] = 1.0
    x = torch.cat([grey, vivid])
    exact, smooth = reward(x), reward.differentiable_score(x)
    assert float(exact[1]) > float(exact[0]) and float(smooth[1]) > float(smooth[0])


def test_clip_and_learned_rewards_give_gradients(tmp_path):
    from diffenvs.preference.reward_model import build_reward_model

    x = _images()
    clip = make_reward("clip_score")
    (g,) = torch.autograd.grad(clip.differentiable_score(x, ["a red circle"] * 2).sum(), x)
    assert float(g.abs().sum()) > 0
    build_reward_model("clip-mlp").save(tmp_path / "rm")
    learned = make_reward(f"learned:{tmp_path / 'rm'}")
    assert learned.supports_gradients
    y = _images()
    s = learned.differentiable_score(y, ["one red circle"] * 2)
    torch.testing.assert_close(s.detach(), learned(y.detach(), ["one red circle"] * 2))
    (g,) = torch.autograd.grad(s.sum(), y)
    assert float(g.abs().sum()) > 0


def test_non_differentiable_rewards_are_refused_clearly():
    jpeg = make_reward("jpeg_compressibility")
    assert not jpeg.supports_gradients
    with pytest.raises(NotDifferentiableError, match="JPEG"):
        jpeg.differentiable_score(_images())
    with pytest.raises(NotDifferentiableError, match="soft=True"):
        make_reward("oracle", soft=False).differentiable_score(_images())
    plain = FunctionReward(lambda im, p: im.mean((1, 2, 3)))
    with pytest.raises(NotDifferentiableError, match="not differentiable"):
        plain.differentiable_score(_images())
    declared = FunctionReward(lambda im, p: im.mean((1, 2, 3)), differentiable=True)
    x = _images()
    (g,) = torch.autograd.grad(declared.differentiable_score(x).sum(), x)
    assert float(g.abs().sum()) > 0
    with pytest.raises(TypeError, match="float image tensors"):
        make_reward("target_rmse").differentiable_score(np.zeros((1, 16, 16, 3), np.uint8))


def test_standardised_passes_gradients_through():
    reward = Standardised(make_reward("target_rmse"), 1.0, 2.0)
    x = _images()
    s = reward.differentiable_score(x)
    torch.testing.assert_close(s.detach(), reward(x.detach()))
    assert torch.autograd.grad(s.sum(), x)[0].abs().sum() > 0
    assert not Standardised(make_reward("jpeg_compressibility"), 0.0, 1.0).supports_gradients
