"""Tiny random-weight pipelines of the real diffusers classes, for tests and benchmarks.

SD-1.x-shaped (epsilon), SD-2-shaped (v-prediction, linear attention projections) and SDXL-shaped (two text
encoders, pooled embeddings and size time ids), each with the real CLIP BPE tokenizer. Weights come from
`torch.manual_seed(seed)`, so every build is identical.
"""

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from ..tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer

SD_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                   set_alpha_to_one=False, steps_offset=1)


def _text_config(width, projection_dim=None, hidden_act="quick_gelu"):
    return CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                          projection_dim=projection_dim or width, hidden_act=hidden_act,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def _vae():
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                         layers_per_block=1, sample_size=16)


def tiny_sd_pipeline(prediction_type="epsilon", seed=0, dtype=torch.float32):
    """SD 1.x-shaped (`prediction_type="epsilon"`) or SD 2-shaped (`"v_prediction"`) pipeline, 16 x 16 pixels,
    4 x 8 x 8 latents."""
    torch.manual_seed(seed)
    sd2 = prediction_type == "v_prediction"
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4) if sd2 else 4, use_linear_projection=sd2, norm_num_groups=8)
    text_encoder = CLIPTextModel(_text_config(32, hidden_act="gelu" if sd2 else "quick_gelu"))
    scheduler = DDIMScheduler(**SD_SCHEDULE, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_sdxl_pipeline(seed=0, dtype=torch.float32):
    """SDXL-shaped pipeline: two text encoders (the second with a projection), `text_time` added conditioning."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=8)
    text_encoder = CLIPTextModel(_text_config(32, hidden_act="gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(32, projection_dim=32, hidden_act="gelu"))
    scheduler = DDIMScheduler(**SD_SCHEDULE)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
                                     scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def sdxl_architecture_pipeline(seed=0):
    """A full-size SDXL-architecture pipeline with random weights (2.6B-parameter UNet, CLIP-L + bigG text encoders,
    the SDXL VAE), built from configs: timings of real SDXL shapes with nothing downloaded. Float32 on CPU; move
    it with `.to(device, dtype)`."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=1024, scaling_factor=0.13025, force_upcast=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu",
                                                projection_dim=768, bos_token_id=49406, eos_token_id=49407,
                                                pad_token_id=49407))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
        num_attention_heads=20, hidden_act="gelu", projection_dim=1280, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407))
    scheduler = DDIMScheduler(**SD_SCHEDULE, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
                                     scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Flow-matching families ----------------------------------------------------------------------------------------
T5_WORDS = ("a", "an", "the", "of", "on", "in", "with", "and", "red", "blue", "green", "circle", "square", "cat",
            "dog", "photo", "small", "large")


def t5_tokenizer(model_max_length=512):
    """T5's tokenizer class (a SentencePiece-style Unigram model with T5's special ids: pad 0, </s> 1, unk 2) over a
    small vocabulary built offline: a few whole words and every lowercase letter and digit, so any ASCII prompt
    tokenizes (unknown characters become <unk>). The real T5 vocabulary ships as a SentencePiece model that cannot
    be built without downloading it; this is the closest tokenizer that can."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -3.0) for w in T5_WORDS]
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    pieces += [(c, -6.0) for c in chars] + [("\u2581" + c, -6.5) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def _t5_encoder(width):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(T5_WORDS) + 4 + 72, d_model=width, d_ff=2 * width, d_kv=8,
                                   num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                                   feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1, dropout_rate=0.0)).eval()


def _flow_vae(latent_channels, shift_factor):
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=latent_channels,
                         norm_num_groups=8, layers_per_block=1, sample_size=32, scaling_factor=1.5,
                         shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False)


def tiny_flux_pipeline(guidance_embeds=True, seed=0, dtype=torch.float32):
    """FLUX.1-shaped pipeline: dev (`guidance_embeds=True`) or schnell; 4 latent channels packed 2x2 into 16,
    CLIP pooled + T5 sequence embeddings, `FlowMatchEulerDiscreteScheduler` with FLUX's dynamic shift. Sizes are
    multiples of 4 pixels (VAE factor 2 x patch 2); 32 x 32 pixels -> 4 x 16 x 16 latents, 64 tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 4, 8))
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0 if guidance_embeds else 1.0,
                                                use_dynamic_shifting=guidance_embeds)
    pipe = FluxPipeline(scheduler=scheduler, vae=_flow_vae(4, 0.1), text_encoder=CLIPTextModel(_text_config(32)),
                        tokenizer=clip_tokenizer(), text_encoder_2=_t5_encoder(32), tokenizer_2=t5_tokenizer(),
                        transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_sd3_pipeline(with_t5=True, seed=0, dtype=torch.float32, latent_channels=4):
    """SD3-shaped pipeline: MMDiT (patch 2), CLIP-L and CLIP-G (pooled 32 + 32) and T5 (or none: SD3 then feeds
    zeros in its place), `FlowMatchEulerDiscreteScheduler` with shift 3. 32 x 32 pixels -> 4 x 16 x 16 latents
    (`latent_channels=16`: SD3's real channel count)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=latent_channels, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
                                        caption_projection_dim=16, pooled_projection_dim=64,
                                        out_channels=latent_channels, pos_embed_max_size=32)
    encoder = lambda: CLIPTextModelWithProjection(_text_config(32, projection_dim=32, hidden_act="gelu"))  # noqa
    pipe = StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=_flow_vae(latent_channels, 0.1),
                                    text_encoder=encoder(), tokenizer=clip_tokenizer(), text_encoder_2=encoder(),
                                    tokenizer_2=clip_tokenizer(), text_encoder_3=_t5_encoder(64) if with_t5 else None,
                                    tokenizer_3=t5_tokenizer() if with_t5 else None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_lcm_pipeline(seed=0):
    """SD 1.x-shaped pipeline whose UNet embeds the guidance scale (`time_cond_proj_dim`, LCM) with `LCMScheduler`."""
    from diffusers import LCMScheduler

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, time_cond_proj_dim=32)
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                             steps_offset=1)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=CLIPTextModel(_text_config(32)), tokenizer=clip_tokenizer(),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_architecture_pipeline(seed=0):
    """A FLUX.1-dev-architecture pipeline with random weights: the real transformer (19 double + 38 single blocks,
    width 3072, guidance embedding; 11.9B parameters) and the real 16-channel VAE, built from configs so that
    timings see real shapes with nothing downloaded. The text encoders have the real widths (CLIP-L 768, T5 4096)
    but T5 only 2 layers: prompts are encoded once per run, so their depth does not enter sampler timings. Build
    it under `with torch.device("cuda"):` to initialise on the GPU, then cast with `.to(dtype=torch.bfloat16)`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                                         num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                                         guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=2,
                        sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                        use_post_quant_conv=False)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu",
                                                projection_dim=768, bos_token_id=49406, eos_token_id=49407,
                                                pad_token_id=49407))
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=2, num_heads=64,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
                                 eos_token_id=1)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                                max_shift=1.15, shift=3.0, use_dynamic_shifting=True)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=t5_tokenizer(), transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe
