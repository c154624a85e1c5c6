"""The FLUX.2 family adapters: `Flux2Pipeline` (FLUX.2 dev: a Mistral3 text encoder, embedded guidance, one call
per step) and `Flux2KleinPipeline` (FLUX.2 klein: a Qwen3 text encoder, true CFG with two calls per step unless
the checkpoint is step-distilled, `is_distilled`).

Latent layout: the VAE's 32-channel latents are patchified 2x2 into 128 channels at half the size, batch-normalised
(the VAE's `bn` statistics), and the transformer reads that grid as a sequence of tokens. Diffusion runs on the
patchified grid, and the stock pipeline draws its noise there, `(in_channels, H / 16, W / 16)`, then packs it
(`_pack_latents`: a reshape to `(h * w, C)`). So canonical noise is that unpacked grid, `(C, h, w)` per seed with
C = 128 and h = H / (2 * VAE factor), and `pack` is `Flux2Pipeline._pack_latents`. `pipe(latents=...)` takes the
unpacked grid itself (`stock_latents` is the identity), and in float32 the stock pipeline's own draw with
`generator=torch.Generator().manual_seed(s)` is exactly this seed's canonical noise (in bfloat16 the bits differ).

The schedule is set as the stock `__call__` sets it: `sigmas = linspace(1, 1/n, n)` (none with `use_flow_sigmas`)
and FLUX.2's empirical `mu` from the token count and the step count. Decoding undoes the batch norm, unpatchifies
and runs the VAE, as the stock pipelines do; `output_type="latent"` gives the canonical grid.
"""

import numpy as np
import torch

from .conditioning import Conditioning
from .flow_families import FlowAdapter


class Flux2Adapter(FlowAdapter):
    """FLUX.2 dev: the guidance scale is embedded (one call per step, no CFG)."""

    family = "flux2"
    text_encoder_names = ("text_encoder",)
    guidance_embedded = True

    def __init__(self, pipe):
        super().__init__(pipe)
        self._latent_hw = {}  # packed token count -> latent (h, w), learnt from set_timesteps and pack

    @classmethod
    def matches(cls, pipe):
        from diffusers import Flux2Pipeline

        return isinstance(pipe, Flux2Pipeline)

    # shapes -------------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self):
        """Pixels per canonical latent cell: the VAE's factor times the 2x2 patchify."""
        return 2 * self.pipe.vae_scale_factor

    @property
    def latent_channels(self):
        return self.denoiser.config.in_channels

    def default_size(self):
        size = self.pipe.default_sample_size * self.pipe.vae_scale_factor  # as the stock `__call__`: 1024
        return size, size

    def pack(self, latents):
        self._latent_hw[latents.shape[2] * latents.shape[3]] = tuple(latents.shape[2:])
        return self.pipe._pack_latents(latents)

    def unpack(self, latents):
        b, n, c = latents.shape
        h, w = self._latent_hw.get(n) or _square_grid(n)
        return latents.permute(0, 2, 1).reshape(b, c, h, w)

    def stock_latents(self, noise):
        return noise  # the stock pipeline packs `latents=` itself

    # sampling -----------------------------------------------------------------------------------------------
    def guided(self, guidance_scale):
        return False

    def set_timesteps(self, scheduler, num_inference_steps, device, shape):
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu, retrieve_timesteps

        image_seq_len = shape[1] * shape[2]
        self._latent_hw[image_seq_len] = (shape[1], shape[2])
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = compute_empirical_mu(image_seq_len=image_seq_len, num_steps=num_inference_steps)
        retrieve_timesteps(scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)

    # conditioning and the denoiser --------------------------------------------------------------------------
    def _encode_one(self, prompt, negative_prompt, with_uncond, height=None, width=None):
        # Every prompt is padded to `max_sequence_length` tokens, so the rows stack without masks.
        cond = self.pipe.encode_prompt(prompt=prompt, device=self.device, num_images_per_prompt=1)[0]
        uncond = None
        if with_uncond:  # klein's CFG (and NLG) branch: the stock pipelines encode ""
            uncond = self.pipe.encode_prompt(prompt=negative_prompt or "", device=self.device,
                                             num_images_per_prompt=1)[0]
        return Conditioning(cond, uncond)

    def _guidance(self, batch, guidance_scale, device):
        scale = 4.0 if guidance_scale is None else guidance_scale  # Flux2Pipeline's default
        return torch.full([batch], scale, device=device, dtype=torch.float32)

    def _transformer(self, model_input, timestep, embeds, guidance_scale):
        batch, tokens = model_input.shape[:2]
        h, w = self._latent_hw.get(tokens) or _square_grid(tokens)
        img_ids = self.pipe._prepare_latent_ids(torch.empty(batch, 0, h, w)).to(model_input.device)
        txt_ids = self.pipe._prepare_text_ids(embeds).to(model_input.device)
        guidance = self._guidance(batch, guidance_scale, model_input.device)
        timestep = timestep.expand(batch).to(model_input.dtype)
        output = self.denoiser(hidden_states=model_input.to(self.denoiser.dtype), timestep=timestep / 1000,
                               guidance=guidance, encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids,
                               return_dict=False)[0]
        return output[:, :tokens]

    def denoise(self, model_input, timestep, conditioning, prompt_index, guided, guidance_scale=None):
        """Unguided: one call on the conditional rows. Guided (klein's CFG, NLG): `model_input` is [x; x], run as
        two calls (uncond, cond) as the stock loop does, returned as [uncond; cond]."""
        if not guided:
            return self._transformer(model_input, timestep, conditioning.cond[prompt_index], guidance_scale)
        if not conditioning.has_uncond:
            raise ValueError("this conditioning was encoded without the unconditional rows that CFG needs.")
        uncond_input, cond_input = model_input.chunk(2)
        uncond = self._transformer(uncond_input, timestep, conditioning.uncond[prompt_index], guidance_scale)
        cond = self._transformer(cond_input, timestep, conditioning.cond[prompt_index], guidance_scale)
        return torch.cat([uncond, cond])

    def call_embeds(self, conditioning, prompt_index, count=1):
        """The stock call's embeddings for one prompt (it repeats them for `num_images_per_prompt` itself)."""
        rows = slice(prompt_index, prompt_index + 1)
        return {"prompt_embeds": conditioning.cond[rows]}

    # images -------------------------------------------------------------------------------------------------
    def decode(self, latents, output_type="pil"):
        """Canonical latents `(B, 128, h, w)` (or packed) -> images: batch norm undone, unpatchified, decoded."""
        if latents.ndim == 3:
            latents = self.unpack(latents)
        if output_type == "latent":
            return latents
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device,
                                                                                           latents.dtype)
        latents = self.pipe._unpatchify_latents(latents * std + mean)
        with torch.no_grad():
            image = vae.decode(latents.to(vae.device), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)


class Flux2KleinAdapter(Flux2Adapter):
    """FLUX.2 klein: no guidance embedding; true CFG (`uncond + w (cond - uncond)`, two calls per step) when
    `guidance_scale > 1`, except for step-distilled checkpoints (`is_distilled`), which run one call per step."""

    family = "flux2-klein"
    guidance_embedded = False

    @classmethod
    def matches(cls, pipe):
        from diffusers import Flux2KleinPipeline

        return isinstance(pipe, Flux2KleinPipeline)

    def guided(self, guidance_scale):
        return guidance_scale > 1 and not self.pipe.config.is_distilled

    def _guidance(self, batch, guidance_scale, device):
        return None

    def call_embeds(self, conditioning, prompt_index, count=1):
        embeds = super().call_embeds(conditioning, prompt_index, count)
        if conditioning.has_uncond:
            embeds["negative_prompt_embeds"] = conditioning.uncond[prompt_index : prompt_index + 1]
        return embeds


def _square_grid(tokens):
    side = int(round(tokens**0.5))
    if side * side != tokens:
        raise ValueError(f"packed latents of {tokens} tokens are not square; sample them through a Sampler that "
                         "knows their size.")
    return side, side
