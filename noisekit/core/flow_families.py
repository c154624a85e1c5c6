"""Flow-matching family adapters: SD3/SD3.5 (MMDiT) and FLUX.1 (dev and schnell).

Rectified flow: x_t = (1 - sigma) x0 + sigma eps, the transformer predicts v = eps - x0, so x0 = x_t - sigma v, and
sampling starts at sigma = 1 (pure noise, `init_noise_sigma` 1). The schedule is the scheduler's shifted sigmas,
set exactly as the stock `__call__` sets them (FLUX: `sigmas = linspace(1, 1/n, n)` and `mu` from the packed
sequence length; SD3: `mu` only with dynamic shifting), so `noisekit.sample` equals `pipe(latents=...)`.

Canonical noise stays `(C, h, w)` per seed for every family. FLUX's transformer reads 2x2 patches packed into a
sequence `(h/2 * w/2, 4C)`; the adapter packs as `FluxPipeline._pack_latents` does, so `pipe(latents=pack(noise))`
starts from the same numbers. The stock pipeline's own draw with `generator=torch.Generator().manual_seed(s)` is
this seed's noise, packed, when the pipeline runs in float32 (it draws `(1, C, h, w)` with `randn_tensor` in the
prompt embeddings' dtype, then packs); in bfloat16/float16 it draws in that dtype and the bits differ.
"""

import contextlib

import numpy as np
import torch

from .adapter import AdapterBase
from .conditioning import Conditioning
from .x0 import flow_x0
from .zero_tokens import ZERO_TOKENS, expand_zero_token, repeated_last_token, uses_stock_joint_attention


class FlowAdapter(AdapterBase):
    """What SD3 and FLUX share: a transformer predicting flow velocity, a VAE with `shift_factor`."""

    family = "flow"
    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    flow = True
    guidance_embedded = False

    def check(self):
        if not hasattr(self.pipe.scheduler, "sigmas") or hasattr(self.pipe.scheduler, "alphas_cumprod"):
            raise ValueError(f"{type(self.pipe).__name__} needs a flow-matching scheduler (sigmas from 1 to 0), got "
                             f"{type(self.pipe.scheduler).__name__}.")

    # shapes -------------------------------------------------------------------------------------------------

    multiple = 1  # latent sizes must be multiples of this (the transformer's patch)

    def default_size(self):
        size = self.pipe.default_sample_size * self.vae_scale_factor
        return size, size

    def latent_shape(self, height=None, width=None):
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        factor = self.vae_scale_factor * self.multiple
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % factor:
                raise ValueError(f"`{name}` must be a positive multiple of {factor} for {type(self.pipe).__name__} "
                                 f"(VAE factor x patch), got {value!r}.")
        f = self.vae_scale_factor
        return (self.latent_channels, height // f, width // f)

    def image_size(self, noise):
        return noise.shape[-2] * self.vae_scale_factor, noise.shape[-1] * self.vae_scale_factor

    def pack(self, latents):
        return latents

    def unpack(self, latents):
        return latents

    # sampling -----------------------------------------------------------------------------------------------
    def guided(self, guidance_scale):
        return guidance_scale > 1

    def nfe_per_step(self, guided):
        return 2 if guided else 1

    def x0(self, scheduler, output, model_input, step_index, timestep):
        return self.unpack(flow_x0(output, model_input, scheduler.sigmas[step_index]))

    def preview_sigma(self, scheduler, step_index, timestep):
        """The VE-equivalent noise level s / (1 - s): x_t / (1 - s) = x0 + s / (1 - s) eps (infinite at s = 1)."""
        s = float(scheduler.sigmas[step_index])
        return float("inf") if s >= 1 else s / (1 - s)

    def flow_timestep(self, sigma):
        """The scheduler timestep of noise level `sigma` (what `denoise` takes)."""
        return torch.tensor(float(sigma) * self.pipe.scheduler.config.num_train_timesteps, device=self.device)

    # images -------------------------------------------------------------------------------------------------
    def decode(self, latents, output_type="pil"):
        """Unpacked latents `(B, C, h, w)` -> images, as the stock pipelines decode (scale, then shift)."""
        if output_type == "latent":
            return latents
        vae = self.pipe.vae
        latents = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        with torch.no_grad():
            image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)


