"""The core every stage runs on: canonical noise and its recipes, candidates, family adapters, the sampler and
the schedule."""
