r"""What :meth:`EGBAS.sample` and :meth:`EGBAS.epsilon_sample` return."""

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ...._utils.distance import mean_pairwise_distance
from ...._utils.results import InterpretationResult, result_dataclass
from ...._utils.validation import check_positive_int

__all__ = ["EGBASResult", "EGBASWarning"]


class EGBASWarning(UserWarning):
    """Raised as a warning when the tree stops early or a mask is empty."""


@result_dataclass
class EGBASResult(InterpretationResult):
    r"""Samples around a query latent, from :meth:`EGBAS.sample` or
    :meth:`EGBAS.epsilon_sample`.

    Attributes:
        query (Tensor): the query latent ``z0``, shape ``latent_shape``.
        query_output (Tensor): ``G(z0)``, shape ``output_shape``.
        latents (Tensor): the samples, ``(n, *latent_shape)``. ``n`` is
            ``n_requested`` unless the tree stopped early (see ``complete``);
            results are never padded.
        outputs (Tensor): ``G`` of the samples, ``(n, *output_shape)``.
        mask (Tensor): bool, the layer's shape without batch: the supporting
            generative boundaries that define the region.
        in_region (Tensor): bool ``(n,)``, whether each sample has the query's
            sign pattern on ``mask``. All True for E-GBAS samples.
        tree (Tensor): long ``(n,)``, the parent of each sample in
            ``latents`` (``-1`` is the query). Epsilon samples all have
            parent ``-1``.
        method (str): ``"egbas"`` or ``"epsilon"``.
        complete (bool): False when fewer than ``n_requested`` samples were
            found.
        n_requested (int): the ``n_samples`` asked for.
        n_proposed (int): candidates evaluated to find the samples.
        step_size (float or None): the RRT step (E-GBAS).
        epsilon (float or None): the ball radius (epsilon sampling).
    """

    query: Optional[Tensor] = None
    query_output: Optional[Tensor] = None
    latents: Optional[Tensor] = None
    outputs: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    in_region: Optional[Tensor] = None
    tree: Optional[Tensor] = None
    method: Optional[str] = None
    complete: Optional[bool] = None
    n_requested: Optional[int] = None
    n_proposed: Optional[int] = None
    step_size: Optional[float] = None
    epsilon: Optional[float] = None

    @property
    def n_samples(self) -> int:
        """Number of samples held (``len(latents)``)."""
        return int(self.latents.shape[0])

    @property
    def acceptance_rate(self) -> float:
        """Fraction of the samples inside the generative region."""
        if self.n_samples == 0:
            return float("nan")
        return float(self.in_region.float().mean())

    @property
    def proposal_acceptance_rate(self) -> float:
        """Samples found per candidate evaluated (the cost of the search)."""
        if not self.n_proposed:
            return float("nan")
        return self.n_samples / float(self.n_proposed)

    @property
    def mean_pairwise_distance(self) -> float:
        """Mean L2 distance between two samples' latents (the spread)."""
        return mean_pairwise_distance(self.latents)

    @property
    def mean_distance_to_query(self) -> float:
        """Mean L2 distance from the samples' latents to ``z0``."""
        if self.n_samples == 0:
            return float("nan")
        diff = self.latents.flatten(1).float() - self.query.flatten().float()
        return float(diff.norm(dim=1).mean())

    @property
    def output_diversity(self) -> float:
        """Mean L2 distance between two samples' outputs."""
        return mean_pairwise_distance(self.outputs)

    @property
    def mask_size(self) -> int:
        """Number of supporting boundaries (True units of ``mask``)."""
        return int(self.mask.sum())

    def summary(self) -> Dict[str, Any]:
        """The figures above as a dict of plain numbers."""
        return {
            "method": self.method,
            "n_samples": self.n_samples,
            "complete": self.complete,
            "acceptance_rate": self.acceptance_rate,
            "proposal_acceptance_rate": self.proposal_acceptance_rate,
            "mean_pairwise_distance": self.mean_pairwise_distance,
            "mean_distance_to_query": self.mean_distance_to_query,
            "output_diversity": self.output_diversity,
            "mask_size": self.mask_size,
            "layer_size": int(self.mask.numel()),
        }

    def plot(
        self,
        kind: str = "samples",
        max_samples: int = 24,
        title: Optional[str] = None,
        plt_fig_axis: Optional[Tuple] = None,
        fig_size: Tuple[float, float] = (6, 6),
    ):
        r"""Draw the samples.

        Args:
            kind (str, optional): ``"samples"``: the query's output followed by
                the samples' outputs as an image grid (outputs must be images
                ``(C, H, W)``; out-of-region samples are captioned ``out``).
                ``"tree"``: the latents projected on their first two principal
                components, with the tree's edges, the query as a star and
                out-of-region samples in red. Default: "samples"
            max_samples (int, optional): at most this many samples in the
                image grid. Default: 24
            title (str, optional): axis title. Default: the method and the
                acceptance rate.
            plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
                Default: None (a new figure)
            fig_size (tuple, optional): size of a new figure. Default: (6, 6)

        Returns:
            ``(fig, ax)``
        """
        if kind not in ("samples", "tree"):
            raise ValueError(f"kind must be 'samples' or 'tree', got {kind!r}")
        check_positive_int("max_samples", max_samples)
        if title is None:
            title = (
                f"{self.method}: {self.n_samples} samples, "
                f"{100 * self.acceptance_rate:.0f}% in region"
            )
        if kind == "samples":
            return self._plot_samples(max_samples, title, plt_fig_axis, fig_size)
        return self._plot_tree(title, plt_fig_axis, fig_size)

    def _plot_samples(self, max_samples, title, plt_fig_axis, fig_size):
        from ....visualization import visualize_image_grid

        if self.query_output.dim() not in (2, 3):
            raise ValueError(
                "kind='samples' needs image outputs (C, H, W); got outputs of "
                f"shape {tuple(self.query_output.shape)}; use kind='tree'"
            )
        n = min(self.n_samples, max_samples)
        images = torch.cat(
            [self.query_output.unsqueeze(0), self.outputs[:n]], dim=0
        ).float()
        low, high = float(images.min()), float(images.max())
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        captions = ["query"] + [
            "in" if bool(flag) else "out" for flag in self.in_region[:n]
        ]
        return visualize_image_grid(
            images,
            titles=captions,
            vmin=low,
            vmax=high,
            title=title,
            plt_fig_axis=plt_fig_axis,
            fig_size=fig_size,
        )

    def _plot_tree(self, title, plt_fig_axis, fig_size):
        from ....visualization import figure_axis

        points = torch.cat(
            [self.query.flatten().unsqueeze(0), self.latents.flatten(1)], dim=0
        ).float()
        centred = points - points.mean(0, keepdim=True)
        if points.shape[1] >= 2 and points.shape[0] >= 2:
            _, _, v = torch.linalg.svd(centred, full_matrices=False)
            xy = centred @ v[:2].T
        else:
            xy = torch.cat([centred[:, :1], torch.zeros_like(centred[:, :1])], 1)
        xy = xy.numpy()
        fig, ax = figure_axis(plt_fig_axis, fig_size)
        for child, parent in enumerate(self.tree.tolist()):
            a, b = xy[parent + 1], xy[child + 1]
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.7", lw=0.6, zorder=1)
        inside = self.in_region.numpy().astype(bool)
        ax.scatter(*xy[1:][inside].T, s=10, c="tab:blue", label="in region", zorder=2)
        if (~inside).any():
            ax.scatter(
                *xy[1:][~inside].T, s=10, c="tab:red", label="out of region", zorder=2
            )
        ax.scatter(*xy[0], s=120, marker="*", c="black", label="query", zorder=3)
        ax.set_xlabel("latent PC 1")
        ax.set_ylabel("latent PC 2")
        ax.legend(loc="best", fontsize="small")
        ax.set_title(title)
        return fig, ax
