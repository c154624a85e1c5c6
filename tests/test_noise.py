import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from noisekit import NoiseRecipe, latent_shape, noise_checksum, register_transform, seed_generators, seed_noise
from noisekit.core.recipe import seed_recipes


def test_seed_noise_shape_dtype_and_unit_variance(sd1_pipe):
    noise = seed_noise(sd1_pipe, range(64))
    assert noise.shape == (64, 4, 8, 8) and noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert abs(noise.std().item() - 1) < 0.05 and abs(noise.mean().item()) < 0.05


def test_same_seed_same_bits_whatever_the_batch(sd1_pipe):
    alone = seed_noise(sd1_pipe, [7])
    mixed = seed_noise(sd1_pipe, [3, 7, 11])
    assert torch.equal(alone[0], mixed[1])
    assert not torch.equal(mixed[0], mixed[1])


def test_matches_diffusers_generator_convention(sd1_pipe):
    # pipe(generator=torch.Generator().manual_seed(s)) draws its latents exactly like this.
    expected = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    assert torch.equal(seed_noise(sd1_pipe, [5]), expected)


def test_size_and_sdxl_shapes(sd1_pipe, sdxl_pipe):
    assert latent_shape(sd1_pipe, 32, 48) == (4, 16, 24)
    assert seed_noise(sdxl_pipe, [0]).shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="multiple of the VAE's downsampling factor 2"):
        latent_shape(sd1_pipe, 17, 16)


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "3", True])
def test_bad_seeds_are_refused(sd1_pipe, bad):
    with pytest.raises(ValueError, match="a seed must be an integer"):
        seed_noise(sd1_pipe, [bad])


def test_generators_continue_after_the_noise_draw():
    generator = seed_generators([9], (4, 8, 8))[0]
    reference = torch.Generator().manual_seed(9)
    torch.randn((1, 4, 8, 8), generator=reference)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=reference))


def test_recipe_json_round_trip_and_replay(sd1_pipe):
    noise = seed_noise(sd1_pipe, [1, 2])
    recipes = seed_recipes([1, 2], noise.shape[1:], noise)
    again = NoiseRecipe.from_json(recipes[1].to_json())
    assert again == recipes[1]
    assert torch.equal(again.replay(), noise[1:2])


def test_replay_applies_registered_transforms_and_checks_the_result():
    def negate(noise, params, **_):
        return noise * params["factor"]

    register_transform("test-scale", negate)
    base = NoiseRecipe(4, (4, 8, 8))
    result = base.base_noise() * -1.0
    recipe = base.then("test-scale", {"factor": -1.0}, result=result)
    assert torch.equal(NoiseRecipe.from_json(recipe.to_json()).replay(), result)
    # last bits changed (another machine): within tolerance, reported with its difference, not an error
    drifted = NoiseRecipe.from_dict({**recipe.to_dict(), "checksum": noise_checksum(result * 2),
                                     "probe": [v + 1e-6 for v in recipe.probe]})
    status, difference = drifted.verify(drifted.replay())
    assert status == "within tolerance" and 0 < difference < 1e-5
    # values changed: different, and replay refuses it
    tampered = NoiseRecipe.from_dict({**drifted.to_dict(), "probe": [v + 0.1 for v in recipe.probe]})
    assert tampered.verify(tampered.replay(verify=False))[0] == "different"
    with pytest.raises(ValueError, match="differs from the recorded one"):
        tampered.replay()
    # a seed's own noise has no tolerance: any other bits are different
    seed_only = NoiseRecipe(4, (4, 8, 8), checksum=noise_checksum(result))
    assert seed_only.verify(seed_only.base_noise())[0] == "different"


def test_unknown_transform_and_fields_are_refused():
    recipe = NoiseRecipe(0, (4, 8, 8), transforms=[{"name": "nope", "params": {}, "weights_hash": None}])
    with pytest.raises(ValueError, match="'nope' is not registered"):
        recipe.replay()
    with pytest.raises(ValueError, match="no fields"):
        NoiseRecipe.from_dict({"seed": 0, "shape": [4, 8, 8], "colour": "red"})


def test_module_hash_follows_weight_changes():
    from noisekit.core.weights import module_hash

    module = torch.nn.Linear(3, 3)
    first = module_hash(module)
    assert module_hash(module) == first  # cached
    with torch.no_grad():
        module.weight.add_(1.0)  # an optimiser step
    second = module_hash(module)
    module.weight.data.mul_(2.0)  # a write through .data, which bumps no version counter
    third = module_hash(module)
    module.half()  # new storage
    assert len({first, second, third, module_hash(module)}) == 4
