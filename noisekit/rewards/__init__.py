"""Reward models as a registry: `list_rewards()`, `load_reward(name, **kwargs)`, `add_reward(name, constructor)`.

| name | model | weights | scale |
|---|---|---|---|
| `clip` | open_clip, any architecture | pretrained tag or file | cosine, or 100 cos, or 2.5 max(cos, 0) |
| `pickscore` | CLIP ViT-H/14 (transformers) | `yuvalkirstain/PickScore_v1` | about 100 cos, ~18-24 |
| `hpsv2`, `hpsv2.1` | open_clip ViT-H-14, letterbox | `xswu/HPSv2` `HPS_v2*_compressed.pt` | cosine, ~0.2-0.35 |
| `hpsv2-ttsnap`, `hpsv2.1-ttsnap` | the same, TTSnap's centre crop | the same | the same |
| `aesthetic` | MLP on CLIP ViT-L/14 | `sac+logos+ava1-l14-linearMSE.pth` | AVA 1-10 |
| `imagereward` | BLIP + MLP (transformers) | `THUDM/ImageReward` `ImageReward.pt` | normalised, ~N(0, 1) |
| `shapes-judge` | `ShapesJudge` | `assets/shapes-judge` | probability, [0, 1] |
| `shapes-clip` | small open_clip | `assets/shapes-clip` | cosine |
| `shapes-judge-noise-aware` | `ShapesJudge`, sigma adapter | `assets/shapes-judge-noise-aware` | probability |
| `shapes-judge-latent` | `LatentTwin`, the judge's heads | `assets/shapes-judge-latent` | probability (x0 latents) |
| `noise-aware`, `noise-aware-latent` | distilled from any registry reward | a folder (`path=`) | the teacher's |

Every reward is called as `reward(images, prompts) -> (B,)` (see `noisekit.rewards.base`).
"""

from .aesthetic import load_aesthetic
from .base import ImageTransform, NoiseAwareReward, Reward, ignore_sigma
from .clip import load_clip, load_hps
from .combine import RewardEnsemble, combine_scores, normalize_scores, rank_sum, top_positions
from .imagereward import load_imagereward
from .pickscore import load_pickscore
from .shapes import load_shapes_clip_reward, load_shapes_judge_reward

from .registry import add_reward, list_rewards, load_reward

__all__ = [
    "ImageTransform", "NoiseAwareReward", "Reward", "RewardEnsemble", "add_reward", "combine_scores", "ignore_sigma",
    "list_rewards", "load_aesthetic", "load_clip", "load_hps", "load_imagereward", "load_pickscore", "load_reward",
    "load_shapes_clip_reward", "load_shapes_judge_reward", "normalize_scores", "rank_sum", "top_positions",
]
