import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from noisekit import NoiseRecipe, seed_noise
from noisekit.transforms.npnet import SMALL_SWIN, NoisePromptNet, check_fit
from noisekit.transforms.golden import _lift, _pool, apply_npnet, golden_noise, prompt_embeddings
from noisekit.core.recipe import seed_recipes
from noisekit.testing import tiny_sd_pipeline

PROMPT = "a large red circle on a black background"


def small_net(sample_size=16, text_embed_dim=64, max_text_tokens=32, seed=0):
    """The shapes-world configuration (4 x 16 x 16 latents, 32 x 64 prompt embeddings, small Swin)."""
    torch.manual_seed(seed)
    return NoisePromptNet(sample_size=sample_size, text_embed_dim=text_embed_dim, max_text_tokens=max_text_tokens,
                          swin_kwargs=SMALL_SWIN).eval()


def prompt_sensitive(net):
    """Open the prompt and residual terms (alpha = beta = 0 at init leaves only the prompt-blind SVD branch)."""
    with torch.no_grad():
        net.alpha.fill_(0.4)
        net.beta.fill_(0.1)
    return net


def ks_statistic(x):
    """Kolmogorov-Smirnov distance between the empirical distribution of `x` and N(0, 1)."""
    x = x.flatten().double().sort().values
    n = len(x)
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


def neighbour_correlation(x):
    """The larger of the horizontal and vertical lag-1 correlations."""
    pairs = [(x[..., :, :-1], x[..., :, 1:]), (x[..., :-1, :], x[..., 1:, :])]
    return max(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].abs().item() for a, b in pairs)


@pytest.mark.parametrize("config, count", [
    ({}, 30_470_427),  # SDXL / DreamShaper-XL, the official configuration
    ({"text_embed_dim": 1024}, 29_839_643),  # Hunyuan-DiT
    ({"sample_size": 64, "text_embed_dim": 768}, 29_140_379),  # SD 1.5 at 512
])
def test_official_parameter_counts(config, count):
    net = NoisePromptNet(**config)
    assert sum(p.numel() for p in net.parameters()) == count
    if not config:
        branches = {name: sum(p.numel() for p in module.parameters())
                    for name, module in [("svd", net.unet_svd), ("residual", net.unet_embedding),
                                         ("text", net.text_embedding)]}
        assert branches == {"svd": 920_448, "residual": 28_288_401, "text": 1_261_576}
        assert net.unet_embedding.upconv.in_channels == 7 and net.unet_embedding.swin_image_size == (224, 224)
        assert net.alpha.item() == 0.0 and net.beta.item() == 0.0


def test_branch_shapes():
    net = small_net()
    x, embeds = torch.randn(3, 4, 16, 16), torch.randn(3, 32, 64)
    with torch.no_grad():
        features = net.unet_embedding.swin.forward_features(torch.randn(3, 3, 32, 32))
        assert features.shape == (3, 4, 4, 32)  # NHWC, read as NCHW with the 4 token rows as channels
        assert net.unet_embedding.upconv.in_channels == 4
        assert net.unet_embedding(x).shape == (3, 4, 16, 16)
        assert net.unet_svd(x).shape == (3, 4, 16, 16)
        assert net.unet_svd.attention(torch.randn(3, 32, 32)).shape == (3, 32, 32)
        assert net.text_embedding(x, embeds.flatten(1)).shape == (3, 4, 16, 16)
        golden = net(x, embeds)
        assert golden.shape == (3, 4, 16, 16) and golden.dtype == torch.float32
        # alpha = beta = 0 at init: the golden noise is the SVD branch alone, close to the input (+S residual).
        assert torch.equal(golden, net.unet_svd(x))
        assert (golden - x).std() < 0.2
        # one prompt for all rows broadcasts like the official code's [1, T * D]
        assert torch.allclose(net(x, embeds[:1]), golden)


