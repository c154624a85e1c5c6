"""`aesthetic`: the LAION improved aesthetic predictor, an MLP on L2-normalised CLIP ViT-L/14 image embeddings.

The same five-linear MLP head (no activations, dropout between) also scores ImageReward's BLIP features, so it
lives here as `PreferenceMLP`.
"""

from torch import nn

from .base import Reward, load_official_state_dict, resolve_file
from .clip import load_open_clip, open_clip_transform

AESTHETIC_REPO = "camenduru/improved-aesthetic-predictor"
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
_MLP_LINEARS = (0, 2, 4, 6, 7)  # nn.Sequential indices of the Linear layers; 1, 3, 5 are Dropout


class PreferenceMLP(nn.Module):
    """`layers`: Linear(d, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64), Dropout(0.1),
    Linear(64, 16), Linear(16, 1): the head of the LAION aesthetic predictor (d = 768) and of ImageReward's `mlp`
    (d = 768), with the same `layers.{0,2,4,6,7}.{weight,bias}` keys. Widths are read from a state dict."""

    def __init__(self, widths=(768, 1024, 128, 64, 16, 1)):
        super().__init__()
        w = widths
        self.layers = nn.Sequential(nn.Linear(w[0], w[1]), nn.Dropout(0.2), nn.Linear(w[1], w[2]), nn.Dropout(0.2),
                                    nn.Linear(w[2], w[3]), nn.Dropout(0.1), nn.Linear(w[3], w[4]),
                                    nn.Linear(w[4], w[5]))

    @classmethod
    def from_state_dict(cls, state, prefix=""):
        """The MLP with the widths and weights of `state[prefix + "layers.*"]` (missing keys raise)."""
        names = [f"{prefix}layers.{i}.weight" for i in _MLP_LINEARS]
        missing = [name for name in names if name not in state]
        if missing:
            raise KeyError(f"not a preference-MLP state dict: missing {missing}; expected keys "
                           f"{prefix}layers.{{0,2,4,6,7}}.{{weight,bias}}, found e.g. {sorted(state)[:5]}.")
        widths = [state[names[0]].shape[1]] + [state[name].shape[0] for name in names]
        mlp = cls(tuple(widths))
        own = {k: v for k, v in state.items() if k.startswith(prefix + "layers.")}
        mlp.load_state_dict({k[len(prefix):]: v for k, v in own.items()})
        return mlp.eval()

    def forward(self, features):
        return self.layers(features).squeeze(-1)


class AestheticReward(Reward):
    """LAION improved aesthetic predictor: `mlp(normalize(clip.encode_image(x)))`, prompt-free.

    Scale: AVA ratings, about 1-10 (most generated images 4.5-6.5; FLUX on DrawBench averages about 5.8).
    """

    needs_prompts = False

    def __init__(self, clip_model, mlp, batch_size=16):
        super().__init__(open_clip_transform(clip_model), batch_size)
        self.clip = clip_model
        self.mlp = mlp

    def score_clean(self, pixels, prompts):
        features = self.clip.encode_image(pixels, normalize=True)
        return self.mlp(features.to(self.mlp.layers[0].weight.dtype))


def load_aesthetic(path=None, clip_model="ViT-L-14", clip_pretrained="openai", batch_size=16, *, quick_gelu=None):
    """The `aesthetic` reward (Schuhmann et al., LAION "improved aesthetic predictor", v2).

    Expects the checkpoint `sac+logos+ava1-l14-linearMSE.pth` (trained on SAC + LOGOS + AVA with MSE, for OpenAI
    CLIP ViT-L/14 embeddings): a plain state dict with keys `layers.0.weight`, `layers.0.bias`, `layers.2.*`,
    `layers.4.*`, `layers.6.*`, `layers.7.*`. Mirrors with the same content and keys: the hub repos
    `camenduru/improved-aesthetic-predictor` (same file name, the default) and `trl-lib/ddpo-aesthetic-predictor`
    (`aesthetic-model.pth`, pass it as `path=`). The `...-linearMAE.pth` and ViT-B/32 variants are different
    models; the ViT-B/32 one fails here with a width mismatch. Preprocessing: OpenAI CLIP's (224, bicubic,
    centre crop, OpenAI mean/std) through open_clip. Activation: QuickGELU, as in OpenAI's `clip` package the
    predictor was trained with (open_clip's `ViT-L-14` config alone would give GELU).

    Args:
        path (`str`, *optional*): the MLP checkpoint; by default looked up in the Hugging Face cache.
        clip_model, clip_pretrained (`str`): the open_clip image tower the MLP was trained on (OpenAI ViT-L/14).
        batch_size (`int`): images per forward pass.
        quick_gelu (`bool`, *optional*): the tower's activation; see `load_open_clip` (default: the tag's).

    Examples:
        >>> reward = load_reward("aesthetic", path="ckpts/sac+logos+ava1-l14-linearMSE.pth")
        >>> reward(images)  # no prompts needed
    """
    path = resolve_file("aesthetic", path, AESTHETIC_REPO, AESTHETIC_FILE)
    mlp = PreferenceMLP.from_state_dict(load_official_state_dict(path))
    clip_model, _ = load_open_clip("aesthetic", clip_model, clip_pretrained, quick_gelu=quick_gelu)
    width = getattr(clip_model.visual, "output_dim", None)
    if width != mlp.layers[0].in_features:
        raise ValueError(f"reward 'aesthetic': the MLP in {path} reads {mlp.layers[0].in_features}-d embeddings but "
                         f"the CLIP model gives {width}-d ones; use the ViT-L/14 checkpoint with ViT-L-14 / openai.")
    return AestheticReward(clip_model, mlp, batch_size)
