"""Architecture of the world's flow-matching text-to-image model: an SD3-layout pipeline.

The saved model is an ordinary ``StableDiffusion3Pipeline`` folder (``model_index.json``,
``transformer/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``, ``tokenizer/``,
``tokenizer_2/``, ``scheduler/``; no T5), so ``StableDiffusion3Pipeline.from_pretrained(path)``
and :func:`diffenvs.models.load_pipeline` load it like any SD3 checkpoint.

* ``SD3Transformer2DModel`` (MM-DiT, Esser et al., *Scaling Rectified Flow Transformers for
  High-Resolution Image Synthesis*): patch 2 on the VAE's 16×16 latents = 64 image tokens.
* One small ``CLIPTextModelWithProjection`` trained jointly with the transformer and saved as both
  ``text_encoder`` and ``text_encoder_2``: the pipeline concatenates the two encoders' penultimate
  hidden states (and their pooled projections), so two copies of one encoder give the transformer
  the same information as one, at half the text compute of two separate encoders.
* Without T5 the pipeline appends ``max_sequence_length`` (default 256) all-zero rows to the
  context. They enter the transformer as identical tokens with no positional embedding, so they stay
  identical through every block; :func:`use_t5_sink` lets training carry them as one token whose
  attention logit is raised by log 256, which is exactly the same computation at a third of the cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from diffenvs.world.tokenizer import CONTEXT_LENGTH

LATENT_CHANNELS = 8
"""Channels of the shared world-v2 VAE's latents."""
LATENT_SIZE = 16
TEXT_WIDTH = 64
T5_SLOTS = 256
"""The pipeline's default ``max_sequence_length``: zero rows it appends when T5 is absent."""


def make_flow_text_encoder(
    vocab_size: int, bos_id: int, eos_id: int
) -> CLIPTextModelWithProjection:
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
    return CLIPTextModelWithProjection(config)


def make_transformer(
    width: int = 128,
    layers: int = 3,
    heads: int = 4,
    text_width: int = TEXT_WIDTH,
    latent_channels: int = LATENT_CHANNELS,
) -> SD3Transformer2DModel:
    """The MM-DiT: ``layers`` joint blocks of ``width`` channels over 2×2 latent patches."""
    if width % heads:
        raise ValueError(f"width ({width}) must be a multiple of heads ({heads}).")
    return SD3Transformer2DModel(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=layers,
        attention_head_dim=width // heads,
        num_attention_heads=heads,
        joint_attention_dim=2 * text_width,  # the two CLIP encoders' hidden states, concatenated
        caption_projection_dim=width,
        pooled_projection_dim=2 * text_width,
        pos_embed_max_size=LATENT_SIZE,
    )


def make_flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Rectified-flow Euler sampler; no timestep shift (64×64 images need no extra noise)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def encode_prompts(text_encoder, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, pooled) as ``StableDiffusion3Pipeline.encode_prompt`` builds them from two copies of
    ``text_encoder`` without T5, minus the T5 zero rows: penultimate hidden states and the pooled
    projection, each concatenated with itself."""
    out = text_encoder(input_ids, output_hidden_states=True)
    hidden = out.hidden_states[-2]
    return torch.cat([hidden, hidden], dim=-1), torch.cat([out.text_embeds, out.text_embeds], -1)


class SinkJointAttnProcessor:
    """SD3's joint attention (image tokens, then context tokens) where the last context token stands
    for ``copies`` identical tokens: its key's logit gets + log(copies), which is what softmax gives
    ``copies`` equal keys with equal values. Used in training only; never saved."""

    def __init__(self, copies: int) -> None:
        self.log_copies = math.log(copies)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **_):
        b, n_img = hidden_states.shape[0], hidden_states.shape[1]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q, k, v = (heads(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        cq, ck, cv = (
            heads(f(encoder_hidden_states))
            for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if attn.norm_added_q is not None:
            cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((q, cq), (k, ck), (v, cv)))
        bias = torch.zeros(1, 1, 1, k.shape[2], dtype=q.dtype, device=q.device)
        bias[..., -1] = self.log_copies
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[3]).to(q.dtype)
        img, ctx = out[:, :n_img], out[:, n_img:]
        if not attn.context_pre_only:
            ctx = attn.to_add_out(ctx)
        return attn.to_out[1](attn.to_out[0](img)), ctx


def use_t5_sink(transformer: SD3Transformer2DModel, copies: int = T5_SLOTS) -> None:
    """Let ``transformer`` take ONE zero row where the pipeline appends ``copies`` (see module doc)."""
    transformer.set_attn_processor(SinkJointAttnProcessor(copies))


def t5_free_fast_path(pipe, copies: int = T5_SLOTS) -> dict[str, int]:
    """Make a T5-less SD3 pipeline carry its ``copies`` zero T5 rows as one token (exactly the same
    images, about 4× faster on the flow world); returns the ``max_sequence_length=1`` keyword to
    pass to ``pipe(...)`` or to ``DiffusionDenoise-v0``. Once applied, always pass it: any other
    ``max_sequence_length`` would weight every zero row ``copies`` times.

    Raises:
        ValueError: the pipeline has a T5 encoder (its rows are not all zero) or SD3.5's
            image-only attention layers (which this processor does not implement).
    """
    if getattr(pipe, "text_encoder_3", None) is not None:
        raise ValueError(
            "t5_free_fast_path needs an SD3 pipeline without T5 (text_encoder_3=None): with T5 "
            "the context rows differ, so they cannot be merged. Call the pipeline as it is."
        )
    if pipe.transformer.config.get("dual_attention_layers"):
        raise ValueError(
            "t5_free_fast_path supports SD3 transformers without dual_attention_layers (SD3.5's "
            "image-only attention); call the pipeline as it is."
        )
    use_t5_sink(pipe.transformer, copies)
    return {"max_sequence_length": 1}


def with_t5_sink(context: torch.Tensor) -> torch.Tensor:
    """Append the one zero row that :func:`use_t5_sink` expands to the pipeline's T5 padding."""
    return torch.cat([context, context.new_zeros(context.shape[0], 1, context.shape[2])], dim=1)


def make_pipeline(vae, text_encoder, tokenizer, transformer):
    """The SD3-layout pipeline: ``text_encoder`` serves as both CLIP encoders, no T5.

    The VAE gets ``shift_factor=0`` (the SD3 pipeline decodes ``z / scaling_factor +
    shift_factor``, and the world's VAE has no shift)."""
    from diffusers import StableDiffusion3Pipeline

    if vae.config.shift_factor is None:
        vae.register_to_config(shift_factor=0.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=make_flow_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