class PatchedLatents:
    """Unpacked latents read in the transformer's own patches (SD3, SANA): its input channels, sizes a multiple of
    its patch."""

    @property
    def latent_channels(self):
        return self.denoiser.config.in_channels

    @property
    def multiple(self):
        return self.denoiser.config.patch_size


class SD3Adapter(PatchedLatents, FlowAdapter):
    """SD3 / SD3.5: MMDiT on unpacked latents, CLIP-L + CLIP-G pooled and (optionally) T5 sequence embeddings."""

    family = "sd3"

    @classmethod
    def matches(cls, pipe):
        from diffusers import StableDiffusion3Pipeline

        return isinstance(pipe, StableDiffusion3Pipeline)

    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (calculate_shift,
                                                                                        retrieve_timesteps)

        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", None):
            patch = self.denoiser.config.patch_size
            image_seq_len = (shape[1] // patch) * (shape[2] // patch)
            kwargs["mu"] = calculate_shift(image_seq_len, scheduler.config.get("base_image_seq_len", 256),
                                           scheduler.config.get("max_image_seq_len", 4096),
                                           scheduler.config.get("base_shift", 0.5),
                                           scheduler.config.get("max_shift", 1.16))
        retrieve_timesteps(scheduler, num_inference_steps, device, **kwargs)

    def _encode_one(self, prompt, negative_prompt, with_uncond, height=None, width=None):
        # Without T5 the 256 zero tokens are encoded as one (see zero_tokens), unless custom attention runs.
        compact = self.pipe.text_encoder_3 is None and uses_stock_joint_attention(self.denoiser)
        cond, uncond, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=with_uncond, negative_prompt=negative_prompt,
            max_sequence_length=1 if compact else ZERO_TOKENS)
        return Conditioning(cond, uncond, {"pooled_projections": pooled},
                            {"pooled_projections": negative_pooled} if with_uncond else {})

    def _compact(self, embeds):
        return embeds.shape[1] == self.pipe.tokenizer_max_length + 1

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        hidden, added = conditioning.unet_inputs(prompt_index, guided)
        attention = repeated_last_token(self.denoiser) if self._compact(hidden) else contextlib.nullcontext()
        with attention:
            return self.denoiser(hidden_states=model_input, timestep=timestep.expand(model_input.shape[0]),
                                 encoder_hidden_states=hidden, return_dict=False, **added)[0]

    def call_embeds(self, conditioning, prompt_index, count=1):
        """The stock call's embeddings for one prompt, repeated for `count` images (SD3 does not repeat given
        embeddings for `num_images_per_prompt`)."""
        rows = [prompt_index] * count
        full = expand_zero_token if self._compact(conditioning.cond) else (lambda embeds: embeds)
        embeds = {"prompt_embeds": full(conditioning.cond[rows]),
                  "pooled_prompt_embeds": conditioning.added_cond["pooled_projections"][rows]}
        if conditioning.has_uncond:
            embeds["negative_prompt_embeds"] = full(conditioning.uncond[rows])
            embeds["negative_pooled_prompt_embeds"] = conditioning.added_uncond["pooled_projections"][rows]
        return embeds


