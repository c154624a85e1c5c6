"""Weights on disk: identity hashes for recipes, and float16 storage for the shipped assets."""

import hashlib
import os

import torch
from safetensors.torch import load_file, save_file


def state_dict_hash(module_or_state_dict):
    """SHA-256 (first 16 hex digits) over names, dtypes, shapes and bytes of every tensor, in name order."""
    state = module_or_state_dict
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def store_float16(folder):
    """Rewrite every `.safetensors` under `folder` with float32 tensors stored as float16.

    The configs still say float32, so diffusers and transformers load the weights back as float32 parameters;
    only the file halves.
    """
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".safetensors"):
                path = os.path.join(root, name)
                state = load_file(path)
                state = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
                save_file(state, path + ".tmp", metadata={"format": "pt"})
                os.replace(path + ".tmp", path)


def weights_version(module):
    """A cheap key that changes whenever a module's weights may have: each tensor's storage address, in-place
    version counter (`fuse_lora`, `load_state_dict` and optimiser steps move one of them) and a strided sample of
    its values (writes through `.data`, which bump no counter)."""
    key = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 16)].double().sum().item() if flat.numel() else 0.0
        key.append((name, tensor.data_ptr(), tensor._version, tuple(tensor.shape), sample))
    return tuple(key)


def module_hash(module):
    """`state_dict_hash` of a module, cached on the module until its weights change (hashing an SDXL UNet takes
    seconds)."""
    version = weights_version(module)
    cached = getattr(module, "_noisekit_weights_hash", None)
    if cached is None or cached[0] != version:
        cached = (version, state_dict_hash(module))
        module._noisekit_weights_hash = cached
    return cached[1]
