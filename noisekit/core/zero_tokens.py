"""SD3 without T5: the stock pipeline appends `max_sequence_length` (256) zero tokens to the CLIP tokens.

They stay identical through every joint block (text tokens carry no position embedding), so attending to all of
them equals attending to one whose logit is raised by log(256). Running one instead of 256 gives the stock
pipeline's output (within float rounding, about 1e-6; tests/test_shapes_flow.py) for a fraction of the context
tokens: sampling the shapes world's small MMDiT is 4.3x faster (`benchmarks/bench_sampler.py --model shapes-flow`).
The gain shrinks as image tokens outnumber the 288 context tokens; it was not measured at SD3's 1024 px.
The processor is set around each denoiser call, so the user's own stock calls keep the stock attention.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

ZERO_TOKENS = 256  # StableDiffusion3Pipeline's default `max_sequence_length`


class RepeatedTokenAttention:
    """SD3's joint attention (as `JointAttnProcessor2_0`) where the last context token stands for `repeats`
    identical tokens."""

    def __init__(self, repeats):
        self.log_repeats = math.log(repeats)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        batch, image_tokens = hidden_states.shape[:2]

        def heads(x, norm):
            x = x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
            return norm(x) if norm is not None else x

        query = torch.cat([heads(attn.to_q(hidden_states), attn.norm_q),
                           heads(attn.add_q_proj(encoder_hidden_states), attn.norm_added_q)], dim=2)
        key = torch.cat([heads(attn.to_k(hidden_states), attn.norm_k),
                         heads(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)], dim=2)
        value = torch.cat([heads(attn.to_v(hidden_states), None),
                           heads(attn.add_v_proj(encoder_hidden_states), None)], dim=2)
        bias = torch.zeros(1, key.shape[2], dtype=query.dtype, device=query.device)
        bias[:, -1] = self.log_repeats
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        out = out.transpose(1, 2).reshape(batch, -1, query.shape[1] * query.shape[-1]).to(query.dtype)
        image, context = out[:, :image_tokens], out[:, image_tokens:]
        if not attn.context_pre_only:
            context = attn.to_add_out(context)
        return attn.to_out[1](attn.to_out[0](image)), context


def expand_zero_token(embeds, repeats=ZERO_TOKENS):
    """Compact prompt embeddings (the last token standing for `repeats` zero tokens) -> the stock layout."""
    return torch.cat([embeds[:, :-1], embeds[:, -1:].expand(-1, repeats, -1)], dim=1)


@contextlib.contextmanager
def repeated_last_token(transformer, repeats=ZERO_TOKENS):
    """Run `transformer` with its last context token weighted as `repeats`; its own processors come back after."""
    processors = transformer.attn_processors
    transformer.set_attn_processor(RepeatedTokenAttention(repeats))
    try:
        yield
    finally:
        transformer.set_attn_processor(processors)


def uses_stock_joint_attention(transformer):
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    return all(type(p) is JointAttnProcessor2_0 for p in transformer.attn_processors.values())
