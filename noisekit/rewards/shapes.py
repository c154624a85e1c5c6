"""The shapes-world rewards: `shapes-judge` (attribute classifier) and `shapes-clip` (a small open_clip).

Both load from the repository's `assets/` folder (`noisekit.shapes.assets`) or from an explicit `path`.
"""

from .base import ImageTransform, Reward
from .clip import ClipReward, load_open_clip


class ShapesJudgeReward(Reward):
    """Mean probability the `ShapesJudge` gives to the attributes a shapes-world prompt states.

    Scale: [0, 1]; 1 when every stated attribute (background, count, colour, shape, size, position) is surely
    there. Prompts must follow the shapes world's caption grammar (others raise).
    """

    def __init__(self, judge, batch_size=16):
        # 64 x 64 RGB in [-1, 1]: Normalize(0.5, 0.5) after scaling to [0, 1]
        super().__init__(ImageTransform(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", "shortest"), batch_size)
        self.judge = judge

    def score_clean(self, pixels, prompts):
        from ..shapes.judge import judge_reward

        return judge_reward(self.judge, pixels, prompts)


def load_shapes_judge_reward(path=None, batch_size=16):
    """The `shapes-judge` reward: `assets/shapes-judge` (diffusers `ModelMixin` folder: `config.json` +
    `diffusion_pytorch_model.safetensors`), or the folder `path`. Reads 64 x 64 images (others are resized).

    Examples:
        >>> reward = load_reward("shapes-judge")
        >>> reward(images, ["a small red circle on a white background"] * len(images))
    """
    from ..shapes.assets import load_shapes_judge
    from ..shapes.judge import ShapesJudge

    judge = load_shapes_judge() if path is None else ShapesJudge.from_pretrained(path).eval()
    return ShapesJudgeReward(judge, batch_size)


def load_shapes_clip_reward(path=None, mode="cosine", batch_size=16):
    """The `shapes-clip` reward: cosine similarity under the shapes-world CLIP (`assets/shapes-clip`, an open_clip
    `local-dir:` folder with `open_clip_config.json` + `open_clip_model.safetensors`), or the folder `path`.

    Scale: raw cosine in [-1, 1] by default; `mode` as for `clip` (`"cosine_x100"`, `"hessel"`).

    Examples:
        >>> reward = load_reward("shapes-clip", mode="cosine_x100")
    """
    from ..shapes.assets import asset_path

    folder = asset_path("shapes-clip") if path is None else path
    model, tokenizer = load_open_clip("shapes-clip", f"local-dir:{folder}")
    return ClipReward(model, tokenizer, mode, batch_size)
