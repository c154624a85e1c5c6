"""`NoiseRecipe`: the JSON record of how a noise was made, which replays to the identical tensor.

A recipe holds the seed, latent shape, dtype and generator convention of the canonical noise, then each
transform applied to it (NPNet, NLG, ...) by registered name with its parameters and the hash of any weights it
used, and the checksum of the result. Transforms register a replay function with `register_transform`; replaying
a transform that needs a pipeline or weights takes them as keyword arguments and checks their hashes.

What replays exactly and what within a tolerance: the seed's noise is bit-exact on any machine. A transform is a
float computation (NPNet, NLG) whose last bits depend on thread count, weight layout in memory, kernels and device,
so its result is recorded twice: a checksum (bit-exact) and a probe (its values at fixed positions). Replay says
"identical" when the checksum matches, "within tolerance" when every probe value is within `TOLERANCE`, and
"different" otherwise. The transform step also records the torch version, device and dtype it ran on.
"""

import json
from dataclasses import asdict, dataclass, field

import torch

from .noise import GENERATOR, noise_checksum, noise_from_seed

_TRANSFORMS = {}
TOLERANCE = 1e-3  # largest probe difference of unit-variance noise still called "within tolerance"
PROBE_SIZE = 64
IDENTICAL, WITHIN_TOLERANCE, DIFFERENT = "identical", "within tolerance", "different"


def noise_probe(noise):
    """The values of `noise` at `PROBE_SIZE` fixed positions (the same positions for every noise of a shape)."""
    flat = noise.detach().to("cpu", torch.float32).reshape(-1)
    positions = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:PROBE_SIZE]
    return [float(v) for v in flat[positions]]


def environment(tensor):
    """Where a transform ran: its float results can differ in the last bits elsewhere."""
    return {"torch": torch.__version__, "device": str(tensor.device), "dtype": str(tensor.dtype).replace("torch.", ""),
            "threads": torch.get_num_threads()}


def register_transform(name, replay_fn):
    """Make transform `name` replayable: `replay_fn(noise, params, weights_hash=, seed=, **context) -> noise` for
    one noise (`seed` is the recipe's; `context` is what `replay` was given, e.g. `pipe=`)."""
    _TRANSFORMS[name] = replay_fn


def list_transforms():
    return sorted(_TRANSFORMS)


@dataclass
class NoiseRecipe:
    seed: int
    shape: tuple
    dtype: str = "float32"
    generator: str = GENERATOR
    transforms: list = field(default_factory=list)  # [{"name", "params", "weights_hash", "environment"}]
    checksum: str | None = None
    probe: list | None = None  # values at fixed positions of a transformed noise (see `noise_probe`)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)

    def then(self, name, params, weights_hash=None, result=None, ran_on=None):
        """A new recipe with transform `name` appended (and the checksum and probe of `result`, if given;
        `ran_on`: a tensor of the device and dtype the transform computed in)."""
        step = {"name": name, "params": params, "weights_hash": weights_hash}
        if ran_on is not None or result is not None:
            step["environment"] = environment(ran_on if ran_on is not None else result)
        checksum = noise_checksum(result) if result is not None else None
        probe = noise_probe(result) if result is not None else None
        return NoiseRecipe(self.seed, self.shape, self.dtype, self.generator, [*self.transforms, step], checksum,
                           probe)

    def base_noise(self):
        return noise_from_seed(self.seed, self.shape)

    def replay(self, verify=True, tolerance=TOLERANCE, **context):
        """Regenerate the noise `(1, *shape)`; with `verify`, raise when it is "different" (see `verify`)."""
        noise = self.replay_unverified(**context)
        if verify:
            status, difference = self.verify(noise, tolerance)
            if status == DIFFERENT:
                raise ValueError(f"replayed noise of seed {self.seed} differs from the recorded one by {difference:.3g} "
                                 f"(tolerance {tolerance}): the weights or code of a transform differ.")
        return noise

    def replay_unverified(self, **context):
        noise = self.base_noise()
        for step in self.transforms:
            if step["name"] not in _TRANSFORMS:
                raise ValueError(f"transform {step['name']!r} is not registered; registered: {list_transforms()}.")
            noise = _TRANSFORMS[step["name"]](noise, step["params"], weights_hash=step["weights_hash"], seed=self.seed,
                                              **context)
        return noise

    def verify(self, noise, tolerance=TOLERANCE):
        """`(status, largest difference)` of `noise` against the record: status is "identical" (same bits),
        "within tolerance" (probe values within `tolerance`) or "different". A seed's noise without transforms
        must be identical."""
        if self.checksum is None or noise_checksum(noise) == self.checksum:
            return IDENTICAL, 0.0
        if not self.transforms or self.probe is None:
            return DIFFERENT, float("inf")
        difference = max(abs(a - b) for a, b in zip(noise_probe(noise), self.probe))
        return (WITHIN_TOLERANCE if difference <= tolerance else DIFFERENT), difference

    def to_dict(self):
        record = asdict(self)
        record["shape"] = list(self.shape)
        return record

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, record):
        unknown = set(record) - {"seed", "shape", "dtype", "generator", "transforms", "checksum", "probe"}
        if unknown:
            raise ValueError(f"a noise recipe has no fields {sorted(unknown)}.")
        if record.get("generator", GENERATOR) != GENERATOR:
            raise ValueError(f"recipe generator {record['generator']!r} is not this version's {GENERATOR!r}.")
        return cls(**record)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


def seed_recipes(seeds, shape, noise=None):
    """One base recipe per seed (with checksums of `noise` rows when given)."""
    recipes = [NoiseRecipe(seed, shape) for seed in seeds]
    if noise is not None:
        for recipe, row in zip(recipes, noise):
            recipe.checksum = noise_checksum(row[None])
    return recipes
