"""User input is checked once, where it enters (MixtralModel.forward), not again in every layer."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

import mixtral_edu

from pairs import random_ids, tiny_kwargs


class CountValueReads(TorchFunctionMode):
    """Counts reductions whose value Python reads back (max, min, aminmax): each is a device sync on a GPU."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("max", "min", "aminmax"):
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layers", [1, 4])
def test_position_ids_are_read_once_per_call_whatever_the_depth(layers):
    torch.manual_seed(0)
    model = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**tiny_kwargs(num_hidden_layers=layers))).eval()
    ids = random_ids(2, 5)
    with torch.no_grad(), CountValueReads() as counter:
        model(ids, position_ids=torch.arange(5)[None].expand(2, 5))
    # input_ids' range (min and max) and the position ids' range (one aminmax), none per layer
    assert counter.n == 3


@pytest.mark.parametrize("positions", [[0, 1, 2, 3, 5], [-1, 0, 1, 2, 3]], ids=["past the keys", "negative"])
def test_position_ids_outside_the_keys_name_the_problem_and_the_fix(positions):
    torch.manual_seed(0)
    model = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**tiny_kwargs())).eval()
    with pytest.raises(ValueError, match=r"position_ids lie in .* cover positions 0 \.\. 4.*cumsum"):
        model(random_ids(1, 5), position_ids=torch.tensor([positions]))
