"""What every family adapter shares: the pipeline it serves, its denoiser, device and dtype, its text encoders, and
per-prompt encoding (each family says how one prompt is encoded)."""

import torch

from .conditioning import Conditioning


class AdapterBase:
    """Subclasses name their denoiser component and text encoders; the rest is the same for every family."""

    denoiser_name = "unet"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    latents_dtype = None  # the latents' dtype in sampling; None: the prompt embeddings' (as the stock pipelines)

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def denoiser(self):
        return getattr(self.pipe, self.denoiser_name)

    @property
    def device(self):
        return self.pipe._execution_device

    @property
    def dtype(self):
        return self.denoiser.dtype

    def text_encoders(self):
        return [e for e in (getattr(self.pipe, n, None) for n in self.text_encoder_names) if e is not None]

    @property
    def vae_scale_factor(self):
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def prompt_sequence(self, conditioning, rows):
        """`(len(rows), T, D)`: each prompt as one token sequence, what prompt-conditioned noise transforms (NPNet)
        read: the stock call's positive `prompt_embeds` (SD/SDXL: what the official NPNet feeds; SD3: CLIP + T5
        joined, at full length whatever the adapter encodes internally)."""
        embeds = [self.call_embeds(conditioning, int(row)) for row in rows]
        if any("prompt_embeds_mask" in e for e in embeds):  # Qwen-Image: each prompt trimmed to its own length
            raise ValueError(f"golden noise (NPNet) needs prompts encoded to a fixed number of tokens (it flattens T x "
                             f"D); {type(self.pipe).__name__} encodes each prompt to its own length.")
        return torch.cat([e["prompt_embeds"] for e in embeds])

    def encode(self, prompts, negative_prompt=None, with_uncond=True, height=None, width=None):
        """Encode each distinct prompt on its own (a prompt's embedding never depends on the others in a run)."""
        rows = [self._encode_one(p, negative_prompt, with_uncond, height, width) for p in prompts]
        stack = lambda parts: torch.cat(parts) if parts[0] is not None else None  # noqa: E731
        conditioning = Conditioning(stack([r.cond for r in rows]), stack([r.uncond for r in rows]))
        for key in rows[0].added_cond:
            conditioning.added_cond[key] = stack([r.added_cond[key] for r in rows])
            if with_uncond:
                conditioning.added_uncond[key] = stack([r.added_uncond[key] for r in rows])
        return conditioning

    def guide(self, uncond, cond, guidance_scale):
        """CFG: the guided prediction from the unconditional and conditional ones (Qwen-Image also rescales it)."""
        return uncond + guidance_scale * (cond - uncond)

    def stock_latents(self, noise):
        """What the stock pipeline's `latents=` takes for canonical noise `(B, C, h, w)`: the denoiser's layout
        (FLUX.2 packs inside its `__call__` and takes the unpacked latents)."""
        return self.pack(noise)