def test_svd_branch_tiles_channels_two_by_two():
    net = small_net()
    torch.nn.init.zeros_(net.unet_svd.mlp4[2].weight)
    torch.nn.init.constant_(net.unet_svd.mlp4[2].bias, 0.5)  # new singular values = S + 0.5
    x = torch.randn(2, 4, 16, 16)
    matrix = torch.cat([torch.cat([x[:, 0], x[:, 1]], 2), torch.cat([x[:, 2], x[:, 3]], 2)], 1)  # [[0, 1], [2, 3]]
    u, _, vh = torch.linalg.svd(matrix)
    expected = matrix + 0.5 * u @ vh
    blocks = [expected[:, :16, :16], expected[:, :16, 16:], expected[:, 16:, :16], expected[:, 16:, 16:]]
    with torch.no_grad():
        assert torch.allclose(net.unet_svd(x), torch.stack(blocks, 1), atol=1e-4)


def test_forward_rejects_wrong_inputs_and_leaves_them_untouched():
    net = small_net()
    x, embeds = torch.randn(2, 4, 16, 16), torch.randn(2, 32, 64)
    before = x.clone(), embeds.clone()
    with torch.no_grad():
        net(x, embeds)
    assert torch.equal(x, before[0]) and torch.equal(embeds, before[1])
    with pytest.raises(ValueError, match=r"`noise` must have shape \(B, 4, 16, 16\)"):
        net(torch.randn(2, 4, 8, 8), embeds)
    with pytest.raises(ValueError, match=r"`prompt_embeds` must have shape \(1 or 2, 32, 64\)"):
        net(x, torch.randn(2, 77, 64))
    with pytest.raises(ValueError, match="`latent_channels` must be a positive integer, got 0"):
        NoisePromptNet(sample_size=16, latent_channels=0, swin_kwargs=SMALL_SWIN)


def _official_layouts(net, folder):
    """`net` written as the official .pth and the two circulating safetensors conversions."""
    parts = {"unet_svd": net.unet_svd.state_dict(), "unet_embedding": net.unet_embedding.state_dict(),
             "embeeding": net.text_embedding.state_dict()}
    pth = folder / "npnet.pth"
    torch.save({**parts, "alpha": net.alpha.detach().clone(), "beta": net.beta.detach().clone()}, pth)
    flat = {f"{part}.{k}": v.contiguous() for part, state in parts.items() for k, v in state.items()}
    flat.update(alpha=net.alpha.detach().clone(), beta=net.beta.detach().clone())
    lucipher = folder / "lucipher.safetensors"
    save_file(flat, lucipher)
    asagi = folder / "asagi.safetensors"
    save_file({k.replace("embeeding.", "text_embedding."): v for k, v in flat.items()}, asagi)
    return [pth, lucipher, asagi]


def test_official_checkpoints_load_in_every_layout(tmp_path):
    net = small_net(seed=3)
    with torch.no_grad():
        net.alpha.fill_(0.3)
        net.beta.fill_(-0.2)
    x, embeds = torch.randn(2, 4, 16, 16), torch.randn(2, 32, 64)
    with torch.no_grad():
        expected = net(x, embeds)
    for path in _official_layouts(net, tmp_path):
        loaded = NoisePromptNet.from_official_checkpoint(str(path), max_text_tokens=32, swin_kwargs=SMALL_SWIN)
        # sample_size and D are read from the weights
        assert (loaded.config.sample_size, loaded.config.text_embed_dim) == (16, 64) and not loaded.training
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
        with torch.no_grad():
            assert torch.equal(loaded(x, embeds), expected)


