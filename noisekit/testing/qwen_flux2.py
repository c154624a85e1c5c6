"""Tiny random-weight Qwen-Image and FLUX.2 pipelines of the real diffusers and transformers classes, built from
configs with nothing downloaded (for tests and benchmarks; `noisekit.testing` holds the SD, SDXL, SD3 and FLUX.1
ones).

The real tokenizers ship as files on the Hub; the closest that can be built offline is a byte-level BPE with no
merges (every byte one token) and the real special tokens, wrapped in the real tokenizer classes. Prompts then
tokenize to more ids than with the real vocabulary, and Qwen-Image's template drop (its first 34 ids, the real
system prompt's length) cuts a different span, which changes numbers but no code path.
"""

import torch

QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_level_vocab(special_tokens):
    """The 256 byte-level symbols, then `special_tokens`, as a BPE vocabulary."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {symbol: index for index, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    for token in special_tokens:
        vocab[token] = len(vocab)
    return vocab


def qwen_tokenizer():
    """transformers' `Qwen2Tokenizer` (Qwen's pre-tokenizer and byte-level BPE) over the byte vocabulary, with
    Qwen's chat tokens; pad and end of text are `<|endoftext|>` as in the real one."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(vocab=byte_level_vocab(QWEN_SPECIAL), merges=[],
                          additional_special_tokens=list(QWEN_SPECIAL[1:]))


def _qwen25_vl_encoder(vocab_size, width):
    """A tiny `Qwen2_5_VLForConditionalGeneration` (2 text layers, 1 vision block; multimodal RoPE sections)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=vocab_size, bos_token_id=vocab_size - 3,
                         eos_token_id=vocab_size - 1, rope_theta=1000000.0,
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=width),
        vocab_size=vocab_size, vision_start_token_id=vocab_size, vision_end_token_id=vocab_size + 1,
        image_token_id=vocab_size + 2, video_token_id=vocab_size + 3)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_qwen_image_pipeline(seed=0, dtype=torch.float32):
    """Qwen-Image-shaped pipeline: MMDiT on 4 latent channels packed 2x2 into 16, a Qwen2.5-VL text encoder of
    width 16, the video VAE (spatial factor 2) with non-trivial latents mean/std, and Qwen-Image's scheduler config
    (dynamic exponential shift, shift_terminal 0.02). 32 x 32 pixels -> 4 x 16 x 16 latents, 64 tokens."""
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)

    torch.manual_seed(seed)
    tokenizer = qwen_tokenizer()
    text_encoder = _qwen25_vl_encoder(len(tokenizer), 16)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=1,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                              axes_dims_rope=(8, 4, 4))
    stats = torch.Generator().manual_seed(seed + 1)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
                                 latents_mean=torch.randn(4, generator=stats).tolist(),
                                 latents_std=(0.5 + torch.rand(4, generator=stats)).tolist())
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192,
                                                max_shift=0.9, shift=1.0, shift_terminal=0.02,
                                                use_dynamic_shifting=True, time_shift_type="exponential")
    pipe = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                             transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


# FLUX.2 ----------------------------------------------------------------------------------------------------------
# Qwen3's chat template, reduced to what FLUX.2 klein renders: one user turn, the generation prompt, and the empty
# thinking block that `enable_thinking=False` adds.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}")


def qwen3_tokenizer():
    """`Qwen2Tokenizer` (the class FLUX.2 klein loads as `Qwen2TokenizerFast`) over the byte vocabulary, with
    Qwen3's chat and thinking tokens and the reduced chat template above."""
    from transformers import Qwen2Tokenizer

    special = QWEN_SPECIAL + ("<think>", "</think>")
    return Qwen2Tokenizer(vocab=byte_level_vocab(special), merges=[], additional_special_tokens=list(special[1:]),
                          chat_template=QWEN3_CHAT_TEMPLATE)


