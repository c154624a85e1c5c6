"""PixArt-Alpha and PixArt-Sigma: a DiT on VP (epsilon) latents with T5 prompt embeddings and their attention mask.

The transformer's output carries learned variance (`out_channels = 2 C`); the stock pipelines guide the whole
output and keep its first C channels, so the adapter returns those (guidance is per channel, so the numbers are the
same), and x0 is the UNet families' (epsilon / v through the scheduler's sigmas). The schedule is the stock call's
plain `set_timesteps(n)`. PixArt-Alpha's 1024 model (`sample_size` 128) also takes the image's resolution and aspect
ratio as micro-conditions; they ride in the conditioning as SDXL's time ids do.

Resolution binning: the stock `__call__` maps a requested size to the nearest trained aspect-ratio bin, samples
there and resizes the image back. noisekit samples at the size of the noise it is given, as the stock call does
when it is handed `latents` (it then samples at the latents' size whatever the bin), so `noisekit.sample` equals
`pipe(latents=...)` at every size; at the bins' own sizes (the default size and each trained aspect ratio) that is
also the stock call without `latents`.
"""

import inspect

import torch

from .conditioning import Conditioning
from .unet_families import UNetAdapter
from .x0 import without_learned_variance


def stock_default(pipe, name):
    """The default of argument `name` in the stock diffusers pipeline's `__call__` (what a plain `pipe(prompt)`
    uses; read from the diffusers class, since subclasses such as noisekit's own pipelines redefine `__call__`)."""
    stock = next(c for c in type(pipe).__mro__ if c.__module__.startswith("diffusers.") and "__call__" in vars(c))
    return inspect.signature(stock.__call__).parameters[name].default


class PixArtAdapter(UNetAdapter):
    family = "pixart"
    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder",)

    @classmethod
    def matches(cls, pipe):
        from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

        return isinstance(pipe, (PixArtAlphaPipeline, PixArtSigmaPipeline))

    @property
    def guidance_embedded(self):
        return False

    @property
    def micro_conditioned(self):
        """PixArt-Alpha 1024 (`sample_size` 128) embeds resolution and aspect ratio (`PixArtAlphaPipeline` only)."""
        from diffusers import PixArtAlphaPipeline

        return isinstance(self.pipe, PixArtAlphaPipeline) and self.denoiser.config.sample_size == 128

    def micro_condition_size(self, height, width):
        """The size PixArt-Alpha 1024 is told it renders: as the stock call with its default binning, the nearest
        1024 bin's (the requested size itself at every bin, whatever the size of the latents it is handed)."""
        from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN

        default_height, default_width = self.default_size()
        return self.pipe.image_processor.classify_height_width_bin(height or default_height, width or default_width,
                                                                   ratios=ASPECT_RATIO_1024_BIN)

    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        from diffusers import PixArtAlphaPipeline

        if num_inference_steps == 1 and isinstance(self.pipe, PixArtAlphaPipeline):
            raise ValueError("PixArtAlphaPipeline at 1 step returns the scheduler's x0 estimate (the DMD one-step "
                             "checkpoint), which noisekit's sampler does not reproduce; use 2 steps or more.")
        scheduler.set_timesteps(num_inference_steps, device=device)

    def latent_shape(self, height=None, width=None):
        patch = self.denoiser.config.patch_size
        factor = self.vae_scale_factor * patch
        for name, value in (("height", height), ("width", width)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0
                                      or value % factor):
                raise ValueError(f"`{name}` must be a positive multiple of {factor} for {type(self.pipe).__name__} "
                                 f"(VAE factor x patch {patch}), got {value!r}.")
        return super().latent_shape(height, width)

    def _encode_one(self, prompt, negative_prompt, with_uncond, height, width):
        pipe = self.pipe
        cond, cond_mask, uncond, uncond_mask = pipe.encode_prompt(
            prompt, with_uncond, negative_prompt=negative_prompt or "", num_images_per_prompt=1, device=self.device,
            clean_caption=stock_default(pipe, "clean_caption"),
            max_sequence_length=stock_default(pipe, "max_sequence_length"))
        added = {"encoder_attention_mask": cond_mask}
        if self.micro_conditioned:
            height, width = self.micro_condition_size(height, width)
            added["resolution"] = torch.tensor([[height, width]], dtype=cond.dtype, device=self.device)
            added["aspect_ratio"] = torch.tensor([[float(height / width)]], dtype=cond.dtype, device=self.device)
        added_uncond = {**added, "encoder_attention_mask": uncond_mask} if with_uncond else {}
        return Conditioning(cond, uncond, added, added_uncond)

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        hidden, added = conditioning.unet_inputs(prompt_index, guided)
        micro = {"resolution": added.get("resolution"), "aspect_ratio": added.get("aspect_ratio")}
        timestep = timestep.reshape(-1).to(model_input.device).expand(model_input.shape[0])
        output = self.denoiser(model_input, encoder_hidden_states=hidden,
                               encoder_attention_mask=added["encoder_attention_mask"], timestep=timestep,
                               added_cond_kwargs=micro, return_dict=False)[0]
        return without_learned_variance(self.denoiser, output)

    def call_embeds(self, conditioning, prompt_index, count=1):
        return masked_call_embeds(conditioning, prompt_index)


def masked_call_embeds(conditioning, prompt_index):
    """The stock PixArt / SANA call's embeddings and attention masks for one prompt (it repeats them for
    `num_images_per_prompt` itself)."""
    rows = slice(prompt_index, prompt_index + 1)
    # `negative_prompt=None`: the stock default "" may not come with negative embeddings
    embeds = {"prompt_embeds": conditioning.cond[rows], "negative_prompt": None,
              "prompt_attention_mask": conditioning.added_cond["encoder_attention_mask"][rows]}
    if conditioning.has_uncond:
        embeds["negative_prompt_embeds"] = conditioning.uncond[rows]
        embeds["negative_prompt_attention_mask"] = conditioning.added_uncond["encoder_attention_mask"][rows]
    return embeds
