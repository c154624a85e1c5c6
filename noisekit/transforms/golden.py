"""Golden noise in use: NPNet on the pipeline's own prompt embeddings, at any latent size, recorded in recipes.

The prompt embedding is the family adapter's `prompt_sequence` of the positive conditioning (`prompt_embeddings`):
for UNets the one the official code feeds, `pipe.encode_prompt(prompt)[0]` (SD 1.x/2.x: the text encoder's last
hidden states; SDXL: CLIP-L and OpenCLIP-bigG penultimate states concatenated), never the negative or pooled ones;
SD3: its joint CLIP + T5 sequence; FLUX.1: its T5 sequence plus the pooled CLIP embedding as one more token. The
result is canonical `(C, h, w)` noise for `pipe(latents=...)` (packed by the adapter for FLUX), which scales it by
`init_noise_sigma` like any unit-variance noise; on flow models (SD3, FLUX) x_T is the sigma = 1 sample itself.

Sizes other than the trained s x s (the official nets only know 128 x 128) use an exact Gaussian resize. Per axis,
a latent side n and s share the coarse grid g = gcd(n, s); Q_n (g x n) sums blocks of n/g and divides by
sqrt(n/g), so its rows are orthonormal and Q_n x of iid N(0, 1) noise is again iid N(0, 1) (same for Q_s).
With Q_n, Q_s applied along both axes:

    C   = Q_n X                                  the noise's coarse component, iid N(0, 1) on g_h x g_w
    X_s = Q_s^T C + (I - Q_s^T Q_s) E            E: fresh iid N(0, 1) at s x s (only drawn where g < s)
    G   = NPNet(X_s)                             NPNet sees exactly iid N(0, 1) noise of its trained size
    X'  = X + Q_n^T (Q_s G - C)                  X's coarse component replaced by G's, its detail kept

X_s is iid N(0, 1) (a Brownian-bridge split of each coarse cell: same construction as "How I Warped Your Noise").
X' = (I - Q_n^T Q_n) X + Q_n^T Q_s G, and Q_s G depends only on (C, E), which is independent of the detail
(I - Q_n^T Q_n) X; so whenever G is iid N(0, 1), X' is exactly iid N(0, 1): the resize adds no correlation
and no variance change of its own, unlike nearest-neighbour resizing (duplicated pixels). An identity net gives
X' = X exactly. NPNet's edit reaches the latent on the coarse grid: the whole s x s edit when n is a multiple
of s (a larger image gets the golden layout at low frequency), and its block averages when n divides s.
"""

from math import gcd

import torch

from ..core.candidates import Candidates
from ..core.families import adapter_for
from ..core.recipe import register_transform
from ..core.sampler import Sampler
from ..core.weights import module_hash
from .npnet import check_fit, prompt_embeddings  # noqa: F401  (prompt_embeddings re-exported)