def _flux2_vae():
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                             layers_per_block=1, sample_size=32, use_quant_conv=False, use_post_quant_conv=False)
    stats = torch.Generator().manual_seed(2)  # batch-norm statistics away from the identity, so decoding tests them
    vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape, generator=stats))
    vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.running_var.shape, generator=stats))
    return vae


def _flux2_transformer(text_width, guidance_embeds):
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=3 * text_width,
                                   timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4),
                                   guidance_embeds=guidance_embeds)


def _flux2_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")


def tiny_flux2_klein_pipeline(is_distilled=False, seed=0, dtype=torch.float32):
    """FLUX.2-klein-shaped pipeline: a Qwen3 text encoder of width 16 with the 27 layers whose hidden states
    (9, 18, 27) klein stacks, the FLUX.2 transformer without guidance embedding (true CFG unless `is_distilled`),
    the FLUX.2 VAE (4 latent channels, patchified 2x2 into 16, batch-normalised). 32 x 32 pixels -> 16 x 8 x 8
    canonical latents, 64 tokens; prompts are padded to 512 tokens, as the stock pipeline pads them."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = qwen3_tokenizer()
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=27, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=512, bos_token_id=len(tokenizer) - 5,
        eos_token_id=len(tokenizer) - 3, pad_token_id=len(tokenizer) - 5)).eval()
    pipe = Flux2KleinPipeline(scheduler=_flux2_scheduler(), vae=_flux2_vae(), text_encoder=text_encoder,
                              tokenizer=tokenizer, transformer=_flux2_transformer(16, False),
                              is_distilled=is_distilled)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


MISTRAL_SPECIAL = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                   "[IMG]", "[IMG_BREAK]", "[IMG_END]")
# Mistral Small 3's chat template, reduced to what FLUX.2 renders: a system turn and a user turn of text parts.
MISTRAL3_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}{%- for part in message['content'] %}"
    "{%- if message['role'] == 'system' %}{{ '[SYSTEM_PROMPT]' + part['text'] + '[/SYSTEM_PROMPT]' }}"
    "{%- else %}{{ '[INST]' + part['text'] + '[/INST]' }}{%- endif %}{%- endfor %}{%- endfor %}")


def pixtral_processor():
    """The `PixtralProcessor` FLUX.2 loads as its tokenizer: a byte-level BPE (Mistral's Tekken is one) with
    Mistral's control and image tokens first, the default Pixtral image processor, the reduced template above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(MISTRAL_SPECIAL)}
    vocab.update({symbol: index + len(MISTRAL_SPECIAL) for symbol, index in byte_level_vocab(()).items()})
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", additional_special_tokens=list(MISTRAL_SPECIAL[4:]))
    return PixtralProcessor(image_processor=PixtralImageProcessor(), tokenizer=tokenizer,
                            chat_template=MISTRAL3_CHAT_TEMPLATE, patch_size=16, spatial_merge_size=2)


def tiny_flux2_pipeline(seed=0, dtype=torch.float32):
    """FLUX.2-dev-shaped pipeline: a `Mistral3ForConditionalGeneration` text encoder of width 16 with the 30 text
    layers whose hidden states (10, 20, 30) FLUX.2 stacks (and a one-block Pixtral vision tower), the FLUX.2
    transformer with guidance embedding, the FLUX.2 VAE. 32 x 32 pixels -> 16 x 8 x 8 canonical latents."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(seed)
    processor = pixtral_processor()
    vocab_size = len(processor.tokenizer)
    config = Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=30, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=3),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=8, image_size=32, patch_size=16),
        image_token_index=MISTRAL_SPECIAL.index("[IMG]"), spatial_merge_size=2, vision_feature_layer=-1)
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    pipe = Flux2Pipeline(scheduler=_flux2_scheduler(), vae=_flux2_vae(), text_encoder=text_encoder,
                         tokenizer=processor, transformer=_flux2_transformer(16, True))
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
