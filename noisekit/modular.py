"""noisekit in diffusers' modular pipelines: both routes, each where it is faithful.

1. A `ModularPipeline` is accepted wherever noisekit takes a pipeline (`sample`, `Sampler`, `generate`, `search`,
   `seed_noise`, ...): `noisekit.core.modular` turns it into the classic pipeline of the same component objects and
   the family adapters serve it. Search needs this route: it prunes candidates between steps, scores x0 previews
   and counts every denoiser call, none of which a block's whole denoising loop exposes.
2. `NoisePlanLatentsStep` puts the noise plan's noise stages (noise library, golden noise, NLG) in place of a
   text-to-image workflow's `prepare_latents` block, so the user's other blocks (their text encoder, guider,
   denoise loop, decoder, ...) run unchanged on noisekit's noise. It wraps the stock step and hands it the noise
   through `latents`, as a classic pipeline's `latents=` takes it, so the stock step still scales (by
   `init_noise_sigma`), packs and places it, and still gives every other output it declares.

The block makes candidates as `noisekit generate` does: seeds `seed, seed + 1, ...` (`num_images_per_prompt` of
them) for every prompt, so its images equal `noisekit.generate`'s for the same plan and settings. A search stage
is refused in the block (it has to run the denoising loop itself; use `noisekit.search` or the plan with route 1),
as are workflows that start from an image (the plan's noises are text-to-image starts).

Served families: those `noisekit.core.modular` maps (SDXL, FLUX.1). diffusers 0.42.1's modular SDXL input step
tiles the pooled embeddings across prompts ([p0, p1, p0, p1]) while it repeats the sequence embeddings per prompt
([p0, p0, p1, p1]), so with several prompts and `num_images_per_prompt > 1` its own images are not the classic
pipeline's; with one prompt, or one image per prompt, they are (max |diff| 1e-6).
"""

import copy

import torch
from diffusers.modular_pipelines import InputParam, ModularPipelineBlocks

from .core.candidates import seed_list
from .core.modular import classic_pipeline
from .plan import NoisePlan, prepare, run_sampler

IMAGE_INPUTS = ("image", "image_latents")  # a workflow reading these starts from an image, not from noise


class NoisePlanLatentsStep(ModularPipelineBlocks):
    """The stock `prepare_latents` step of a text-to-image workflow, fed the noise plan's noise.

    Args:
        prepare_latents (`ModularPipelineBlocks`): the stock latent-preparation step it wraps.
        plan (`NoisePlan`, *optional*): the noise stages (no search); a call's `noise_plan` input overrides it.

    Call inputs it adds: `seed` (the first seed, default 0), `noise_plan`; it reads `prompt` and `negative_prompt`.
    """

    def __init__(self, prepare_latents, *, plan=None):
        super().__init__()
        self.stock_step = prepare_latents  # an attribute, not a sub-block: the workflow sees one leaf
        self.plan = plan

    @property
    def model_name(self):
        return self.stock_step.model_name

    @property
    def description(self):
        return "noisekit's noise plan (library, golden noise, NLG) in place of: " + self.stock_step.description

    @property
    def expected_components(self):
        return self.stock_step.expected_components

    @property
    def expected_configs(self):
        return self.stock_step.expected_configs

    @property
    def inputs(self):
        own = [InputParam("prompt"), InputParam("negative_prompt"),
               InputParam("seed", type_hint=int, default=0, description="First seed; seeds seed, seed + 1, ... "
                          "(`num_images_per_prompt` of them) are used for every prompt."),
               InputParam("noise_plan", type_hint=NoisePlan, description="noisekit's noise stages for this call.")]
        names = {param.name for param in self.stock_step.inputs}
        return self.stock_step.inputs + [param for param in own if param.name not in names]

    @property
    def intermediate_outputs(self):
        return self.stock_step.intermediate_outputs

    def __call__(self, components, state):
        block_state = self.get_block_state(state)
        plan = block_state.noise_plan or self.plan or NoisePlan()
        if plan.search is not None:
            raise ValueError("a search stage cannot run inside a modular pipeline's latent step (it runs the "
                             "denoising loop itself): call noisekit.search or noisekit.generate with the pipeline.")
        if block_state.latents is not None:
            raise ValueError("NoisePlanLatentsStep makes the latents from `seed`; pass `seed`, not `latents`.")
        if block_state.prompt is None:
            raise ValueError("NoisePlanLatentsStep needs `prompt` (the noise plan encodes it); prompt embeddings "
                             "alone are not enough.")
        prompts = [block_state.prompt] if isinstance(block_state.prompt, str) else list(block_state.prompt)
        pipe = classic_pipeline(components)
        sampler = run_sampler(pipe, prompts, plan, num_inference_steps=1, guidance_scale=1.0,
                              negative_prompt=block_state.negative_prompt, height=block_state.height,
                              width=block_state.width)
        seeds = seed_list(block_state.seed, block_state.num_images_per_prompt or 1)
        # prompt-major order, as the stock steps repeat each prompt `num_images_per_prompt` times
        candidates = [prepare(sampler, plan, index, seeds) for index in range(len(prompts))]
        noise = torch.cat([c.noise for c in candidates])
        dtype = getattr(sampler.adapter, "latents_dtype", None) or sampler.dtype  # as the sampler casts them
        state.set("latents", sampler.adapter.stock_latents(noise).to(sampler.device, dtype))
        if block_state.generator is None:  # stochastic schedulers draw from each seed's own generator
            state.set("generator", [g for c in candidates for g in c.generators()])
        return self.stock_step(components, state)


