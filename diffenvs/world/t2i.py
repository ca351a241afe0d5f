"""Architectures of the world's latent text-to-image model, all standard diffusers/transformers parts.

The saved model is an ordinary Stable-Diffusion-layout folder (``model_index.json``, ``vae/``,
``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), so
``StableDiffusionPipeline.from_pretrained(path)`` loads it like any SD checkpoint.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from diffenvs.world.render import IMAGE_SIZE
from diffenvs.world.tokenizer import CONTEXT_LENGTH

LATENT_CHANNELS = 8
LATENT_SIZE = IMAGE_SIZE // 4
TEXT_WIDTH = 128


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=TEXT_WIDTH * 4,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=CONTEXT_LENGTH,
        projection_dim=TEXT_WIDTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return CLIPTextModel(config)


def make_unet(arch: str = "v1") -> UNet2DConditionModel:
    """The world's UNet. 'v2' adds a pooled-text embedding to the time embedding (a standard
    ``addition_embed_type="text"`` UNet option), so every ResNet block sees the prompt."""
    if arch not in ("v1", "v2"):
        raise ValueError(f"Unknown UNet architecture {arch!r}; use 'v1' or 'v2'.")
    extra = (
        {"addition_embed_type": "text", "addition_embed_type_num_heads": 4} if arch == "v2" else {}
    )
    return UNet2DConditionModel(
        **extra,
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


SCHEDULES = ("sd", "zero-snr")


def make_scheduler(schedule: str = "sd") -> DDIMScheduler:
    """The world's noise schedule. ``"sd"``: SD's scaled-linear betas, epsilon prediction, leading
    timesteps (v1 and the first v2 legs). ``"zero-snr"``: the same betas rescaled to zero terminal
    SNR, v-prediction and trailing timesteps (Lin, Liu, Li & Yang, "Common Diffusion Noise
    Schedules and Sample Steps are Flawed"). Under ``"sd"`` the first sampling step (t = 951 at 20
    steps) still carries sqrt(alpha_bar) = 0.09 of the image, so a small UNet learns to take the
    layout (where the object is) from that leak in x_T instead of from the prompt; at sampling x_T
    is pure noise and position follows the noise, not the words (measured on the v2 legs: the
    same x_T gave the same position for 'left', 'middle' and 'right' in 12 of 12 scenes)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; use one of {list(SCHEDULES)}.")
    zero_snr = schedule == "zero-snr"
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # ignored by trailing spacing; StableDiffusionPipeline resets it to 1
        prediction_type="v_prediction" if zero_snr else "epsilon",
        rescale_betas_zero_snr=zero_snr,
        timestep_spacing="trailing" if zero_snr else "leading",
    )
