"""Tiny models for the NeuronShapley tests (built by hand, fixed weights)."""

import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TinyMLP(nn.Module):
    """x -> fc1 -> relu (the players) -> fc2 -> logits."""

    def __init__(self, d_in: int = 3, hidden: int = 5, n_classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


def make_mlp(seed: int = 0, hidden: int = 5) -> TinyMLP:
    torch.manual_seed(seed)
    model = TinyMLP(hidden=hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1.0)
    return model


def brute_force_shapley(
    model: TinyMLP,
    x: torch.Tensor,
    labels: torch.Tensor,
    metric: str,
    removal: str,
) -> torch.Tensor:
    """Shapley values of the hidden units from the definition.

    Removal rewrites fc2 like the paper's code (the removed unit's constant
    output is folded into the bias) and the value is averaged over all P!
    orderings, independently of the library's formulas.
    """
    with torch.no_grad():
        hidden = model.relu(model.fc1(x))
    n = hidden.shape[1]
    fill = hidden.mean(0) if removal == "mean" else torch.zeros(n)

    def value(keep: Sequence[int]) -> float:
        w = model.fc2.weight.detach().clone()
        b = model.fc2.bias.detach().clone()
        for j in range(n):
            if j not in keep:
                b += w[:, j] * fill[j]
                w[:, j] = 0
        out = hidden @ w.T + b
        if metric == "accuracy":
            return (out.argmax(1) == labels).double().mean().item()
        return -F.cross_entropy(out, labels).item()

    cache = {}

    def v(s: frozenset) -> float:
        if s not in cache:
            cache[s] = value(s)
        return cache[s]

    phi = torch.zeros(n, dtype=torch.float64)
    for order in itertools.permutations(range(n)):
        kept = frozenset(range(n))
        for j in order:
            smaller = kept - {j}
            phi[j] += v(kept) - v(smaller)
            kept = smaller
    return phi / math.factorial(n)


def mean_output_metric() -> Callable:
    return lambda out, target: out[:, 0].mean()
