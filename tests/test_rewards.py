"""The reward library: registry, formulas from the seeds, batching, standardisation, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffenvs.rewards import (
    AestheticScore,
    ClipImageSimilarity,
    ClipScore,
    Colourfulness,
    FunctionReward,
    OracleReward,
    Reward,
    Standardised,
    TargetRMSE,
    available_rewards,
    make_reward,
    parse_attribute_target,
    rgb_to_lab,
)

NAMES = [
    "clip_score",
    "clip_image",
    "colourfulness",
    "target_rmse",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "aesthetic",
    "oracle",
    "pickscore",
    "zero",
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # Tiny models run fastest on one thread, and two threads thrash when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip
    from open_clip.model import CLIP

    from diffenvs.models import ClipModel

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    )
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    return ClipModel(model, tokenizer, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, name="tiny")


@pytest.fixture(scope="module")
def tiny_oracle():
    from diffenvs.world.oracle import AttributeOracle

    torch.manual_seed(0)
    return AttributeOracle(width=8).eval()


def images(n: int = 4, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def solid(rgb: tuple[float, float, float], size: int = 16) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


# --------------------------------------------------------------------------------------------
# Registry


def test_every_reward_is_registered_by_name():
    assert set(NAMES) <= set(available_rewards())
    assert isinstance(make_reward("colorfulness"), Colourfulness)  # US spelling alias
    assert isinstance(make_reward("Target-RMSE"), TargetRMSE)  # case and dashes are forgiven


def test_unknown_names_and_bad_specs_raise_clear_errors():
    with pytest.raises(
        ValueError, match=r"Unknown reward 'colourfulnes'.*Did you mean.*colourfulness"
    ):
        make_reward("colourfulnes")
    with pytest.raises(ValueError, match="takes no ':argument'"):
        make_reward("colourfulness:3")
    with pytest.raises(TypeError, match="reward must be"):
        make_reward(3.5)
    with pytest.raises(ValueError, match="Reward instance"):
        make_reward(Colourfulness(), vivid_threshold=3)
    with pytest.raises(ValueError, match="needs predictor weights"):
        make_reward("aesthetic")


def test_user_functions_become_rewards():
    reward = make_reward(lambda x, prompts: x.mean((1, 2, 3)).numpy())
    assert isinstance(reward, FunctionReward)
    x = images()
    torch.testing.assert_close(reward(x), x.mean((1, 2, 3)))
    details = make_reward(lambda x, p: (torch.ones(len(x)), {"n": [1] * len(x)})).evaluate(x)
    assert details.details["n"].tolist() == [1, 1, 1, 1]


def test_rewards_validate_their_inputs_and_outputs():
    reward = make_reward("colourfulness")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reward(torch.rand(2, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        reward(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        reward(images(2), ["a", "b", "c"])
    with pytest.raises(ValueError, match="one score per image"):
        make_reward(lambda x, p: torch.zeros(len(x) + 1))(images(2))
    with pytest.raises(ValueError, match="non-finite scores"):
        make_reward(lambda x, p: torch.full((len(x),), float("nan")))(images(2))
    # uint8 HWC arrays are accepted and give the same scores as float tensors.
    x = images(3)
    as_uint8 = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(
        reward(as_uint8), reward(torch.from_numpy(as_uint8).permute(0, 3, 1, 2).float() / 255)
    )


# --------------------------------------------------------------------------------------------
# Model-free rewards


def test_lab_conversion_matches_reference_values():
    rgb = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5]])
    lab = rgb_to_lab(rgb.view(-1, 3, 1, 1)).view(-1, 3)
    expected = torch.tensor(
        [[53.24, 80.09, 67.20], [32.30, 79.19, -107.86], [100.0, 0, 0], [0, 0, 0], [53.39, 0, 0]]
    )
    torch.testing.assert_close(lab, expected, atol=0.05, rtol=0)


def test_colourfulness_follows_kristiansen_vagen_appendix_a():
    reward = Colourfulness()
    assert float(reward(solid((0.5, 0.5, 0.5)))) == 0.0  # grey: no vivid pixel
    assert float(reward(solid((1.0, 0.0, 0.0)))) == pytest.approx(0.0, abs=1e-6)  # one hue: 0 bits
    half = torch.cat([solid((1.0, 0, 0))[..., :8], solid((0, 0, 1.0))[..., 8:]], dim=-1)
    out = reward.evaluate(half)
    assert float(out.details["vivid_ratio"]) == 1.0
    assert float(out.rewards) == pytest.approx(1.0, abs=1e-6)  # 2 hues, 1 bit
    rainbow = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert float(reward(rainbow)) <= math.log2(7) and float(reward(rainbow)) > 2.0


def test_target_rmse_is_kristiansen_vagen_algorithm_1(tmp_path):
    target = torch.full((3, 8, 8), 0.5)
    reward = TargetRMSE(target)
    assert float(reward(target[None])) == pytest.approx(0.0, abs=1e-6)
    # loss = 0.25 per pixel, adjusted by (1 + 0.5 / 0.5) → 0.5; RMSE √0.5; reward −10·√0.5.
    assert float(reward(torch.zeros(1, 3, 8, 8))) == pytest.approx(-10 * math.sqrt(0.5), rel=1e-6)
    plain = TargetRMSE(target, adjust=False)
    assert float(plain(torch.zeros(1, 3, 8, 8))) == pytest.approx(-5.0, rel=1e-6)
    # Differentiable, and a target file of another size is resized to the images.
    path = tmp_path / "target.png"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(path)
    x = torch.zeros(2, 3, 8, 8, requires_grad=True)
    make_reward(f"target_rmse:{path}")(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_reward("target_rmse:/no/such/image.png")


def test_jpeg_rewards_prefer_flat_or_busy_images():
    flat, noise = solid((0.2, 0.4, 0.6), 64), images(1, size=64)
    comp, incomp = make_reward("jpeg_compressibility"), make_reward("jpeg_incompressibility")
    assert float(comp(flat)) > float(comp(noise))
    assert float(incomp(noise)) == pytest.approx(-float(comp(noise)))
    assert float(make_reward("jpeg_compressibility:50")(noise)) > float(comp(noise))


@pytest.mark.parametrize("name", ["colourfulness", "target_rmse", "jpeg_compressibility", "zero"])
def test_batched_equals_one_by_one(name):
    reward, x = make_reward(name), images(5, size=32)
    batched = reward(x)
    single = torch.cat([reward(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# Model-based rewards (tiny random models stand in for the trained ones)


def test_clip_rewards(tiny_clip):
    x, prompts = images(3), ["a red circle", "two blue stars", "a cat"]
    score = ClipScore(clip=tiny_clip)
    torch.testing.assert_close(score(x, prompts), tiny_clip.score(x, prompts))
    x.requires_grad_(True)
    score(x, prompts).sum().backward()
    assert x.grad is not None
    target = images(1, seed=9)
    sim = make_reward("clip_image", target=target[0], clip=tiny_clip)
    assert isinstance(sim, ClipImageSimilarity)
    with torch.no_grad():
        assert float(sim(target)) == pytest.approx(1.0, abs=1e-5)
        assert float(sim(images(1, seed=3))) < 1.0


def test_aesthetic_mlp_loads_weights_by_name(tiny_clip, tmp_path):
    from diffenvs.io import save_tensors
    from diffenvs.models import AestheticMLP

    head = AestheticMLP(embed_dim=16).eval()
    path = tmp_path / "aesthetic.safetensors"
    save_tensors(head.state_dict(), path)
    reward = make_reward(f"aesthetic:{path}", clip=tiny_clip)
    assert isinstance(reward, AestheticScore)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(reward(x), head(tiny_clip.encode_images(x)))
    wide = tmp_path / "wide.safetensors"
    save_tensors(AestheticMLP(embed_dim=768).state_dict(), wide)
    with pytest.raises(ValueError, match="768-d CLIP embeddings"):
        make_reward("aesthetic", weights=str(wide), clip=tiny_clip)


def test_oracle_semantic_rewards(tiny_oracle):
    x = images(2, size=64)
    prompts = ["two small red stars on a grass field, glowing", "nothing the world knows"]
    reward = OracleReward(oracle=tiny_oracle)
    out = reward.evaluate(x, prompts)
    assert out.details["n_attributes"].tolist() == [6, 0]
    logits = tiny_oracle(x)
    probs = {a: v.softmax(-1) for a, v in logits.items()}
    wanted = parse_attribute_target(prompts[0])
    expected = torch.stack([probs[a][0, k] for a, k in wanted]).mean()
    assert float(out.rewards[0]) == pytest.approx(float(expected), abs=1e-6)
    assert float(out.rewards[1]) == 0.0
    red = make_reward("oracle:red", oracle=tiny_oracle)  # "the image shows a red object"
    torch.testing.assert_close(red(x, prompts), probs["colour"][:, 0].detach(), atol=1e-6, rtol=0)
    hard = make_reward("oracle:colour=red, shape=star", oracle=tiny_oracle, soft=False)
    assert set(hard(x).tolist()) <= {0.0, 0.5, 1.0}
    assert hard(images(2, size=32)).shape == (2,)  # other sizes are resized to 64 x 64
    with pytest.raises(ValueError, match=r"teal.*known"):
        make_reward("oracle:colour=teal", oracle=tiny_oracle)
    with pytest.raises(ValueError, match="names no world attribute"):
        make_reward("oracle:a cat", oracle=tiny_oracle)
    counts = make_reward("oracle:prompt:count", oracle=tiny_oracle)  # only the prompt's count
    out = counts.evaluate(x, prompts)
    assert out.details["n_attributes"].tolist() == [1, 0]
    assert float(out.rewards[0]) == pytest.approx(float(probs["count"][0, 1]), abs=1e-6)
    with pytest.raises(ValueError, match="after 'prompt:'"):
        make_reward("oracle:prompt:colours", oracle=tiny_oracle)


# --------------------------------------------------------------------------------------------
# Standardisation (Kristiansen & Vågen 2023, eq. 5.2)


def test_standardisation():
    base = make_reward("colourfulness")
    reference = images(16, size=16)
    std = Standardised.fit(base, reference)
    scores = std(reference)
    assert float(scores.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(scores.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    out = std.evaluate(reference[:2])
    torch.testing.assert_close(out.details["raw"], base(reference[:2]))
    with pytest.raises(ValueError, match="same score"):
        Standardised.fit(make_reward("zero"), reference)
    with pytest.raises(ValueError, match="positive finite std"):
        Standardised(base, 0.0, 0.0)


def test_world_clip_score_when_trained():
    from diffenvs.models import world_clip_path

    if not (world_clip_path() / "open_clip_model.safetensors").is_file():
        pytest.skip("the world's CLIP is not trained yet")
    from diffenvs.world.render import Scene, render

    scene = Scene(colour="blue", shape="star", scene="ocean")
    image = np.asarray(render(scene, seed=0))[None]
    reward: Reward = make_reward("clip_score")
    right, wrong = (
        reward(image, [scene.caption()]),
        reward(image, [scene.with_(colour="red").caption()]),
    )
    assert float(right) > float(wrong)


def test_sum_of_rewards_is_the_weighted_sum_of_its_terms():
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    total = make_reward("colourfulness+0.5*jpeg_compressibility")
    assert total.name == "colourfulness+0.5*jpeg_compressibility"
    out = total.evaluate(images)
    expected = make_reward("colourfulness")(images) + 0.5 * make_reward("jpeg_compressibility")(
        images
    )
    assert torch.allclose(out.rewards, expected, atol=1e-5)
    assert set(out.details) == {"term:colourfulness", "term:jpeg_compressibility"}
    # One non-differentiable term makes the sum non-differentiable, with the term's own error.
    assert not total.supports_gradients
    assert make_reward("colourfulness+target_rmse").supports_gradients
    for bad in ("colourfulness+", "x*colourfulness+colourfulness", "colourfulness+nope"):
        with pytest.raises(ValueError):
            make_reward(bad)