def test_wrong_checkpoints_are_refused(tmp_path, sd1_pipe):
    # tiny SD pipeline: 77 x 32 prompt embeddings, 4 x 8 x 8 latents for 16 x 16 pixels (VAE factor 2)
    wide = tmp_path / "wide"
    wide.mkdir()
    pth = _official_layouts(small_net(sample_size=8, text_embed_dim=64, max_text_tokens=77), wide)[0]
    with pytest.raises(ValueError, match="takes prompt embeddings of 77 x 64, .* encodes prompts to 77 x 32"):
        NoisePromptNet.from_official_checkpoint(str(pth), pipe=sd1_pipe, swin_kwargs=SMALL_SWIN)
    large = tmp_path / "large"
    large.mkdir()
    pth = _official_layouts(small_net(sample_size=16, text_embed_dim=32, max_text_tokens=77), large)[0]
    with pytest.raises(ValueError, match="trained for 16 x 16 latents, the pipeline's are 8 x 8"):
        NoisePromptNet.from_official_checkpoint(str(pth), pipe=sd1_pipe, swin_kwargs=SMALL_SWIN)
    NoisePromptNet.from_official_checkpoint(str(pth), pipe=sd1_pipe, height=32, width=32, swin_kwargs=SMALL_SWIN)
    NoisePromptNet.from_official_checkpoint(str(pth), pipe=sd1_pipe, resize=True, swin_kwargs=SMALL_SWIN)
    with pytest.raises(ValueError, match="holds an NPNet with sample_size=16, but `sample_size`=128 was given"):
        NoisePromptNet.from_official_checkpoint(str(pth), sample_size=128, swin_kwargs=SMALL_SWIN)
    with pytest.raises(ValueError, match="takes 2464 features, not a multiple of `max_text_tokens` = 5"):
        NoisePromptNet.from_official_checkpoint(str(pth), max_text_tokens=5, swin_kwargs=SMALL_SWIN)
    other = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="an official NPNet .pth is a dict with keys"):
        NoisePromptNet.from_official_checkpoint(str(other))
    flat = tmp_path / "flat.safetensors"
    save_file({"w": torch.zeros(1)}, flat)
    with pytest.raises(ValueError, match="is not an NPNet checkpoint: it lacks"):
        NoisePromptNet.from_official_checkpoint(str(flat))
    with pytest.raises(ValueError, match="`path` must be an NPNet checkpoint file"):
        NoisePromptNet.from_official_checkpoint(str(tmp_path / "missing.pth"))


def test_save_pretrained_round_trip(tmp_path):
    net = small_net(seed=5)
    with torch.no_grad():
        net.beta.fill_(0.7)
    net.save_pretrained(tmp_path)
    loaded = NoisePromptNet.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(net.config) and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    x, embeds = torch.randn(2, 4, 16, 16), torch.randn(1, 32, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, embeds), net(x, embeds))


@pytest.mark.parametrize("size", [(32, 32), (8, 8), (12, 20), (48, 16)])
def test_resize_keeps_the_noise_gaussian(size):
    net = small_net()
    noise = torch.randn(32, 4, *size, generator=torch.Generator().manual_seed(1))
    before = noise.clone()
    generators = [torch.Generator().manual_seed(i) for i in range(32)]
    embeds = torch.randn(1, 32, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = golden_noise(net, noise, embeds, generators)
        nearest = F.interpolate(net(F.interpolate(noise, size=(16, 16)), embeds), size=size)
    assert torch.equal(noise, before) and out.shape == noise.shape
    assert abs(out.mean().item()) < 0.01 and abs(out.std().item() - 1) < 0.01
    assert ks_statistic(out) < 1.36 / math.sqrt(out.numel())  # KS test at 5 % against N(0, 1)
    assert neighbour_correlation(out) < 0.03
    if size[0] > 16 or size[1] > 16:  # nearest-neighbour resizing duplicates pixels
        assert neighbour_correlation(nearest) > 0.2


def test_resize_is_exact():
    net = small_net()
    embeds = torch.randn(1, 32, 64)
    with torch.no_grad():
        # a latent twice the trained size carries exactly the golden noise of its coarse view
        large = torch.randn(2, 4, 32, 32)
        assert torch.allclose(_pool(golden_noise(net, large, embeds), 2, 2), net(_pool(large, 2, 2), embeds),
                              atol=1e-5)
        # pool and lift are adjoint with orthonormal rows
        assert torch.allclose(_pool(_lift(large, 3, 2), 3, 2), large)
        # an identity net (mlp4 = 0, alpha = beta = 0) leaves noise of every size unchanged
        torch.nn.init.zeros_(net.unet_svd.mlp4[2].weight)
        torch.nn.init.zeros_(net.unet_svd.mlp4[2].bias)
        for size in [(16, 16), (32, 32), (8, 8), (12, 20)]:
            noise = torch.randn(2, 4, *size)
            assert torch.allclose(golden_noise(net, noise, embeds, torch.Generator().manual_seed(0)), noise, atol=1e-4)
    with pytest.raises(ValueError, match="`generator` must be a CPU torch.Generator or one per noise row"):
        golden_noise(net, torch.randn(2, 4, 8, 8), embeds)


def test_recipe_replays_npnet_bit_for_bit(sd1_pipe):
    net = prompt_sensitive(small_net(sample_size=8, text_embed_dim=32, max_text_tokens=77))
    noise = seed_noise(sd1_pipe, [4, 5])
    before = noise.clone()
    golden, recipes = apply_npnet(sd1_pipe, net, PROMPT, noise, seed_recipes([4, 5], noise.shape[1:], noise))
    assert torch.equal(noise, before) and golden.shape == noise.shape and golden.dtype == torch.float32
    embeds = sd1_pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]  # the text encoder's hidden states
    with torch.no_grad():
        assert torch.equal(golden[1:], net(noise[1:], embeds))
    recipe = NoiseRecipe.from_json(recipes[1].to_json())
    assert recipe.transforms[0]["name"] == "npnet" and recipe.transforms[0]["weights_hash"]
    assert torch.equal(recipe.replay(pipe=sd1_pipe, npnet=net), golden[1:2])
    with pytest.raises(ValueError, match="is not the one the recipe used"):
        recipe.replay(pipe=sd1_pipe, npnet=small_net(sample_size=8, text_embed_dim=32, max_text_tokens=77, seed=1))
    with pytest.raises(ValueError, match="text encoders .* are not the ones the recipe used"):
        recipe.replay(pipe=tiny_sd_pipeline(seed=1), npnet=net)
    with pytest.raises(ValueError, match="needs the pipeline and the net"):
        recipe.replay(pipe=sd1_pipe)


