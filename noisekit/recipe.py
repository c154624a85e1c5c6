"""`NoiseRecipe`: the JSON record of how a noise was made, which replays to the identical tensor.

A recipe holds the seed, latent shape, dtype and generator convention of the canonical noise, then each
transform applied to it (NPNet, NLG, ...) by registered name with its parameters and the hash of any weights it
used, and the checksum of the result. Transforms register a replay function with `register_transform`; replaying
a transform that needs a pipeline or weights takes them as keyword arguments and checks their hashes.
"""

import json
from dataclasses import asdict, dataclass, field

from .noise import GENERATOR, noise_checksum, noise_from_seed

_TRANSFORMS = {}


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
    transforms: list = field(default_factory=list)  # [{"name", "params", "weights_hash"}]
    checksum: str | None = None

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)

    def then(self, name, params, weights_hash=None, result=None):
        """A new recipe with transform `name` appended (and the checksum of `result`, if given)."""
        step = {"name": name, "params": params, "weights_hash": weights_hash}
        checksum = noise_checksum(result) if result is not None else None
        return NoiseRecipe(self.seed, self.shape, self.dtype, self.generator, [*self.transforms, step], checksum)

    def base_noise(self):
        return noise_from_seed(self.seed, self.shape)

    def replay(self, verify=True, **context):
        """Regenerate the noise `(1, *shape)`; with `verify`, raise if its checksum differs from the record."""
        noise = self.base_noise()
        for step in self.transforms:
            if step["name"] not in _TRANSFORMS:
                raise ValueError(f"transform {step['name']!r} is not registered; registered: {list_transforms()}.")
            noise = _TRANSFORMS[step["name"]](noise, step["params"], weights_hash=step["weights_hash"], seed=self.seed,
                                              **context)
        if verify and self.checksum is not None and noise_checksum(noise) != self.checksum:
            raise ValueError(f"replayed noise of seed {self.seed} has checksum {noise_checksum(noise)}, "
                             f"the recipe recorded {self.checksum}: the weights or code of a transform differ.")
        return noise

    def to_dict(self):
        record = asdict(self)
        record["shape"] = list(self.shape)
        return record

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, record):
        unknown = set(record) - {"seed", "shape", "dtype", "generator", "transforms", "checksum"}
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
