"""Which model a library belongs to: the posteriors of one denoiser are no guide to another's.

The manifest keeps `model.unet_hash` (the denoiser's weights as loaded) and `denoiser.float16_hash` (its weights
cast to float16, so the same checkpoint loaded in float32 or float16 is recognised). A library is refused for a
pipeline whose denoiser matches neither, unless the caller passes `force=True`.
"""

import hashlib

import torch

from ..core.weights import module_hash


def denoiser(pipe):
    module = getattr(pipe, "unet", None)
    return module if module is not None else getattr(pipe, "transformer")


def float16_hash(module):
    """SHA-256 (16 hex digits) of the module's tensors with floating ones cast to float16, in name order; cached
    on the module (hashing an SDXL UNet takes seconds). One tensor is cast at a time, so memory stays flat."""
    cached = getattr(module, "_noisekit_float16_hash", None)
    if cached is None:
        digest, state = hashlib.sha256(), module.state_dict()
        for name in sorted(state):
            tensor = state[name].detach()
            tensor = (tensor.half() if tensor.is_floating_point() else tensor).cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        cached = digest.hexdigest()[:16]
        module._noisekit_float16_hash = cached
    return cached


def model_key(pipe):
    """The manifest's `denoiser` entry for `pipe`."""
    return {"float16_hash": float16_hash(denoiser(pipe))}


def check_model(path, manifest, pipe, force=False):
    """Raise unless `pipe`'s denoiser is the one library `path` was built with (or `force`)."""
    if force:
        return
    module, model = denoiser(pipe), manifest["model"]
    if module_hash(module) == model.get("unet_hash"):
        return
    recorded = manifest.get("denoiser", {}).get("float16_hash")
    if recorded is not None and float16_hash(module) == recorded:
        return  # the same weights at another precision
    raise ValueError(f"library {path!r} was built with another model ({model.get('id')}, denoiser weights "
                     f"{recorded or model.get('unet_hash')}); this pipeline's denoiser is {module_hash(module)}: its "
                     f"posteriors would not guide this model. Build a library for it, or pass `force=True`.")
