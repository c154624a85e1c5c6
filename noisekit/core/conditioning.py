"""Per-prompt denoiser conditioning, batched as diffusers batches it under CFG."""

from dataclasses import dataclass, field

import torch


@dataclass
class Conditioning:
    """Per-prompt denoiser conditioning: `cond`/`uncond` are `(P, L, D)`; `added_*` hold SDXL's extra inputs."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    added_cond: dict = field(default_factory=dict)
    added_uncond: dict = field(default_factory=dict)

    @property
    def has_uncond(self):
        return self.uncond is not None

    def unet_inputs(self, prompt_index, guided):
        """`(encoder_hidden_states, added_cond_kwargs)` for candidates with `prompt_index`, batched as diffusers
        batches them under CFG: all unconditional rows first, then all conditional rows."""
        hidden = self.cond[prompt_index]
        added = {k: v[prompt_index] for k, v in self.added_cond.items()}
        if guided:
            if self.uncond is None:
                raise ValueError("this conditioning was encoded without the unconditional rows that CFG needs.")
            hidden = torch.cat([self.uncond[prompt_index], hidden])
            added = {k: torch.cat([self.added_uncond[k][prompt_index], v]) for k, v in added.items()}
        return hidden, (added or None)
