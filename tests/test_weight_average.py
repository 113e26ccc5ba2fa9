"""The world stage's moving average of the weights (`--world-ema`): the arithmetic, and that the stage
exports the average (not the last weights) and carries it across a resume."""

from __future__ import annotations

import torch

from worldwalk.runtime.train.train_world import WeightAverage


def test_the_average_follows_the_weights_with_its_decay_ramped_up():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
        model.bias.fill_(0.0)
    avg = WeightAverage(model, decay=0.5)
    expected = 0.0
    for n, value in enumerate((1.0, 2.0, 4.0, 8.0), start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        avg.update()
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert torch.allclose(avg.state_dict()["weight"], torch.full((1, 2), expected))
    assert avg.state_dict()["weight"][0, 0] != model.weight[0, 0]  # an average, not the last weights
    assert torch.equal(avg.state_dict()["bias"], torch.zeros(1))  # never moved


def test_a_resumed_average_starts_from_its_saved_state():
    model = torch.nn.Linear(2, 1)
    saved = {k: torch.full_like(v, 3.0) for k, v in model.state_dict().items()}
    avg = WeightAverage(model, decay=0.9, state=saved)
    assert torch.equal(avg.state_dict()["weight"], torch.full((1, 2), 3.0))
