"""SANA: a linear-attention DiT on DC-AE latents (32 channels, 32x downsampling), Gemma 2 prompt embeddings with
their attention mask, flow matching sampled by DPM-Solver++ on flow sigmas.

x0 = x_t - s v as for every flow family. The shipped scheduler keeps `alphas_cumprod` but runs on flow sigmas
(`use_flow_sigmas`, `prediction_type="flow_prediction"`), starting just below s = 1 (s(t = 999.7), SNR ~1e-7).
As the stock call, prompts are prefixed with SANA's complex human instruction (the stock default; the negative
prompt is not), latents stay float32 whatever the transformer's dtype, and the guided prediction is float32.

Resolution binning: as for PixArt (`pixart_family.py`), noisekit samples at the size of its noise, which is what
the stock call does when handed `latents`; at the bins' sizes it is also the stock call without them. The default
size is the transformer's native one (`sample_size` x VAE factor: 1024 for the 1024 models), where the stock call's
fixed default of 1024 x 1024 would, for the 512 and 2K/4K models, sample at their native bin and resize.
"""

import torch

from .conditioning import Conditioning
from .flow_families import FlowAdapter, PatchedLatents
from .pixart_family import masked_call_embeds, stock_default
from .schedule import is_flow
from .x0 import without_learned_variance


class SanaAdapter(PatchedLatents, FlowAdapter):
    family = "sana"
    text_encoder_names = ("text_encoder",)
    latents_dtype = torch.float32  # SanaPipeline.prepare_latents keeps float32 latents

    @classmethod
    def matches(cls, pipe):
        from diffusers import SanaPipeline

        return isinstance(pipe, SanaPipeline)

    def check(self):
        if not is_flow(self.pipe.scheduler):
            raise ValueError(f"SanaPipeline needs a flow-matching scheduler (SANA's DPM-Solver with use_flow_sigmas, or "
                             f"a FlowMatch one), got {type(self.pipe.scheduler).__name__} on VP timesteps.")

    @property
    def vae_scale_factor(self):
        return self.pipe.vae_scale_factor  # DC-AE: 2 ** (encoder blocks - 1)

    def default_size(self):
        size = self.denoiser.config.sample_size * self.vae_scale_factor
        return size, size

    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        scheduler.set_timesteps(num_inference_steps, device=device)  # the stock call's retrieve_timesteps(n)

    def _encode_one(self, prompt, negative_prompt, with_uncond, height=None, width=None):
        pipe = self.pipe
        cond, cond_mask, uncond, uncond_mask = pipe.encode_prompt(
            prompt, with_uncond, negative_prompt=negative_prompt or "", num_images_per_prompt=1, device=self.device,
            clean_caption=stock_default(pipe, "clean_caption"),
            max_sequence_length=stock_default(pipe, "max_sequence_length"),
            complex_human_instruction=stock_default(pipe, "complex_human_instruction"))
        return Conditioning(cond, uncond, {"encoder_attention_mask": cond_mask},
                            {"encoder_attention_mask": uncond_mask} if with_uncond else {})

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        hidden, added = conditioning.unet_inputs(prompt_index, guided)
        dtype = self.denoiser.dtype
        timestep = timestep.to(model_input.device).expand(model_input.shape[0]) * self.denoiser.config.timestep_scale
        output = self.denoiser(model_input.to(dtype), encoder_hidden_states=hidden.to(dtype),
                               encoder_attention_mask=added["encoder_attention_mask"], timestep=timestep,
                               return_dict=False)[0]
        return without_learned_variance(self.denoiser, output.float())

    def decode(self, latents, output_type="pil"):
        """As SanaPipeline decodes: DC-AE latents divided by `scaling_factor` (no shift)."""
        if output_type == "latent":
            return latents
        vae = self.pipe.vae
        with torch.no_grad():
            image = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)

    def call_embeds(self, conditioning, prompt_index, count=1):
        return masked_call_embeds(conditioning, prompt_index)
