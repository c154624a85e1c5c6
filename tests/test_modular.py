"""diffusers' modular pipelines: noisekit samples tiny SDXL and FLUX `ModularPipeline`s as their classic pipelines
do, the noise-plan block gives `noisekit.generate`'s images through the stock blocks, and what is not supported says
why in one line."""

import numpy as np
import pytest
import torch
from diffusers import (AdaptiveProjectedGuidance, ClassifierFreeGuidance, EulerAncestralDiscreteScheduler,
                       FluxAutoBlocks, StableDiffusionXLAutoBlocks, ZImageAutoBlocks)

import noisekit
from noisekit.core.families import adapter_for
from noisekit.modular import NoisePlanLatentsStep, with_noise_plan
from noisekit.rewards.base import ImageTransform, Reward
from noisekit.testing import tiny_flux_pipeline

from conftest import with_scheduler

PROMPTS = ["a red circle", "a blue square"]
STEPS = 4
# measured max |diff| against the classic path: stock blocks 8.6e-7 (SDXL; the guider runs cond and uncond in two
# UNet calls, noisekit in one batch) and 1.1e-6 (FLUX); noise-plan block with NLG 6.6e-7 (SDXL), 2.0e-6 (SDXL,
# Euler ancestral), 8.6e-6 (FLUX)
TOLERANCE = 1e-4
FAMILIES = {"sdxl": (StableDiffusionXLAutoBlocks, 5.0), "flux": (FluxAutoBlocks, 3.5)}


@pytest.fixture(scope="module")
def flux_pipe():
    return tiny_flux_pipeline(guidance_embeds=True)


def text2image_blocks(family="sdxl"):
    return FAMILIES[family][0]().get_workflow("text2image")