def _latent_steps(blocks, path=""):
    """`(parent, name, path)` of every block named `prepare_latents` under `blocks` (flattened workflows name it
    `...prepare_latents` with dots)."""
    found = []
    for name, block in (blocks.sub_blocks or {}).items():
        where = f"{path}/{name}" if path else name
        if name.split(".")[-1] == "prepare_latents":
            found.append((blocks, name, where))
        found += _latent_steps(block, where)
    return found


def with_noise_plan(blocks, *, plan=None):
    """A copy of the text-to-image `blocks` whose `prepare_latents` step is wrapped in `NoisePlanLatentsStep`.

    Examples:
        >>> blocks = with_noise_plan(StableDiffusionXLAutoBlocks().get_workflow("text2image"), plan=NoisePlan(nlg={}))
        >>> pipe = blocks.init_pipeline("stabilityai/stable-diffusion-xl-base-1.0")
        >>> pipe.load_components(torch_dtype=torch.float16)
        >>> images = pipe(prompt="a red circle", seed=0, num_images_per_prompt=4, output="images")
    """
    if plan is not None and plan.search is not None:
        raise ValueError("a search stage cannot run inside a modular pipeline's latent step (it runs the denoising "
                         "loop itself): call noisekit.search or noisekit.generate with the pipeline.")
    blocks = copy.deepcopy(blocks)
    image_inputs = sorted({param.name for param in blocks.inputs} & set(IMAGE_INPUTS))
    if image_inputs:
        raise ValueError(f"these blocks start from an image (inputs {image_inputs}); noisekit's noise plan is for "
                         "text-to-image: take `blocks.get_workflow('text2image')`.")
    steps = _latent_steps(blocks)
    if len(steps) != 1:
        where = ", ".join(path for _, _, path in steps) or "none"
        raise ValueError(f"with_noise_plan needs exactly one `prepare_latents` block, found {len(steps)} ({where}): "
                         "take one workflow first, e.g. `blocks.get_workflow('text2image')`.")
    parent, name, _ = steps[0]
    if isinstance(parent.sub_blocks[name], NoisePlanLatentsStep):
        raise ValueError("these blocks already carry a noise plan.")
    parent.sub_blocks[name] = NoisePlanLatentsStep(parent.sub_blocks[name], plan=plan)
    return blocks
