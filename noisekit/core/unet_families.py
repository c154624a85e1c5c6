"""UNet family adapters: SD 1.x/2.x (`StableDiffusionPipeline` and its relatives) need only text embeddings;
SDXL adds pooled text embeddings and size/crop time ids to the UNet call; LCM UNets (`time_cond_proj_dim`) embed
the guidance scale (one call per step, no CFG). EDM-scheduled UNets (Playground v2.5) sample through the
scheduler's own preconditioning; their previews read x0 from it (`edm.py`)."""

import torch

from .adapter import AdapterBase
from .conditioning import Conditioning
from .edm import edm_x0, is_edm
from .x0 import predict_x0


class UNetAdapter(AdapterBase):
    """SD 1.x/2.x: a `UNet2DConditionModel` conditioned on one text encoder's sequence embedding."""

    family = "sd"

    @classmethod
    def matches(cls, pipe):
        return hasattr(pipe, "unet") and hasattr(pipe, "encode_prompt")

    flow = False  # flow-matching families (x0 = x_t - sigma v) set this

    def check(self):
        """Raise one line when this pipeline cannot be sampled by noisekit (every UNet scheduler can)."""

    @property
    def guidance_embedded(self):
        """Guidance enters the denoiser as an embedding (LCM's `time_cond_proj_dim`): one call per step, no CFG."""
        return getattr(self.denoiser.config, "time_cond_proj_dim", None) is not None

    def guided(self, guidance_scale):
        """Whether sampling at `guidance_scale` runs CFG's batched [uncond; cond] calls (as the stock pipeline)."""
        return guidance_scale > 1 and not self.guidance_embedded

    # schedule and latent layout -----------------------------------------------------------------------------
    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        """The stock pipeline's `set_timesteps` call for latents of `shape` `(C, h, w)`."""
        scheduler.set_timesteps(num_inference_steps, device=device)

    def pack(self, latents):
        """Canonical `(B, C, h, w)` latents -> the denoiser's layout (the identity for UNets)."""
        return latents

    def unpack(self, latents):
        """The denoiser's layout -> `(B, C, h, w)`."""
        return latents

    def x0(self, scheduler, output, model_input, step_index, timestep):
        """x0 preview `(B, C, h, w)` float32 from the guided output at loop index `step_index`."""
        if is_edm(scheduler):
            return edm_x0(scheduler, output, model_input, step_index)
        return predict_x0(scheduler, output, model_input, step_index, timestep)

    def preview_sigma(self, scheduler, step_index, timestep):
        """The noise level of the sample at this step in VE units (x_t / alpha = x0 + sigma eps; EDM's sigma)."""
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is not None and len(sigmas) > step_index:
            return float(sigmas[step_index])
        alpha_bar = scheduler.alphas_cumprod[int(timestep)].double()
        return float(((1 - alpha_bar) / alpha_bar).sqrt())

    # shapes -------------------------------------------------------------------------------------------------

    @property
    def latent_channels(self):
        return self.denoiser.config.in_channels

    def default_size(self):
        """The pipeline's default `(height, width)` in pixels, as its own `__call__` computes it."""
        sample_size = getattr(self.pipe, "default_sample_size", None) or self.denoiser.config.sample_size
        factor = self.vae_scale_factor
        if isinstance(sample_size, (tuple, list)):
            return sample_size[0] * factor, sample_size[1] * factor
        return sample_size * factor, sample_size * factor

    def latent_shape(self, height=None, width=None):
        """`(channels, height // f, width // f)` of the latents of an image of `height` x `width` pixels."""
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        factor = self.vae_scale_factor
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % factor:
                raise ValueError(f"`{name}` must be a positive multiple of the VAE's downsampling factor {factor}, "
                                 f"got {value!r}.")
        return (self.latent_channels, height // factor, width // factor)

    def image_size(self, noise):
        """`(height, width)` in pixels of the image that latents shaped like `noise` decode to."""
        return noise.shape[-2] * self.vae_scale_factor, noise.shape[-1] * self.vae_scale_factor

    # conditioning and the denoiser --------------------------------------------------------------------------
    def _encode_one(self, prompt, negative_prompt, with_uncond, height, width):
        cond, uncond = self.pipe.encode_prompt(prompt, self.device, 1, with_uncond, negative_prompt)
        return Conditioning(cond, uncond)

    def nfe_per_step(self, guided):
        """Denoiser evaluations per candidate per step: 2 under CFG (one batched call on [uncond; cond])."""
        return 2 if guided else 1

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        hidden, added = conditioning.unet_inputs(prompt_index, guided)
        timestep_cond = None
        if self.guidance_embedded and guidance_scale is not None:
            # As the stock pipelines: the embedding of w - 1 (LCM's convention), one per row.
            w = torch.tensor(guidance_scale - 1).repeat(model_input.shape[0])
            timestep_cond = self.pipe.get_guidance_scale_embedding(
                w, embedding_dim=self.denoiser.config.time_cond_proj_dim).to(model_input.device, model_input.dtype)
        return self.denoiser(model_input, timestep, encoder_hidden_states=hidden, timestep_cond=timestep_cond,
                             added_cond_kwargs=added, return_dict=False)[0]

    def call_embeds(self, conditioning, prompt_index, count=1):
        """The stock pipeline call's embedding arguments for one encoded prompt (so it does not encode again); the
        SD pipelines repeat them for `num_images_per_prompt` themselves, so `count` is not needed here."""
        rows = slice(prompt_index, prompt_index + 1)
        embeds = {"prompt_embeds": conditioning.cond[rows]}
        if conditioning.has_uncond:
            embeds["negative_prompt_embeds"] = conditioning.uncond[rows]
        for key, name in (("text_embeds", "pooled_prompt_embeds"),):
            if key in conditioning.added_cond:
                embeds[name] = conditioning.added_cond[key][rows]
                if key in conditioning.added_uncond:
                    embeds["negative_" + name] = conditioning.added_uncond[key][rows]
        return embeds

    # images -------------------------------------------------------------------------------------------------
    def decode(self, latents, output_type="pil"):
        """Latents -> images through the pipeline's VAE and image processor, as the stock pipelines decode them."""
        if output_type == "latent":
            return latents
        pipe, vae = self.pipe, self.pipe.vae
        needs_upcasting = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if needs_upcasting:
            vae.to(torch.float32)
        latents = latents.to(vae.dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            view = lambda values: torch.tensor(values).view(1, -1, 1, 1).to(latents.device, latents.dtype)  # noqa
            latents = latents * view(std) / vae.config.scaling_factor + view(mean)
        else:
            latents = latents / vae.config.scaling_factor
        with torch.no_grad():
            image = vae.decode(latents, return_dict=False)[0]
        if needs_upcasting:
            vae.to(torch.float16)
        do_denormalize = None
        if getattr(pipe, "safety_checker", None) is not None:
            # SD 1.x's checker blacks out flagged images; they are returned undenormalised, as the pipeline does.
            image, flagged = pipe.run_safety_checker(image, image.device, latents.dtype)
            do_denormalize = [not f for f in flagged]
        return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=do_denormalize)


class SDXLAdapter(UNetAdapter):
    """SDXL: two text encoders; the UNet also takes pooled text embeddings and size/crop time ids."""

    family = "sdxl"

    @classmethod
    def matches(cls, pipe):
        return hasattr(pipe, "unet") and hasattr(pipe, "text_encoder_2") and hasattr(pipe, "_get_add_time_ids")

    def _encode_one(self, prompt, negative_prompt, with_uncond, height, width):
        pipe = self.pipe
        height, width = height or self.default_size()[0], width or self.default_size()[1]
        cond, uncond, pooled, negative_pooled = pipe.encode_prompt(
            prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=with_uncond,
            negative_prompt=negative_prompt)
        if pipe.text_encoder_2 is None:
            projection_dim = int(pooled.shape[-1])
        else:
            projection_dim = pipe.text_encoder_2.config.projection_dim
        # SDXL's defaults: original size = target size = the image size, no crop.
        time_ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=cond.dtype,
                                          text_encoder_projection_dim=projection_dim).to(self.device)
        return Conditioning(cond, uncond, {"text_embeds": pooled, "time_ids": time_ids},
                            {"text_embeds": negative_pooled, "time_ids": time_ids} if with_uncond else {})
