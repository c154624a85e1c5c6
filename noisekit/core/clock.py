"""Wall-clock seconds of a run by part: denoiser evaluations, VAE decodes and reward-model calls.

GPU work is asynchronous, so each timed block synchronizes the device before it starts and before it stops: the
seconds are those of the work itself, not of its launch. The parts never overlap, so their sum is at most the wall
time around them (the rest is the scheduler, Python and data movement).
"""

import contextlib
import time

import torch

PARTS = ("denoiser", "decode", "reward")


def synchronize(device):
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds spent in each of `PARTS` on `device`, accumulated over a run.

    Examples:
        >>> clock = Clock(torch.device("cpu"))
        >>> with clock.time("reward"):
        ...     scores = reward(images, prompts)
        >>> before = clock.read(); ...; spent = clock.since(before)  # {"denoiser": s, "decode": s, "reward": s}
    """

    def __init__(self, device=None):
        self.device = device
        self.seconds = dict.fromkeys(PARTS, 0.0)

    @contextlib.contextmanager
    def time(self, part):
        if part not in self.seconds:
            raise ValueError(f"`part` must be one of {PARTS}, got {part!r}.")
        synchronize(self.device)
        began = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[part] += time.perf_counter() - began

    def read(self):
        """The seconds so far, by part (a copy, for `since`)."""
        return dict(self.seconds)

    def since(self, reading):
        """Seconds spent in each part since `reading` (an earlier `read()`)."""
        return {part: self.seconds[part] - reading[part] for part in PARTS}