def test_resized_golden_noise_replays_and_is_refused_without_resize(sd1_pipe):
    # latents 8 x 8 for a net trained at 16 x 16: the resize draws fresh detail from the recipe's seed
    net = prompt_sensitive(small_net(sample_size=16, text_embed_dim=32, max_text_tokens=77))
    noise = seed_noise(sd1_pipe, [0, 1])
    with pytest.raises(ValueError, match="trained for 16 x 16 latents, the pipeline's are 8 x 8"):
        apply_npnet(sd1_pipe, net, PROMPT, noise, seed_recipes([0, 1], noise.shape[1:]))
    golden, recipes = apply_npnet(sd1_pipe, net, [PROMPT, "a blue square"], noise,
                                  seed_recipes([0, 1], noise.shape[1:]), resize=True)
    assert not torch.equal(golden, noise)
    assert torch.equal(recipes[0].replay(pipe=sd1_pipe, npnet=net), golden[:1])
    assert torch.equal(recipes[1].replay(pipe=sd1_pipe, npnet=net), golden[1:])
    with pytest.raises(ValueError, match="`npnet` is in training mode"):
        apply_npnet(sd1_pipe, net.train(), PROMPT, noise, seed_recipes([0, 1], noise.shape[1:]), resize=True)
    net.eval()


def test_sdxl_feeds_what_the_official_code_feeds(sdxl_pipe):
    # 32 + 32: both encoders' penultimate states concatenated
    net = prompt_sensitive(small_net(sample_size=8, text_embed_dim=64, max_text_tokens=77))
    check_fit(net, sdxl_pipe)
    noise = seed_noise(sdxl_pipe, [7])
    golden, _ = apply_npnet(sdxl_pipe, net, PROMPT, noise, seed_recipes([7], noise.shape[1:]))
    official = sdxl_pipe.encode_prompt(prompt=PROMPT, device="cpu")[0]  # as npnet_pipeline.py calls it
    assert torch.equal(prompt_embeddings(sdxl_pipe, [PROMPT], 16, 16), official)
    with torch.no_grad():
        assert torch.equal(golden, net(noise, official))
    image = sdxl_pipe(PROMPT, latents=golden, num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 16, 16)  # VAE factor 2


def test_checkpoint_of_another_residual_branch_is_refused(tmp_path):
    pth = _official_layouts(small_net(), tmp_path)[0]
    with pytest.raises(ValueError, match="does not fit an NPNet with residual branch swin_tiny_patch4_window7_224"):
        NoisePromptNet.from_official_checkpoint(str(pth), max_text_tokens=32)  # the official Swin-T
