"""Tiny random-weight PixArt (Alpha, Sigma) and SANA pipelines of the real diffusers classes, built from configs
offline, for tests. Weights come from `torch.manual_seed(seed)`, so every build is identical.

The schedulers are the ones the real checkpoints ship: DPM-Solver++ (epsilon, linear betas) for PixArt, and
DPM-Solver++ on flow sigmas (shift 3, flow prediction) for SANA. Transformer `sample_size`s are ones the stock
pipelines' resolution binning accepts, so the stock calls run with their defaults.
"""

import torch
from diffusers import DPMSolverMultistepScheduler

from . import _t5_encoder, _vae, t5_tokenizer

GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # Gemma's ids 0..4


def gemma_tokenizer():
    """Gemma's tokenizer class (BPE with byte fallback, spaces as "\u2581", <bos> first; pad 0, eos 1, bos 2, unk 3)
    over a small vocabulary built offline: every printable ASCII character and the 256 byte-fallback tokens, so any
    text tokenizes, one token per character. The real Gemma 2 vocabulary (256k pieces) cannot be built without
    downloading it; this is the closest tokenizer that can."""
    from transformers import GemmaTokenizer

    pieces = list(GEMMA_SPECIALS) + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"]
    pieces += [chr(c) for c in range(33, 127)]
    return GemmaTokenizer(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[], add_bos_token=True)


def _gemma2_encoder(width, vocab_size):
    from transformers import Gemma2Config, Gemma2Model

    return Gemma2Model(Gemma2Config(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                    max_position_embeddings=2048, attn_implementation="eager", pad_token_id=0,
                                    eos_token_id=1, bos_token_id=2)).eval()


def tiny_pixart_pipeline(sigma=True, seed=0, dtype=torch.float32):
    """PixArt-Sigma-shaped (`sigma=True`, T5 prompts of 300 tokens) or PixArt-Alpha-shaped (120 tokens, and the
    1024-model's resolution / aspect-ratio micro-conditions: `sample_size` 128) pipeline: a DiT with patch 2 whose
    output carries learned variance (8 channels for 4 latent ones). 32 x 32 pixels -> 4 x 16 x 16 latents."""
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=8,
                                           num_layers=1, sample_size=32 if sigma else 128, patch_size=2,
                                           cross_attention_dim=24, caption_channels=32)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                            prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++")
    cls = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = cls(tokenizer=t5_tokenizer(), text_encoder=_t5_encoder(32), vae=_vae(), transformer=transformer,
               scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_sana_pipeline(seed=0, dtype=torch.float32):
    """SANA-shaped pipeline: a linear-attention DiT on 32-channel DC-AE latents (here downsampling 2x, the real one
    32x), Gemma 2 prompt embeddings with SANA's complex human instruction, DPM-Solver++ on flow sigmas. 32 x 32
    pixels -> 32 x 16 x 16 latents."""
    from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(seed)
    tokenizer = gemma_tokenizer()
    transformer = SanaTransformer2DModel(in_channels=32, out_channels=32, num_attention_heads=2, attention_head_dim=8,
                                         num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                         cross_attention_dim=16, caption_channels=32, sample_size=16, patch_size=1)
    vae = AutoencoderDC(in_channels=3, latent_channels=32, attention_head_dim=2,
                        encoder_block_types=("ResBlock", "EfficientViTBlock"),
                        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 32),
                        decoder_block_out_channels=(8, 32), encoder_qkv_multiscales=((), (5,)),
                        decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
                        decoder_layers_per_block=(1, 1), downsample_block_type="conv",
                        upsample_block_type="interpolate", scaling_factor=0.41407)
    scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction",
                                            solver_order=2, algorithm_type="dpmsolver++")
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=_gemma2_encoder(32, len(tokenizer)), vae=vae,
                        transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
