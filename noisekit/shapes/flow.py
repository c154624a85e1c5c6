"""The shapes world's rectified-flow twin, `shapes-flow`: an SD3-style MMDiT saved as a stock
`StableDiffusion3Pipeline` folder.

It reuses `shapes-t2i`'s VAE, CLIP text encoder and tokenizer. The folder links their weight files instead of
copying them (the assets budget), so both CLIP slots of SD3 hold that encoder with an identity projection, and
the T5 slot is empty: SD3's pipeline then feeds `max_sequence_length` (256) zero tokens after the 64 CLIP tokens.
"""

import json
import os

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import load_file, save_file

from ..core.zero_tokens import ZERO_TOKENS, RepeatedTokenAttention
from .models import MAX_TOKENS, TEXT_WIDTH

FLOW_WIDTH = 128
FLOW_LAYERS = 6
SHIFT = 1.0  # 64 x 64 images need no resolution shift


def make_flow_transformer():
    """An MMDiT over 4 x 16 x 16 latents in 2 x 2 patches (64 image tokens), 6 joint blocks 128 wide."""
    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=FLOW_LAYERS,
        attention_head_dim=32,
        num_attention_heads=FLOW_WIDTH // 32,
        joint_attention_dim=2 * TEXT_WIDTH,  # the two CLIP slots, concatenated
        caption_projection_dim=FLOW_WIDTH,
        pooled_projection_dim=2 * TEXT_WIDTH,
        pos_embed_max_size=16,
        qk_norm="rms_norm",
    )


def flow_scheduler():
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SHIFT)


def text_encoder_with_projection(text_encoder):
    """SD3's CLIP slot (`CLIPTextModelWithProjection`) holding `text_encoder`'s weights and an identity projection,
    so its pooled embedding is the encoder's own."""
    from transformers import CLIPTextModelWithProjection

    projected = CLIPTextModelWithProjection(text_encoder.config)
    projected.text_model.load_state_dict(text_encoder.state_dict())
    with torch.no_grad():
        projected.text_projection.weight.copy_(torch.eye(TEXT_WIDTH))
    return projected.eval()


def flow_pipeline(*, transformer, source_pipeline):
    """A `StableDiffusion3Pipeline` of `transformer` and the components of `source_pipeline` (`shapes-t2i`)."""
    vae = source_pipeline.vae
    vae.register_to_config(shift_factor=0.0)  # SD3 decodes with latents / scale + shift
    text_encoder = text_encoder_with_projection(source_pipeline.text_encoder)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=flow_scheduler(), vae=vae,
        text_encoder=text_encoder, tokenizer=source_pipeline.tokenizer,
        text_encoder_2=text_encoder, tokenizer_2=source_pipeline.tokenizer,
        text_encoder_3=None, tokenizer_3=None)


def encode_captions(pipe, captions, *, batch_size=1000):
    """`(prompt_embeds, pooled)` of `captions` as the pipeline computes them, but with one zero token standing for
    the pipeline's 256 (see `RepeatedTokenAttention`): `(N, MAX_TOKENS + 1, 128)` and `(N, 128)`."""
    embeds, pooled = [], []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            e, _, p, _ = pipe.encode_prompt(prompt=captions[start : start + batch_size], prompt_2=None, prompt_3=None,
                                            do_classifier_free_guidance=False, max_sequence_length=1)
            embeds.append(e)
            pooled.append(p)
    return torch.cat(embeds), torch.cat(pooled)


def link_shared_weights(folder, *, source):
    """Replace the VAE, text encoder and tokenizer files that `folder` (a saved `shapes-flow`) shares with `source`
    (`shapes-t2i`) by relative links to them, after checking that they hold the same tensors."""
    folder, source = os.path.abspath(folder), os.path.abspath(source)

    def link(path, target):
        os.remove(path)
        os.symlink(os.path.relpath(target, os.path.dirname(path)), path)

    vae_weights = os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors")
    _check_same(load_file(vae_weights), os.path.join(source, "vae", "diffusion_pytorch_model.safetensors"))
    link(vae_weights, os.path.join(source, "vae", "diffusion_pytorch_model.safetensors"))
    shared_encoder = os.path.join(source, "text_encoder", "model.safetensors")
    for slot in ("text_encoder", "text_encoder_2"):
        weights = os.path.join(folder, slot, "model.safetensors")
        state = load_file(weights)
        projection = {"text_projection.weight": state.pop("text_projection.weight")}
        state = {name.removeprefix("text_model."): tensor for name, tensor in state.items()}
        _check_same(state, shared_encoder)
        save_file(projection, os.path.join(folder, slot, "text_projection.safetensors"), metadata={"format": "pt"})
        os.remove(weights)
        os.symlink(os.path.relpath(shared_encoder, os.path.join(folder, slot)),
                   os.path.join(folder, slot, "text_model.safetensors"))
        weight_map = {name: "text_model.safetensors" for name in state} | {
            "text_projection.weight": "text_projection.safetensors"}
        with open(os.path.join(folder, slot, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    for slot in ("tokenizer", "tokenizer_2"):
        for name in os.listdir(os.path.join(folder, slot)):
            shared = os.path.join(source, "tokenizer", name)
            if name != "tokenizer_config.json" and os.path.exists(shared):
                link(os.path.join(folder, slot, name), shared)


def _check_same(state, path):
    shared = load_file(path)
    if state.keys() != shared.keys() or any(not torch.equal(state[k], shared[k]) for k in state):
        raise ValueError(f"{path} does not hold the weights being saved; cannot link to it.")


__all__ = ["MAX_TOKENS", "RepeatedTokenAttention", "ZERO_TOKENS", "encode_captions", "flow_pipeline",
           "link_shared_weights", "make_flow_transformer"]