def _pool(x, block_height, block_width):
    """Q: block sums divided by sqrt(block size), `(B, C, H, W) -> (B, C, H / bh, W / bw)` (orthonormal rows)."""
    batch, channels, height, width = x.shape
    blocks = x.reshape(batch, channels, height // block_height, block_height, width // block_width, block_width)
    return blocks.sum((3, 5)) / (block_height * block_width) ** 0.5


def _lift(x, block_height, block_width):
    """Q^T: each cell spread over its block, divided by sqrt(block size)."""
    spread = x.repeat_interleave(block_height, dim=2).repeat_interleave(block_width, dim=3)
    return spread / (block_height * block_width) ** 0.5


def golden_noise(npnet, noise, prompt_embeds, generator=None, *, official_train_mode=False):
    """Golden noise for unit-variance `noise` `(B, C, h, w)` of any size (the module docstring's exact resize).

    Args:
        npnet: a `NoisePromptNet` in eval mode.
        prompt_embeds: `(B or 1, T, D)` sequence embeddings of the target pipeline (`pipe.encode_prompt(p)[0]`).
        generator: one CPU `torch.Generator` or one per row, for the fresh detail noise E; needed only when h or w
            is not a multiple of the trained size.

        official_train_mode (`bool`): run the net in training mode, as the official inference script does (it
            never calls `.eval()`): Swin's drop-path is then active, so the golden noise is random (two runs differ
            by up to 0.8) and cannot be replayed. Only to reproduce published numbers.

    Returns: float32 `(B, C, h, w)` on `noise`'s device; `noise` itself is left untouched.
    """
    if official_train_mode:
        was_training = npnet.training
        npnet.train()
        try:
            return golden_noise(npnet, noise, prompt_embeds, generator)
        finally:
            npnet.train(was_training)
    side = npnet.config.sample_size
    batch, channels, height, width = noise.shape
    if (height, width) == (side, side):
        return npnet(noise.to(npnet.device), prompt_embeds.to(npnet.device)).to(noise.device)
    x = noise.detach().float()
    grid_height, grid_width = gcd(height, side), gcd(width, side)
    noise_blocks = (height // grid_height, width // grid_width)
    side_blocks = (side // grid_height, side // grid_width)
    coarse = _pool(x, *noise_blocks)  # C, (B, channels, g_h, g_w)
    trained = _lift(coarse, *side_blocks)  # Q_s^T C, (B, channels, s, s)
    if side_blocks != (1, 1):
        generators = [generator] * batch if isinstance(generator, torch.Generator) else generator
        if generators is None or len(generators) != batch:
            raise ValueError(f"`generator` must be a CPU torch.Generator or one per noise row ({batch}) to resize "
                             f"{height} x {width} noise for an NPNet trained at {side} x {side}, got {generator!r}.")
        fresh = torch.cat([torch.randn((1, channels, side, side), generator=g, dtype=torch.float32)
                           for g in generators])
        fresh = fresh.to(x.device)
        trained = trained + fresh - _lift(_pool(fresh, *side_blocks), *side_blocks)  # X_s
    golden = npnet(trained.to(npnet.device), prompt_embeds.to(npnet.device)).to(x.device)  # G
    return x + _lift(_pool(golden, *side_blocks) - coarse, *noise_blocks)  # X + Q_n^T (Q_s G - C)


def npnet_generator_seed(seed):
    """The seed of the generator that draws the resize's detail noise for a candidate of seed `seed`."""
    return (seed * 2862933555777941757 + 3037000493) % 2**63


def text_encoder_hash(pipe):
    return "+".join(module_hash(encoder) for encoder in adapter_for(pipe).text_encoders())


def _golden_rows(npnet, noise, embeds, seeds):
    """Golden noise row by row (each row replays alone as it ran here); `embeds` holds one `(T, D)` per row."""
    if npnet.training:
        raise ValueError("`npnet` is in training mode (Swin drop-path is random there): call `npnet.eval()`.")
    rows = []
    with torch.no_grad():
        for row, embed, seed in zip(noise, embeds, seeds):
            generator = torch.Generator().manual_seed(npnet_generator_seed(seed))
            rows.append(golden_noise(npnet, row[None].cpu(), embed[None], generator))
    return torch.cat(rows)


def golden_stage(sampler, candidates, npnet, *, resize=False):
    """The golden-noise stage: NPNet on each candidate's noise with its prompt's embedding from the run's
    conditioning (encoded once); each recipe records the step. Costs no denoiser evaluation."""
    adapter = sampler.adapter
    embeds = adapter.prompt_sequence(sampler.conditioning, list(candidates.prompt_index))
    check_fit(npnet, sampler.pipe, sampler.height, sampler.width, resize, text_shape=tuple(embeds.shape[1:]))
    golden = _golden_rows(npnet, candidates.noise, embeds, candidates.seeds)
    weights = module_hash(npnet)
    encoders = "+".join(module_hash(encoder) for encoder in adapter.text_encoders())
    recipes = [r.then("npnet", {"prompt": sampler.prompts[i], "resize": resize, "text_encoder_hash": encoders},
                      weights, result=row[None], ran_on=next(npnet.parameters()))
               for r, i, row in zip(candidates.recipes, candidates.prompt_index, golden)]
    return candidates.transformed(golden, recipes)


def apply_npnet(pipe, npnet, prompt, noise, recipes, resize=False):
    """NPNet as a recipe transform: golden noise for `prompt` (one, or one per row) from `noise` `(N, C, h, w)`.

    Returns `(golden, recipes)`: float32 CPU noise for `pipe(latents=...)`, and `recipes` (one per row) each with
    an "npnet" step holding the prompt and the hashes of the NPNet and of the pipeline's text encoders. Latents of
    another size than the NPNet's are refused unless `resize=True` (the module docstring's Gaussian resize).

    Examples:
        >>> npnet = NoisePromptNet.from_official_checkpoint("sdxl.pth", pipe=pipe)
        >>> noise = seed_noise(pipe, [0, 1])
        >>> golden, recipes = apply_npnet(pipe, npnet, "a red circle", noise, seed_recipes([0, 1], noise.shape[1:]))
        >>> image = pipe("a red circle", latents=golden[:1].to(pipe.dtype)).images[0]
    """
    prompts = [prompt] * len(noise) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(noise):
        raise ValueError(f"`prompt` must be one prompt or one per noise row ({len(noise)}), got {len(prompts)}.")
    if len(recipes) != len(noise):
        raise ValueError(f"`recipes` must hold one recipe per noise row ({len(noise)}), got {len(recipes)}.")
    distinct = list(dict.fromkeys(prompts))
    height, width = adapter_for(pipe).image_size(noise)
    sampler = Sampler(pipe, distinct, num_inference_steps=1, guidance_scale=1.0, height=height, width=width)
    candidates = Candidates(noise.float().cpu(), recipes, [distinct.index(p) for p in prompts])
    out = golden_stage(sampler, candidates, npnet, resize=resize)
    return out.noise, list(out.recipes)


def _replay_npnet(noise, params, weights_hash=None, seed=None, pipe=None, npnet=None, **_):
    if pipe is None or npnet is None:
        raise ValueError("replaying an NPNet step needs the pipeline and the net: recipe.replay(pipe=..., npnet=...).")
    if weights_hash is not None and module_hash(npnet) != weights_hash:
        raise ValueError(f"this NPNet (hash {module_hash(npnet)}) is not the one the recipe used ({weights_hash}).")
    if text_encoder_hash(pipe) != params["text_encoder_hash"]:
        raise ValueError(f"this pipeline's text encoders (hash {text_encoder_hash(pipe)}) are not the ones the recipe "
                         f"used ({params['text_encoder_hash']}).")
    height, width = adapter_for(pipe).image_size(noise)
    embeds = prompt_embeddings(pipe, [params["prompt"]], height, width)
    check_fit(npnet, pipe, height, width, params["resize"], text_shape=tuple(embeds.shape[1:]))
    return _golden_rows(npnet, noise, embeds, [seed])


register_transform("npnet", _replay_npnet)
