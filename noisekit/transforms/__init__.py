"""Transforms of the initial noise: NPNet golden noise, Noise Level Guidance, and the NPD that trains NPNet."""
