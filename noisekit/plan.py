"""A noise plan: which noise stages run, always in the order library -> golden noise -> NLG (-> search).

`prepare_noise` turns seeds into the noise the sampler (or a stock pipeline's `latents=`) receives, with one
recipe per candidate; `noisekit generate` and the `noisekit.pipelines` classes both go through it, so the two
give the same noise for the same plan.
"""

from dataclasses import dataclass, field

from .library import library_noise
from .nlg import apply_nlg
from .noise import seed_noise
from .npnet_noise import apply_npnet
from .recipe import seed_recipes


@dataclass
class NoisePlan:
    """Args:
        npnet: a loaded `NoisePromptNet` (golden noise), or `None`.
        npnet_resize: allow latents of another size than the NPNet's (Gaussian-preserving resize).
        nlg: `None`, or a dict of `noise_level_guidance` parameters (`{}` for the paper's defaults).
        library: `None`, or `{"path": ..., "attributes": ["NAME=VALUE", ...], "text": ...}`: the seeds come from
            a noise library (NoiseQuery) instead of the caller's; `text` defaults to the prompt (when the library has
            CLIP features), and the caller's seeds only say how many noises are needed.
        search: `None`, or `{"rewards": {name: reward}, "strategy": "best_of_n" | "ttsnap", "budget": ...}`: the
            seeds become candidates of `noisekit.search` and the best one per prompt is returned (pipelines only).
    """

    npnet: object = None
    npnet_resize: bool = False
    nlg: dict | None = None
    library: dict | None = None
    search: dict | None = field(default=None)


def prepare_noise(pipe, prompt, seeds, plan=None, height=None, width=None):
    """Seeds -> `(noise, recipes, nfe)` after the plan's stages, for one prompt.

    The seeds actually used are the recipes' (a library chooses its own); `nfe` counts the denoiser evaluations
    the stages spent (NLG: 2 per image per iteration; a library's were spent when it was built).
    """
    plan = plan or NoisePlan()
    if plan.library is not None:
        options = dict(plan.library)
        unknown = set(options) - {"path", "attributes", "text", "exclude", "temperature", "sample_seed", "mode"}
        if unknown or "path" not in options:
            raise ValueError(f"`library` takes path (required), attributes, text, exclude, temperature, "
                             f"sample_seed, mode; got {sorted(options)}.")
        noise, recipes, _ = library_noise(pipe, options.pop("path"), options.pop("attributes", ()),
                                          text=options.pop("text", None), prompt=prompt, seeds_needed=len(seeds),
                                          height=height, width=width, **options)
    else:
        noise = seed_noise(pipe, seeds, height, width)
        recipes = seed_recipes(seeds, noise.shape[1:], noise)
    nfe = 0
    if plan.npnet is not None:
        noise, recipes = apply_npnet(pipe, plan.npnet, prompt, noise, recipes, resize=plan.npnet_resize)
    if plan.nlg is not None:
        refined, recipes = apply_nlg(pipe, prompt, noise, recipes, **plan.nlg)
        noise, nfe = refined.noise, refined.nfe
    return noise, recipes, nfe
