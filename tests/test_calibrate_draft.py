"""Cheap drafts: every seed run at few steps, the best finished at full steps, the cost counted as spent."""

import numpy as np
import pytest
import torch

from noisekit import Sampler
from noisekit.search.draft import cheap_draft, draft_count
from noisekit.search.strategies import best_of_n

PROMPTS = ["a large red circle in the top left on a black background"]


def brightness(images, prompts, **_):
    return torch.tensor([float(np.array(image, dtype=np.float32).mean()) for image in images])


@pytest.fixture(scope="module")
def samplers(sd1_pipe):
    with torch.no_grad():
        return (Sampler(sd1_pipe, PROMPTS, num_inference_steps=2, guidance_scale=5.0),
                Sampler(sd1_pipe, PROMPTS, num_inference_steps=6, guidance_scale=5.0))


def test_cheap_draft_finishes_the_best_drafts_and_counts_both(samplers):
    drafts, full = samplers
    result = cheap_draft(drafts, full, 0, brightness, seeds=10, num_candidates=6, finish=2)
    ranked = sorted(result.drafts.candidates, key=lambda c: -c.final_scores["reward"])
    assert sorted(result.finished_seeds) == sorted(c.seed for c in ranked[:2])
    assert {c.seed for c in result.final.candidates} == set(result.finished_seeds)
    assert result.nfe == 6 * 2 * 2 + 2 * 6 * 2  # CFG: 2 NFE per step
    assert result.cost == result.nfe + result.reward_calls and result.reward_calls == 8
    again = best_of_n(full, 0, brightness, seeds=result.finished_seeds, num_candidates=2)
    assert again.best.seed == result.best.seed


def test_draft_count_and_errors(samplers):
    assert draft_count(410, draft_cost=9, full_cost=41, finish=4) == 27
    with pytest.raises(ValueError, match="does not fit"):
        draft_count(100, draft_cost=9, full_cost=41, finish=3)
    with pytest.raises(ValueError, match="`finish`"):
        cheap_draft(*samplers, 0, brightness, num_candidates=2, finish=3)
