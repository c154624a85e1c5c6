"""`noisekit.npnet.NoisePromptNet`: the name pipelines saved by earlier versions record for their NPNet component."""

from .transforms.npnet import NoisePromptNet

__all__ = ["NoisePromptNet"]
