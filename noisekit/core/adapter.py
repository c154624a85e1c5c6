"""What every family adapter shares: the pipeline it serves, its denoiser, device and dtype, its text encoders."""


class AdapterBase:
    """Subclasses name their denoiser component and text encoders; the rest is the same for every family."""

    denoiser_name = "unet"
    text_encoder_names = ("text_encoder", "text_encoder_2")

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def denoiser(self):
        return getattr(self.pipe, self.denoiser_name)

    @property
    def device(self):
        return self.pipe._execution_device

    @property
    def dtype(self):
        return self.denoiser.dtype

    def text_encoders(self):
        return [e for e in (getattr(self.pipe, n, None) for n in self.text_encoder_names) if e is not None]

    @property
    def vae_scale_factor(self):
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)
