"""The result of :class:`~captum_inverseset.NeuronProfile`."""

from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..._utils.results import InterpretationResult, result_dataclass

__all__ = ["NeuronProfileResult"]


@result_dataclass
class NeuronProfileResult(InterpretationResult):
    r"""What :meth:`NeuronProfile.interpret` found out about a neuron.

    Attributes:
        activations (Tensor): ``(N,)`` the neuron's activation on every example,
            in dataset order.
        histogram (Tensor): ``(n_bins,)`` counts; bin ``i`` holds the values in
            ``[bin_edges[i], bin_edges[i + 1])``, the last bin also its right
            edge (``numpy.histogram``'s convention).
        bin_edges (Tensor): ``(n_bins + 1,)`` float64 edges.
        top_indices, top_activations, top_examples (Tensor): the ``k`` examples
            with the largest activations (largest first; ties: lower index
            first) and their first input tensor.
        bottom_indices, bottom_activations, bottom_examples (Tensor): the same
            for the smallest activations (smallest first).
        quantiles (Tensor): the requested quantile levels ``(Q,)``.
        quantile_activations, quantile_indices, quantile_examples (Tensor): the
            example of nearest rank :math:`\mathrm{round}(q (N - 1))` in
            ascending order for each level.
        class_means, class_counts (Tensor or None): ``(n_classes,)`` mean
            activation and number of examples per class, when a target was given
            (NaN mean for a class with no example).
        n_examples (int): number of examples.
    """

    activations: Optional[Tensor] = None
    histogram: Optional[Tensor] = None
    bin_edges: Optional[Tensor] = None
    top_indices: Optional[Tensor] = None
    top_activations: Optional[Tensor] = None
    top_examples: Optional[Tensor] = None
    bottom_indices: Optional[Tensor] = None
    bottom_activations: Optional[Tensor] = None
    bottom_examples: Optional[Tensor] = None
    quantiles: Optional[Tensor] = None
    quantile_activations: Optional[Tensor] = None
    quantile_indices: Optional[Tensor] = None
    quantile_examples: Optional[Tensor] = None
    class_means: Optional[Tensor] = None
    class_counts: Optional[Tensor] = None
    n_examples: Any = None
    neuron: Any = None

    def quantile(self, q: Union[float, Sequence[float]]) -> Tensor:
        """Exact (linearly interpolated) quantile(s) of :attr:`activations`."""
        qt = torch.as_tensor(q, dtype=torch.float64)
        if bool(((qt < 0) | (qt > 1)).any()):
            raise ValueError(f"q must lie in [0, 1], got {q!r}")
        return torch.quantile(self.activations.double(), qt)

    def activation_range(
        self, low: float = 0.99, high: Optional[float] = 1.0
    ) -> Tuple[float, float]:
        r"""The band of dataset activations between two quantiles, ``(z1, z2)``.

        Pass it as ``activation_range`` to the samplers (e.g.
        :class:`~captum_inverseset.NeuronInverseSet`): ``low=0.99, high=1.0``
        is the band of the top 1% of dataset activations.

        Args:
            low (float, optional): lower quantile level. Default: 0.99
            high (float or None, optional): upper quantile level; None gives an
                unbounded band ``(z1, inf)``. Default: 1.0

        Returns:
            tuple of float: ``(z1, z2)`` with ``z1 <= z2``.
        """
        if high is not None and not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"low and high must satisfy 0 <= low <= high <= 1, got {low}, {high}"
            )
        z1 = float(self.quantile(low))
        z2 = float("inf") if high is None else float(self.quantile(high))
        return (z1, z2)

    # -- plots ---------------------------------------------------------------

    def plot_histogram(self, plt_fig_axis: Optional[Tuple] = None, **bar_kwargs):
        """Histogram of the activations. Returns ``(fig, ax)``."""
        import matplotlib.pyplot as plt

        fig, ax = plt_fig_axis if plt_fig_axis is not None else plt.subplots()
        edges = self.bin_edges.numpy()
        ax.bar(
            edges[:-1],
            self.histogram.numpy(),
            width=edges[1:] - edges[:-1],
            align="edge",
            **bar_kwargs,
        )
        ax.set_xlabel("activation")
        ax.set_ylabel("examples")
        ax.set_title("activation histogram")
        return fig, ax

    def plot_examples(
        self,
        which: str = "top",
        plt_fig_axis: Optional[Tuple] = None,
        **grid_kwargs,
    ):
        """Grid of the ``"top"``, ``"bottom"`` or ``"quantile"`` examples."""
        from ...visualization import visualize_image_grid

        if which not in ("top", "bottom", "quantile"):
            raise ValueError(
                f"which must be 'top', 'bottom' or 'quantile', got {which!r}"
            )
        images = getattr(self, f"{which}_examples")
        acts = getattr(
            self,
            "quantile_activations" if which == "quantile" else f"{which}_activations",
        )
        if which == "quantile":
            titles = [
                f"q={float(q):.2f}\n{float(a):.2f}"
                for q, a in zip(self.quantiles, acts)
            ]
        else:
            titles = [f"{float(a):.2f}" for a in acts]
        if images is None or images.dim() != 4:
            raise ValueError("the examples are not images (N, C, H, W)")
        grid_kwargs.setdefault("vmin", None)
        grid_kwargs.setdefault("vmax", None)
        return visualize_image_grid(
            images,
            titles=titles,
            title=f"{which} examples",
            plt_fig_axis=plt_fig_axis,
            **grid_kwargs,
        )

    def plot_class_means(self, plt_fig_axis: Optional[Tuple] = None):
        """Bar chart of the mean activation per class."""
        import matplotlib.pyplot as plt

        if self.class_means is None:
            raise ValueError("no target was given, so there are no class means")
        fig, ax = plt_fig_axis if plt_fig_axis is not None else plt.subplots()
        ax.bar(range(len(self.class_means)), self.class_means.numpy())
        ax.set_xlabel("class")
        ax.set_ylabel("mean activation")
        ax.set_title("mean activation per class")
        return fig, ax

    def plot(self, fig_size: Tuple[float, float] = (13, 8.5)):
        """Summary figure: histogram, class means, top/bottom/quantile examples
        (each captioned with its activation) and the summary statistics.

        Example panels are drawn only when the examples are images.

        Returns:
            ``(fig, axes)``
        """
        import matplotlib.pyplot as plt

        images = self.top_examples is not None and self.top_examples.dim() == 4
        fig, axes = plt.subplots(2, 3, figsize=fig_size)
        self.plot_histogram(plt_fig_axis=(fig, axes[0, 0]))
        if self.class_means is not None:
            self.plot_class_means(plt_fig_axis=(fig, axes[0, 1]))
        else:
            axes[0, 1].axis("off")
        for ax, which in zip(
            (axes[0, 2], axes[1, 0], axes[1, 1]), ("top", "bottom", "quantile")
        ):
            if images:
                self.plot_examples(which, plt_fig_axis=(fig, ax))
            else:
                ax.axis("off")
        axes[1, 2].axis("off")
        axes[1, 2].text(
            0.0,
            1.0,
            self._summary(),
            va="top",
            ha="left",
            fontsize=11,
            family="monospace",
            transform=axes[1, 2].transAxes,
        )
        fig.tight_layout()
        return fig, axes

    def _summary(self) -> str:
        a = self.activations.double()
        low, high = self.activation_range(0.99, 1.0)
        rows = [
            ("examples", f"{int(self.n_examples)}"),
            ("mean", f"{float(a.mean()):.3g}"),
            ("std", f"{float(a.std()) if a.numel() > 1 else 0.0:.3g}"),
            ("min", f"{float(a.min()):.3g}"),
            ("max", f"{float(a.max()):.3g}"),
            ("top 1% band", f"[{low:.3g}, {high:.3g}]"),
        ]
        if self.neuron is not None:
            rows.insert(0, ("neuron", str(self.neuron)))
        return "\n".join(f"{k:<12} {v}" for k, v in rows)