def modular_from(classic, blocks=None, family="sdxl"):
    """A modular pipeline over `classic`'s component objects (CFG at the family's guidance scale when it has a
    guider)."""
    pipe = (blocks or text2image_blocks(family)).init_pipeline()
    components = {name: component for name, component in classic.components.items()
                  if name in pipe.components and component is not None}
    if "guider" in pipe.components:
        components["guider"] = ClassifierFreeGuidance(guidance_scale=FAMILIES[family][1])
    pipe.update_components(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def max_diff(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_noisekit_samples_a_modular_pipeline_as_its_classic_one(request, family):
    classic_pipe, guidance = request.getfixturevalue(f"{family}_pipe"), FAMILIES[family][1]
    modular = modular_from(classic_pipe, family=family)
    noise = noisekit.seed_noise(modular, [0, 1])
    assert torch.equal(noise, noisekit.seed_noise(classic_pipe, [0, 1]))
    settings = dict(num_inference_steps=STEPS, guidance_scale=guidance, output_type="np")
    classic = noisekit.sample(classic_pipe, PROMPTS[0], noise, **settings).images
    through_modular = noisekit.sample(modular, PROMPTS[0], noise, **settings).images
    assert max_diff(through_modular, classic) == 0.0
    # the modular pipeline's own blocks on the same noise give the same images
    stock = modular(prompt=PROMPTS[0], latents=adapter_for(classic_pipe).stock_latents(noise), num_images_per_prompt=2,
                    num_inference_steps=STEPS, output_type="np", output="images",
                    **({"guidance_scale": guidance} if family == "flux" else {}))
    assert max_diff(stock, classic) <= TOLERANCE


# Several prompts with several images each are left out: diffusers 0.42.1's modular SDXL input step tiles the
# pooled embeddings ([p0, p1, p0, p1]) while it repeats the sequence embeddings per prompt ([p0, p0, p1, p1]), so
# its own images differ from the classic pipeline's there, noise plan or not.
@pytest.mark.parametrize("family,prompts,seeds,stochastic", [("sdxl", PROMPTS, [3], False),
                                                             ("sdxl", PROMPTS[:1], [3, 4], True),
                                                             ("flux", PROMPTS, [3], False)])
def test_noise_plan_block_gives_generates_images(request, family, prompts, seeds, stochastic):
    classic = request.getfixturevalue(f"{family}_pipe")
    classic = with_scheduler(classic, EulerAncestralDiscreteScheduler) if stochastic else classic
    guidance = FAMILIES[family][1]
    plan = noisekit.NoisePlan(nlg={"num_iterations": 1})
    modular = modular_from(classic, with_noise_plan(text2image_blocks(family), plan=plan), family)
    images = modular(prompt=prompts, seed=seeds[0], num_images_per_prompt=len(seeds), num_inference_steps=STEPS,
                     output_type="np", output="images", **({"guidance_scale": guidance} if family == "flux" else {}))
    records, _ = noisekit.generate(classic, prompts, seeds, plan=plan, num_inference_steps=STEPS,
                                   guidance_scale=guidance, output_type="np")
    assert [(r["prompt_index"], r["seed"]) for r in records] == [(p, s) for p in range(len(prompts)) for s in seeds]
    assert max_diff(images, np.stack([r["image"] for r in records])) <= TOLERANCE
    # and generate takes the modular pipeline itself
    records_modular, _ = noisekit.generate(modular, prompts, seeds, plan=plan, num_inference_steps=STEPS,
                                           guidance_scale=guidance, output_type="np")
    assert max_diff(np.stack([r["image"] for r in records_modular]), np.stack([r["image"] for r in records])) == 0


class Brightness(Reward):
    """Mean pixel value: a reward with no weights to load."""

    needs_prompts = False

    def __init__(self):
        super().__init__(ImageTransform(16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the reward a device and a dtype

    def score_clean(self, pixels, prompts):
        return pixels.mean(dim=(1, 2, 3))


def test_search_runs_on_a_modular_pipeline(sdxl_pipe):
    settings = dict(num_inference_steps=STEPS, guidance_scale=FAMILIES["sdxl"][1])
    results = []
    for pipe in (sdxl_pipe, modular_from(sdxl_pipe)):
        sampler = noisekit.Sampler(pipe, [PROMPTS[0]], **settings)
        results.append(noisekit.search(sampler, 0, {"brightness": Brightness()}, seeds=0, num_candidates=3,
                                       schedule=()))
    classic, modular = results
    assert modular.best.seed == classic.best.seed and modular.nfe == classic.nfe
    assert [c.final_scores for c in modular.candidates] == [c.final_scores for c in classic.candidates]


def one_line_error(call, *words):
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_unsupported_modular_pipelines_say_why(sdxl_pipe):
    z_image = ZImageAutoBlocks().init_pipeline()
    one_line_error(lambda: noisekit.seed_noise(z_image, [0]), "ZImageModularPipeline is not supported")
    unloaded = text2image_blocks().init_pipeline()
    one_line_error(lambda: noisekit.seed_noise(unloaded, [0]), "load_components")
    other_guider = modular_from(sdxl_pipe)
    other_guider.update_components(guider=AdaptiveProjectedGuidance(guidance_scale=FAMILIES["sdxl"][1]))
    one_line_error(lambda: noisekit.sample(other_guider, "a", noisekit.seed_noise(sdxl_pipe, [0])),
                   "AdaptiveProjectedGuidance")


def test_noise_plan_block_refusals(sdxl_pipe):
    one_line_error(lambda: with_noise_plan(StableDiffusionXLAutoBlocks()), "image")
    one_line_error(lambda: with_noise_plan(text2image_blocks(), plan=noisekit.NoisePlan(
        search={"rewards": {}, "num_candidates": 2})), "noisekit.search")
    blocks = with_noise_plan(text2image_blocks())
    step = blocks.sub_blocks["denoise.before_denoise.prepare_latents"]
    assert isinstance(step, NoisePlanLatentsStep) and step.intermediate_outputs[0].name == "latents"
    one_line_error(lambda: with_noise_plan(blocks), "already")
    modular = modular_from(sdxl_pipe, blocks)
    one_line_error(lambda: modular(prompt="a", latents=noisekit.seed_noise(sdxl_pipe, [0]), output="images"),
                   "`seed`")
