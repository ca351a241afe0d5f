"""Model loading (M1.6): tiny random models saved to disk load back through the same functions as
real checkpoints, and every unavailable / broken model fails with one clear error, offline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffenvs import models
from diffenvs.io import save_tensors
from diffenvs.models import (
    AestheticLinear,
    AestheticMLP,
    ClipModel,
    InvalidModelError,
    ModelNotFoundError,
    load_aesthetic,
    load_clip,
    load_pickscore,
    load_pipeline,
    load_reward_network,
)

torch.set_num_threads(1)
PROMPT = "two small red circles on a grass field, outlined"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network: offline via the environment, as a user would set it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------ builders


def _tiny_sd_pipeline(tokenizer_dir: Path):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffenvs.world.tokenizer import build_world_tokenizer

    tokenizer = build_world_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            projection_dim=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=100,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe) -> np.ndarray:
    out = pipe(
        [PROMPT],
        num_inference_steps=2,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    )
    return out.images


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory):
    """(in-memory pipeline, folder it was saved to)."""
    root = tmp_path_factory.mktemp("tiny_sd")
    pipe = _tiny_sd_pipeline(root / "tokenizer_src")
    pipe.save_pretrained(root / "pipe")
    return pipe, root / "pipe"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    """(in-memory open_clip model, folder in the world's local-dir layout)."""
    from diffenvs.world.clip_architecture import create_world_clip

    folder = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    model, _ = create_world_clip(folder)
    save_tensors(model.state_dict(), folder / "open_clip_model.safetensors")
    return model.eval(), folder


def _images(n: int = 2, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _fake_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    """The layout huggingface_hub uses for a downloaded model: refs/main → snapshots/<commit>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo_dir / "snapshots" / commit)


# ------------------------------------------------------------------------------ pipelines


def test_tiny_pipeline_round_trips_through_a_folder(tiny_sd):
    pipe, folder = tiny_sd
    loaded = load_pipeline(folder)
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    expected = _generate(pipe)
    assert expected.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(_generate(loaded), expected, atol=1e-5)


def test_cached_hub_id_loads_offline(tiny_sd, tmp_path):
    pipe, folder = tiny_sd
    _fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-sd", folder)
    loaded = load_pipeline("tiny-org/tiny-sd", cache_dir=tmp_path / "hub")
    np.testing.assert_allclose(_generate(loaded), _generate(pipe), atol=1e-5)


def test_missing_pipeline_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "nope")


def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(InvalidModelError, match=r"model_index\.json"):
        load_pipeline(tmp_path)


def test_pipeline_folder_lacking_components(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(InvalidModelError, match="lacks unet, vae, text_encoder"):
        load_pipeline(tmp_path)


def test_pipeline_with_a_corrupt_component(tiny_sd, tmp_path):
    _, folder = tiny_sd
    shutil.copytree(folder, tmp_path / "pipe")
    for weights in (tmp_path / "pipe" / "unet").glob("*.safetensors"):
        weights.write_bytes(b"\x00garbage")
    with pytest.raises(InvalidModelError, match="could not be loaded"):
        load_pipeline(tmp_path / "pipe")


def test_uncached_hub_id_offline_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline("someone/not-cached-sd", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "'someone/not-cached-sd'" in message
    assert "HF_HUB_OFFLINE" in message
    assert "hf download someone/not-cached-sd" in message
    assert "HF_HOME" in message


def test_offline_env_set_after_import_is_honoured(monkeypatch, tmp_path):
    # huggingface_hub froze HF_HUB_OFFLINE at import; a later setenv must still keep us offline.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert models.hub_offline()
    with pytest.raises(ModelNotFoundError, match="offline mode is on"):
        load_pipeline("someone/not-cached-sd", cache_dir=tmp_path)
    assert constants.HF_HUB_OFFLINE is False  # restored after loading


def test_unreachable_hub_without_offline_flag_uses_the_cache_at_once(
    tiny_sd, monkeypatch, tmp_path
):
    # No HF_HUB_OFFLINE, and a connection to the hub fails (simulated: nothing leaves this
    # machine). huggingface_hub alone would retry for ~25 s; the loader must go cache-only at once.
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models.hub.socket, "create_connection", no_network)
    monkeypatch.setattr(models.hub, "_probe_cache", {})
    assert not models.hub_offline()

    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="hub is unreachable"):
        load_pipeline("someone/not-cached-sd", cache_dir=tmp_path / "empty")
    assert time.perf_counter() - start < 5

    pipe, folder = tiny_sd
    _fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-sd", folder)
    loaded = load_pipeline("tiny-org/tiny-sd", cache_dir=tmp_path / "hub")
    np.testing.assert_allclose(_generate(loaded), _generate(pipe), atol=1e-5)
    assert constants.HF_HUB_OFFLINE is False


def test_world_is_the_default():
    if not (models.world_pipeline_path() / "model_index.json").is_file():
        pytest.skip("the world's weights are not trained yet")
    from diffenvs.world.t2i import LATENT_CHANNELS

    pipe = load_pipeline()
    assert pipe.unet.config.in_channels == LATENT_CHANNELS
    assert load_clip().name == "world"


def test_world_pipeline_missing_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(models.pipeline, "world_pipeline_path", lambda: tmp_path / "t2i")
    with pytest.raises(ModelNotFoundError, match="embedded world"):
        load_pipeline()


# ------------------------------------------------------------------------------ CLIP


@pytest.mark.parametrize("prefix", ["", "local-dir:"])
def test_tiny_open_clip_round_trips_through_a_folder(tiny_clip, prefix):
    model, folder = tiny_clip
    clip = load_clip(f"{prefix}{folder}")
    assert isinstance(clip, ClipModel)
    images = _images()
    with torch.no_grad():
        got_img = clip.encode_images(images)
        want_img = torch.nn.functional.normalize(
            model.encode_image(clip.preprocess(images)), dim=-1
        )
        got_txt = clip.encode_texts([PROMPT, "one blue star"])
        tokens = clip.tokenizer([PROMPT, "one blue star"])
        want_txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    torch.testing.assert_close(got_img, want_img)
    torch.testing.assert_close(got_txt, want_txt)
    assert clip.score(images, [PROMPT, PROMPT]).shape == (2,)


def test_clip_preprocessing_crops_non_square_images(tiny_clip):
    _, folder = tiny_clip
    clip = load_clip(folder)
    wide = torch.rand(1, 3, 64, 96)
    assert clip.preprocess(wide).shape == (1, 3, clip.image_size, clip.image_size)
    # Shortest-side resize + centre crop: the centre 64×64 of a 64×96 image is what CLIP sees.
    centre = wide[..., :, 16:80]
    torch.testing.assert_close(clip.preprocess(wide), clip.preprocess(centre))


@pytest.mark.parametrize("spec", ["not-a-clip", "ViT-Nope-99/openai", "ViT-B-32/no-such-tag"])
def test_unknown_clip_spec(spec):
    with pytest.raises(ModelNotFoundError, match="Unknown"):
        load_clip(spec)


def test_missing_clip_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_clip(f"local-dir:{tmp_path / 'nope'}")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_clip(str(tmp_path / "nope"))


def test_clip_folder_without_config_or_weights(tiny_clip, tmp_path):
    with pytest.raises(InvalidModelError, match=r"open_clip_config\.json is missing"):
        load_clip(tmp_path)
    _, folder = tiny_clip
    shutil.copytree(folder, tmp_path / "noweights")
    (tmp_path / "noweights" / "open_clip_model.safetensors").unlink()
    with pytest.raises(InvalidModelError, match="no weights"):
        load_clip(tmp_path / "noweights")


def test_corrupt_clip_safetensors(tiny_clip, tmp_path):
    _, folder = tiny_clip
    shutil.copytree(folder, tmp_path / "clip")
    (tmp_path / "clip" / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidModelError, match="corrupt"):
        load_clip(tmp_path / "clip")


@pytest.mark.parametrize("spec", ["ViT-B-32/openai", "hf-hub:someone/not-cached-clip"])
def test_uncached_clip_offline_fails_fast(spec, tmp_path):
    from huggingface_hub import constants

    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        load_clip(spec, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    assert repr(spec) in str(info.value) and "hf download" in str(info.value)
    assert constants.HF_HUB_OFFLINE is True  # conftest's setting, left as it was


# ------------------------------------------------------------------------------ aesthetic MLP


def test_aesthetic_mlp_matches_the_laion_layout():
    keys = set(AestheticMLP().state_dict())
    assert keys == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_aesthetic_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    mlp = AestheticMLP(32).eval()
    file = tmp_path / f"aesthetic{suffix}"
    if suffix == ".safetensors":
        save_tensors(mlp.state_dict(), file)
    else:
        torch.save(mlp.state_dict(), file)
    loaded = load_aesthetic(file)
    emb = torch.randn(5, 32)
    assert isinstance(loaded, AestheticMLP) and loaded.embed_dim == 32
    torch.testing.assert_close(loaded(emb), mlp(emb))
    assert loaded(emb).shape == (5,)
    # Inputs are normalised, so the scale of an embedding does not matter.
    torch.testing.assert_close(loaded(emb * 3), loaded(emb))
    # The same through the reward-model entry point.
    torch.testing.assert_close(load_reward_network(f"aesthetic:{file}")(emb), mlp(emb))


def test_aesthetic_linear_v1_and_lightning_nesting(tmp_path):
    head = AestheticLinear(16)
    torch.save({"state_dict": head.state_dict(), "epoch": 3}, tmp_path / "v1.pt")
    loaded = load_aesthetic(tmp_path / "v1.pt")
    assert isinstance(loaded, AestheticLinear)
    emb = torch.randn(3, 16)
    torch.testing.assert_close(loaded(emb), head(emb))


def test_aesthetic_refuses_pickled_objects(tmp_path):
    torch.save(AestheticMLP(8), tmp_path / "module.pth")  # a whole pickled module, not a state dict
    with pytest.raises(InvalidModelError, match="weights_only"):
        load_aesthetic(tmp_path / "module.pth")


def test_aesthetic_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="No weights file"):
        load_aesthetic(tmp_path / "missing.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(InvalidModelError, match="corrupt"):
        load_aesthetic(tmp_path / "corrupt.safetensors")
    save_tensors({"foo.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(InvalidModelError, match="not a LAION aesthetic predictor"):
        load_aesthetic(tmp_path / "other.safetensors")
    state = AestheticMLP(32).state_dict()
    state["layers.2.weight"] = torch.zeros(64, 1024)
    del state["layers.7.bias"]
    save_tensors(state, tmp_path / "bad.safetensors")
    with pytest.raises(InvalidModelError, match=r"missing keys \['layers.7.bias'\].*wrong shapes"):
        load_aesthetic(tmp_path / "bad.safetensors")


def test_aesthetic_from_uncached_hub_file_offline(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"hf download someone/aesthetic sac\.pth"):
        load_aesthetic("hf-hub:someone/aesthetic/sac.pth", cache_dir=tmp_path)


# ------------------------------------------------------------------------------ PickScore & co


@pytest.fixture(scope="module")
def tiny_pickscore(tmp_path_factory: pytest.TempPathFactory):
    from transformers import CLIPConfig, CLIPModel

    from diffenvs.world.tokenizer import build_world_tokenizer

    folder = tmp_path_factory.mktemp("tiny_pickscore")
    tokenizer = build_world_tokenizer(folder / "tok")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "model" / "preprocessor_config.json").write_text(
        '{"crop_size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.5, 0.5], '
        '"image_std": [0.25, 0.25, 0.25]}'
    )
    return model, folder / "model"


def test_tiny_pickscore_round_trips(tiny_pickscore):
    model, folder = tiny_pickscore
    scorer = load_pickscore(folder)
    images = _images(2, 32)
    with torch.no_grad():
        got = scorer.score(images, [PROMPT, "one blue star"])
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        tokens = scorer.tokenizer([PROMPT, "one blue star"], padding=True, return_tensors="pt")
        img = models._features(model.get_image_features(pixel_values=x))
        txt = models._features(model.get_text_features(**tokens))
        img, txt = (torch.nn.functional.normalize(v, dim=-1) for v in (img, txt))
        want = model.logit_scale.exp() * (img * txt).sum(-1)
    torch.testing.assert_close(got, want)


def test_pickscore_hub_default_offline_fails_clearly(tmp_path):
    with pytest.raises(ModelNotFoundError, match="PickScore_v1"):
        load_reward_network("pickscore", cache_dir=tmp_path)


def test_reward_model_names(tmp_path):
    with pytest.raises(NotImplementedError, match="image-reward"):
        load_reward_network("imagereward")
    with pytest.raises(ModelNotFoundError, match="Unknown reward model"):
        load_reward_network("vibes")
    with pytest.raises(ModelNotFoundError, match="aesthetic:PATH"):
        load_reward_network("aesthetic")
    with pytest.raises(ModelNotFoundError, match="Oracle weights not found"):
        load_reward_network(f"oracle:{tmp_path / 'missing.safetensors'}")
