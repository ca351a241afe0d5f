"""Tiny randomly initialised SDXL, SD3 and FLUX pipelines for the flow-family tests.

Every model is a few layers of width 8-32 on 8 x 8 latents, so a whole episode runs in well under a
second on one CPU thread. Nothing is downloaded: the CLIP tokenizers are the world's tokenizer
(:mod:`diffenvs.world.tokenizer`) and the T5 tokenizer is a tiny unigram tokenizer built here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

from diffenvs.world.tokenizer import CONTEXT_LENGTH, build_world_tokenizer

T5_LENGTH = 12
"""``max_sequence_length`` the tests pass to the env and to the pipelines (the T5 padding)."""


def clip_tokenizer():
    with tempfile.TemporaryDirectory() as tmp:
        return build_world_tokenizer(tmp)


def t5_tokenizer():
    """A T5TokenizerFast over a tiny unigram vocabulary (the world's words, letters, specials)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    from diffenvs.world.attributes import world_words

    letters = "abcdefghijklmnopqrstuvwxyz0123456789,.-"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in sorted(set(world_words()))]
    pieces += [("▁", -3.0)] + [(c, -5.0) for c in letters]
    tok = Tokenizer(Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def _clip_config(tokenizer, hidden: int, projection: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        projection_dim=projection or hidden,
    )


def _t5(tokenizer, width: int) -> T5EncoderModel:
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=8,
            d_ff=2 * width,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def _vae(shift: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=1.5 if shift else 0.18215,
        shift_factor=0.1 if shift else None,
    )


def tiny_sd3(seed: int = 0, with_t5: bool = True):
    """A StableDiffusion3Pipeline: SD3Transformer2DModel, two CLIPs with projection, optional T5."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(seed)
    tok = clip_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=8,
    )
    t5_tok = t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(shift=True),
        text_encoder=CLIPTextModelWithProjection(_clip_config(tok, 16)),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tok, 16)),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5(t5_tok, 32) if with_t5 else None,
        tokenizer_3=t5_tok if with_t5 else None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux(seed: int = 0, guidance_embeds: bool = True):
    """A FluxPipeline: FluxTransformer2DModel (packed 2 x 2 latents), a CLIP and a T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tok = clip_tokenizer()
    t5_tok = t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_image_seq_len=16,
        max_image_seq_len=256,
        base_shift=0.5,
        max_shift=1.15,
    )
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_vae(shift=True),
        text_encoder=CLIPTextModel(_clip_config(tok, 32)),
        tokenizer=tok,
        text_encoder_2=_t5(t5_tok, 32),
        tokenizer_2=t5_tok,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl(seed: int = 0):
    """A StableDiffusionXLPipeline (two CLIPs, pooled text embeddings and size conditioning)."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tok = clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(shift=False),
        text_encoder=CLIPTextModel(_clip_config(tok, 16)),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tok, 16)),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def saved(pipe, folder: Path) -> Path:
    """Save ``pipe`` to ``folder`` (the loaders' input) and return it."""
    pipe.save_pretrained(folder)
    return folder
