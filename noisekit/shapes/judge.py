"""`ShapesJudge`: a small attribute classifier whose reward is how well an image matches its prompt.

It reads background, object count and the presence of each (colour, shape) pair from any scene, and colour,
shape, size and position of the object in one-object scenes. `judge_reward` turns a prompt into the attributes it
states (`parse_caption`) and returns the mean probability the judge gives them: 1 when every stated attribute
is surely there, 0 when none is.
"""

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .captions import parse_caption
from .scenes import BACKGROUNDS, COLORS, POSITION_NAMES, SHAPES, SIZES

HEADS = {
    "background": len(BACKGROUNDS),
    "count": 2,  # one or two objects
    "presence": len(COLORS) * len(SHAPES),  # multi-label: which (colour, shape) pairs appear
    "color": len(COLORS),  # the rest: the single object of one-object scenes
    "shape": len(SHAPES),
    "size": len(SIZES),
    "position": len(POSITION_NAMES),
}
INDEX = {
    "background": list(BACKGROUNDS), "color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES),
    "position": list(POSITION_NAMES),
}


def presence_index(color, shape):
    return INDEX["color"].index(color) * len(SHAPES) + INDEX["shape"].index(shape)


class ShapesJudge(ModelMixin, ConfigMixin):
    """CNN over 64 x 64 RGB images in [-1, 1] -> logits per attribute head (see `HEADS`)."""

    @register_to_config
    def __init__(self, width: int = 32):
        super().__init__()
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1, stride=2), nn.SiLU()]
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Linear(channels[-1] * 16, 256)
        self.heads = nn.ModuleDict({name: nn.Linear(256, size) for name, size in HEADS.items()})

    def features(self, pixels):
        """pixels `(B, 3, 64, 64)` in [-1, 1] -> the features every head reads, `(B, 256)`."""
        return nn.functional.silu(self.hidden(self.trunk(pixels)))

    def head_logits(self, features):
        """`(B, 256)` features -> `{head: logits (B, size)}`."""
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, pixels):
        """pixels `(B, 3, 64, 64)` in [-1, 1] -> `{head: logits (B, size)}`."""
        return self.head_logits(self.features(pixels))


def stated_probabilities(logits, parsed, row):
    """The judge's probability for each attribute the parsed prompt states, for image `row`."""
    probabilities = []
    prob = lambda head, name: logits[head][row].softmax(-1)[INDEX[head].index(name)]  # noqa: E731
    if "background" in parsed:
        probabilities.append(prob("background", parsed["background"]))
    objects = parsed["objects"]
    probabilities.append(logits["count"][row].softmax(-1)[len(objects) - 1])
    if len(objects) == 1:
        obj = objects[0]
        probabilities += [prob("color", obj["color"]), prob("shape", obj["shape"])]
        if "size" in obj:
            probabilities.append(prob("size", obj["size"]))
        if "position" in parsed:
            probabilities.append(prob("position", parsed["position"]))
    else:
        presence = logits["presence"][row].sigmoid()
        probabilities += [presence[presence_index(o["color"], o["shape"])] for o in objects]
    return torch.stack(probabilities)


def parse_prompts(prompts):
    """`parse_caption` of each prompt; a prompt outside the shapes world's grammar raises."""
    parsed = [parse_caption(p) for p in prompts]
    for prompt, p in zip(prompts, parsed):
        if p is None:
            raise ValueError(f"the shapes judge reads prompts of the shapes world's grammar only, got {prompt!r}.")
    return parsed


def reward_of_logits(logits, prompts, *, parsed=None):
    """Mean probability of each prompt's stated attributes under `{head: logits (B, size)}`, `(B,)` in [0, 1];
    `parsed` (the prompts' `parse_prompts`, when the caller has it already) spares parsing them again."""
    parsed = parse_prompts(prompts) if parsed is None else parsed
    return torch.stack([stated_probabilities(logits, p, row).mean() for row, p in enumerate(parsed)])


def judge_reward(judge, pixels, prompts):
    """Mean probability of the prompt's stated attributes, `(B,)` in [0, 1]; pixels `(B, 3, 64, 64)` in [-1, 1]."""
    parsed = parse_prompts(prompts)  # before any compute: a prompt outside the grammar is the caller's error
    return reward_of_logits(judge(pixels), prompts, parsed=parsed)
