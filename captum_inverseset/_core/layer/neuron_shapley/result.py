"""The result of :meth:`NeuronShapley.interpret`."""

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from ...._utils.results import InterpretationResult, result_dataclass

__all__ = ["NeuronShapleyResult"]


@result_dataclass
class NeuronShapleyResult(InterpretationResult):
    r"""Shapley values of the players (neurons) with their sampling statistics.

    All per-player tensors are flat, ordered layer by layer (the players of
    ``layer_names[0]`` first); :meth:`values_per_layer` reshapes them.

    Attributes:
        values (Tensor): estimated Shapley value of each player, shape ``(P,)``.
        standard_errors (Tensor): standard error of each estimate (zero for an
            exact computation).
        lower_bounds (Tensor): empirical Bernstein lower confidence bound.
        upper_bounds (Tensor): empirical Bernstein upper confidence bound.
        counts (Tensor): number of marginal contributions sampled per player.
        layer_names (list of str): names of the player layers.
        layer_sizes (list of int): number of players of each layer.
        n_permutations (int): permutations sampled in total (all ranks).
        n_evaluations (int): coalitions whose value was computed.
        n_forward_passes (int): batched forward passes (this process).
        value_full (float): :math:`V(N)`, every neuron kept.
        value_empty (float): :math:`V(\emptyset)`, every neuron removed.
        top_k (int or None): the bandit's k.
        top_k_settled (bool): whether the bandit separated the top k.
        settled (Tensor or None): per player, whether the bandit decided its
            membership of the top k (None without a bandit).
        evaluated_counts (Tensor): per player, the contributions actually
            computed (the rest of ``counts`` are zeros of truncated walks).
        bound_delta (float): failure probability of each player's interval
            ``[lower_bounds, upper_bounds]`` (``bandit_delta / P`` with the
            union bound).
        exact (bool): whether values come from full enumeration.
        engine (str): the engine that evaluated the coalitions (see
            :meth:`NeuronShapley.attribute`, ``engine=``).
        prefix_cache (bool): whether the network up to the first player
            layer ran once per batch (every engine but ``"hooks"``).
        segment_cache (bool): whether the model was split at every player
            layer (engines ``"segments"`` and ``"incremental"``).
        incremental (bool): whether the depth-first incremental engine ran.
        metric (str): the metric's name (``"callable"`` for a callable).
        removal (str): the removal strategy's name.
    """

    values: Optional[Tensor] = None
    standard_errors: Optional[Tensor] = None
    lower_bounds: Optional[Tensor] = None
    upper_bounds: Optional[Tensor] = None
    counts: Optional[Tensor] = None
    layer_names: Any = None
    layer_sizes: Any = None
    n_permutations: Any = None
    n_evaluations: Any = None
    n_forward_passes: Any = None
    value_full: Any = None
    value_empty: Any = None
    top_k: Any = None
    top_k_settled: Any = None
    settled: Optional[Tensor] = None
    evaluated_counts: Optional[Tensor] = None
    bound_delta: Any = None
    exact: Any = None
    engine: Any = None
    prefix_cache: Any = None
    segment_cache: Any = None
    incremental: Any = None
    metric: Any = None
    removal: Any = None

    def values_per_layer(self, field: str = "values") -> Tuple[torch.Tensor, ...]:
        """Split a per-player field into one tensor per layer."""
        return tuple(torch.split(getattr(self, field), list(self.layer_sizes)))

    def top_players(self, k: int) -> List[Tuple[str, int]]:
        """The ``k`` highest-valued players as ``(layer name, unit index)``."""
        order = torch.argsort(self.values, descending=True)[:k].tolist()
        return [self.player_name(i) for i in order]

    def player_name(self, index: int) -> Tuple[str, int]:
        start = 0
        for name, size in zip(self.layer_names, self.layer_sizes):
            if index < start + size:
                return name, index - start
            start += size
        raise IndexError(f"player {index} out of range")

    def plot(
        self,
        top: Optional[int] = 30,
        plt_fig_axis: Optional[tuple] = None,
        title: Optional[str] = None,
    ):
        """Bar chart of the largest values with standard-error bars.

        Args:
            top (int, optional): number of players shown (largest values).
                None shows every player. Default: 30
            plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
                Default: None
            title (str, optional): axis title. Default: None

        Returns:
            (fig, ax): the matplotlib figure and axis.
        """
        from ....visualization import figure_axis

        fig, ax = figure_axis(plt_fig_axis, (8, 3.5))
        order = torch.argsort(self.values, descending=True)
        if top is not None:
            order = order[:top]
        idx = order.tolist()
        labels = [f"{n}[{u}]" for n, u in (self.player_name(i) for i in idx)]
        ax.bar(
            range(len(idx)),
            self.values[idx].numpy(),
            yerr=self.standard_errors[idx].numpy(),
            color="tab:blue",
            capsize=2,
        )
        ax.set_xticks(range(len(idx)))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_ylabel(f"Shapley value ({self.metric})")
        ax.set_title(title or "Neuron Shapley")
        fig.tight_layout()
        return fig, ax