class PackedLatents:
    """Latents packed as FLUX.1 and Qwen-Image pack them: 2x2 patches as a sequence `(h/2 * w/2, 4C)`. A sequence's
    latent size is learnt from `set_timesteps` and `pack`, or read from its square."""

    multiple = 2  # packing reads 2x2 latent patches

    def __init__(self, pipe):
        super().__init__(pipe)
        self._latent_hw = {}  # packed token count -> latent (h, w)

    def pack(self, latents):
        b, c, h, w = latents.shape
        self._latent_hw[(h // 2) * (w // 2)] = (h, w)  # so unpack and the position ids know the size
        return self.pipe._pack_latents(latents, b, c, h, w)

    def unpack(self, latents):
        # The pipelines' `_unpack_latents` (Qwen-Image's without its frame axis), the size known or square.
        b, n, d = latents.shape
        h, w = self._latent_hw.get(n) or _square(n)
        latents = latents.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return latents.reshape(b, d // 4, h, w)


class FluxAdapter(PackedLatents, FlowAdapter):
    """FLUX.1: packed 2x2 latents, CLIP pooled + T5 sequence embeddings. dev embeds the guidance scale (one call
    per step, no CFG); schnell has no guidance at all. The stock pipeline's "true CFG" (`true_cfg_scale`) is not
    run by noisekit: `guidance_scale` here is FLUX's embedded guidance."""

    family = "flux"

    @classmethod
    def matches(cls, pipe):
        from diffusers import FluxPipeline

        return isinstance(pipe, FluxPipeline)

    @property
    def latent_channels(self):
        return self.denoiser.config.in_channels // 4

    @property
    def guidance_embedded(self):
        return bool(self.denoiser.config.guidance_embeds)

    def guided(self, guidance_scale):
        return False

    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        self._latent_hw[(shape[1] // 2) * (shape[2] // 2)] = (shape[1], shape[2])
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        image_seq_len = (shape[1] // 2) * (shape[2] // 2)
        mu = calculate_shift(image_seq_len, scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096),
                             scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
        retrieve_timesteps(scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)

    def _encode_one(self, prompt, negative_prompt, with_uncond, height=None, width=None):
        cond, pooled, _ = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device,
                                                  num_images_per_prompt=1)
        uncond, negative_pooled = None, None
        if with_uncond:
            uncond, negative_pooled, _ = self.pipe.encode_prompt(prompt=negative_prompt or "", prompt_2=None,
                                                                 device=self.device, num_images_per_prompt=1)
        return Conditioning(cond, uncond, {"pooled_projections": pooled},
                            {"pooled_projections": negative_pooled} if with_uncond else {})

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        hidden, added = conditioning.unet_inputs(prompt_index, guided)
        batch, tokens = model_input.shape[:2]
        h, w = self._latent_hw.get(tokens) or _square(tokens)
        dtype = hidden.dtype
        img_ids = self.pipe._prepare_latent_image_ids(batch, h // 2, w // 2, model_input.device, dtype)
        txt_ids = torch.zeros(hidden.shape[1], 3, device=model_input.device, dtype=dtype)
        guidance = None
        if self.guidance_embedded:
            scale = 1.0 if guidance_scale is None else guidance_scale
            guidance = torch.full([batch], scale, device=model_input.device, dtype=torch.float32)
        timestep = timestep.expand(batch).to(model_input.dtype)
        return self.denoiser(hidden_states=model_input, timestep=timestep / 1000, guidance=guidance,
                             encoder_hidden_states=hidden, txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
                             **added)[0]

    def decode(self, latents, output_type="pil"):
        if latents.ndim == 3:
            latents = self.unpack(latents)
        return super().decode(latents, output_type)

    def prompt_sequence(self, conditioning, rows):
        """The T5 sequence plus CLIP's pooled embedding, zero-padded to the T5 width, as one last token: FLUX reads
        CLIP only through the pooled vector, so a sequence without it would miss half of the prompt's encoding."""
        sequence = conditioning.cond[rows]
        pooled = conditioning.added_cond["pooled_projections"][rows]
        padding = sequence.shape[-1] - pooled.shape[-1]
        if padding < 0:
            raise ValueError(f"the pooled CLIP embedding ({pooled.shape[-1]}) is wider than the T5 sequence "
                             f"({sequence.shape[-1]}); it cannot join the sequence as one token.")
        return torch.cat([sequence, torch.nn.functional.pad(pooled, (0, padding))[:, None].to(sequence.dtype)], 1)

    def call_embeds(self, conditioning, prompt_index, count=1):
        rows = [prompt_index] * count  # FLUX does not repeat given embeddings for `num_images_per_prompt`
        return {"prompt_embeds": conditioning.cond[rows],
                "pooled_prompt_embeds": conditioning.added_cond["pooled_projections"][rows]}


def _square(tokens):
    side = int(round(tokens**0.5))
    if side * side != tokens:
        raise ValueError(f"packed latents of {tokens} tokens are not square; sample them through a Sampler that "
                         "knows their size.")
    return 2 * side, 2 * side
