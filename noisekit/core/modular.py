"""A diffusers `ModularPipeline` served by noisekit: the classic pipeline of the same components.

noisekit's stages need the denoiser step by step (search prunes candidates between steps and scores x0 previews,
NLG calls the denoiser before sampling, every evaluation is counted), which a modular pipeline's blocks do not
expose: they run a whole denoising loop per call. What they do expose is their components (`pipe.components`), the
same models, tokenizers and scheduler a classic pipeline is made of. So a modular pipeline of a family noisekit
serves is turned into that family's classic pipeline over the very same component objects (nothing is copied or
cast) and the family adapters serve it; `adapter_for` does this for every entry point (`sample`, `Sampler`,
`generate`, `search`, `seed_noise`, ...).

Not `ClassicPipeline.from_pipe(modular)`: it casts every shared module to its `torch_dtype` argument (float32 by
default) in place, which would change the user's half-precision modular pipeline under it.

Refused, each with a one-line reason: a modular pipeline of a family with no classic counterpart noisekit samples
(video, editing, custom blocks), one whose components are not loaded yet, and one whose guider is not plain
classifier-free guidance (noisekit's sampler runs CFG itself, so its images would not be the pipeline's).
"""

import importlib

# modular pipeline class -> the classic pipeline class of the same components (both in the `diffusers` namespace)
CLASSIC_PIPELINES = {
    "StableDiffusionXLModularPipeline": "StableDiffusionXLPipeline",
    "FluxModularPipeline": "FluxPipeline",
}
# Not mapped: SD3, whose modular blocks give other images than StableDiffusion3Pipeline on the same components and
# latents (max |diff| 0.13 on the tiny test model in diffusers 0.42.1), so noisekit would not reproduce them.

# guiders whose rule is the CFG noisekit's sampler applies (its scale comes from noisekit's `guidance_scale`)
CFG_GUIDERS = ("ClassifierFreeGuidance",)


def is_modular(pipe):
    """A diffusers `ModularPipeline` (by class name along the MRO, so checking it imports nothing)."""
    return any(base.__name__ == "ModularPipeline" for base in type(pipe).__mro__)


def _classic_class(pipe):
    name = type(pipe).__name__
    if name not in CLASSIC_PIPELINES:
        served = ", ".join(CLASSIC_PIPELINES)
        raise ValueError(f"{name} is not supported: noisekit samples modular pipelines through the classic pipeline "
                         f"of their components, which it knows only for {served}; for other blocks insert "
                         "`noisekit.modular.NoisePlanLatentsStep` in place of their latent preparation.")
    return getattr(importlib.import_module("diffusers"), CLASSIC_PIPELINES[name])


def _check_guider(pipe):
    guider = getattr(pipe, "guider", None)
    if guider is not None and type(guider).__name__ not in CFG_GUIDERS:
        raise ValueError(f"{type(pipe).__name__} with a {type(guider).__name__} guider is not supported: noisekit's "
                         "sampler applies classifier-free guidance itself, so its images would not be this "
                         "pipeline's; use a ClassifierFreeGuidance guider.")


def classic_pipeline(pipe):
    """`pipe` itself, or for a `ModularPipeline` the classic pipeline over the same component objects."""
    if not is_modular(pipe):
        return pipe
    classic_class = _classic_class(pipe)
    _check_guider(pipe)
    modules, config_names = classic_class._get_signature_keys(classic_class)
    components = pipe.components
    optional = set(classic_class._optional_components)
    missing = sorted(n for n in modules if n not in optional and components.get(n) is None)
    if missing:
        raise ValueError(f"{type(pipe).__name__} has no {', '.join(missing)} loaded: call `pipe.load_components()` "
                         "(or `update_components`) before handing it to noisekit.")
    kwargs = {name: components.get(name) for name in modules if name in components}
    config = dict(pipe.config)
    kwargs.update({name: config[name] for name in config_names if name in config})
    if "add_watermarker" in config_names:
        kwargs.setdefault("add_watermarker", False)  # the modular decode step does not watermark
    classic = classic_class(**kwargs)
    classic.set_progress_bar_config(disable=True)
    if hasattr(pipe, "noisekit_guidance_rescale"):  # set by `zero_snr(pipe)` on the modular pipeline
        classic.noisekit_guidance_rescale = pipe.noisekit_guidance_rescale
    return classic
