r"""What :meth:`EGBAS.sample` and :meth:`EGBAS.epsilon_sample` return."""

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ...._utils.deprecation import warn_deprecated
from ...._utils.distance import mean_pairwise_distance
from ...._utils.results import InterpretationResult, result_dataclass
from ...._utils.validation import check_positive_int

__all__ = ["EGBASResult", "EGBASWarning", "tree_depths"]


def tree_depths(parents: Tensor) -> Tensor:
    """Depth of every node (``1`` for a child of the root) from ``parents``
    (``-1`` is the root), by pointer jumping on tensors."""
    depth = torch.ones_like(parents)
    up = parents.clone()
    while bool((up >= 0).any()):
        has = up >= 0
        depth = depth + has.long()
        up = torch.where(has, parents[up.clamp_min(0)], up)
    return depth


class _Spread:
    """What ``result.mean_pairwise_distance`` gives: call it with a space, or
    (deprecated) use it as the number it used to be, the latent spread."""

    __slots__ = ("_result",)

    def __init__(self, result: "EGBASResult") -> None:
        self._result = result

    def __call__(self, space: str = "latents") -> float:
        return self._result._spread(space)

    def _number(self) -> float:
        warn_deprecated(
            "EGBASResult.mean_pairwise_distance is a method now: call "
            "mean_pairwise_distance() (space='latents' or 'outputs')",
            stacklevel=4,
        )
        return self._result._spread("latents")

    def __repr__(self) -> str:
        return "<method EGBASResult.mean_pairwise_distance(space='latents')>"


def _as_number(name: str):
    def method(self, *args):
        return getattr(float, name)(self._number(), *args)

    method.__name__ = name
    return method


for _name in (
    "__float__", "__int__", "__bool__", "__format__", "__round__", "__neg__",
    "__abs__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
    "__rmul__", "__truediv__", "__rtruediv__", "__lt__", "__le__", "__gt__",
    "__ge__", "__eq__", "__ne__",
):  # fmt: skip
    setattr(_Spread, _name, _as_number(_name))
_Spread.__hash__ = None  # type: ignore[assignment]


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
        n_passes (int or None): forward passes of candidates (E-GBAS).
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
    n_passes: Optional[int] = None
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
        return int(self.in_region.sum()) / self.n_samples

    @property
    def proposal_acceptance_rate(self) -> float:
        """Samples found per candidate evaluated (the cost of the search)."""
        if not self.n_proposed:
            return float("nan")
        return self.n_samples / float(self.n_proposed)

    @property
    def mean_pairwise_distance(self) -> "_Spread":
        r"""Mean L2 distance over pairs of samples, the spread: a method,
        ``mean_pairwise_distance(space="latents")``.

        Args:
            space (str, optional): ``"latents"`` or ``"outputs"`` (flattened).
                Default: "latents"

        Returns:
            float: NaN below two samples.

        Reading it as a number without calling it (the property it used to
        be) still gives the latent spread, with a ``FutureWarning``.
        """
        return _Spread(self)

    def _spread(self, space: str) -> float:
        if space not in ("latents", "outputs"):
            raise ValueError(f"space must be 'latents' or 'outputs', got {space!r}")
        return mean_pairwise_distance(getattr(self, space))

    @property
    def tree_depth(self) -> int:
        """Edges from the query to the deepest sample (1 for epsilon samples,
        0 without samples)."""
        if self.n_samples == 0:
            return 0
        return int(tree_depths(self.tree).max())

    @property
    def mean_distance_to_query(self) -> float:
        """Mean L2 distance from the samples' latents to ``z0``."""
        if self.n_samples == 0:
            return float("nan")
        diff = self.latents.flatten(1).float() - self.query.flatten().float()
        return float(diff.norm(dim=1).mean())

    @property
    def output_diversity(self) -> float:
        """``mean_pairwise_distance("outputs")``: the spread of the outputs."""
        return self._spread("outputs")

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
            "tree_depth": self.tree_depth,
            "n_passes": self.n_passes,
            "mean_pairwise_distance": self._spread("latents"),
            "mean_distance_to_query": self.mean_distance_to_query,
            "output_diversity": self._spread("outputs"),
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
                out-of-region samples in red. ``"difference"``: each sample's
                output minus the query's, averaged over channels, on a
                diverging colour scale symmetric about 0 (samples of a
                generative region often look alike; this shows what
                changes). Default: "samples"
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
        if kind not in ("samples", "tree", "difference"):
            raise ValueError(
                f"kind must be 'samples', 'tree' or 'difference', got {kind!r}"
            )
        check_positive_int("max_samples", max_samples)
        if title is None:
            title = (
                f"{self.method}: {self.n_samples} samples, "
                f"{100 * self.acceptance_rate:.0f}% in region"
            )
        if kind == "samples":
            return self._plot_samples(max_samples, title, plt_fig_axis, fig_size)
        if kind == "difference":
            return self._plot_difference(max_samples, title, plt_fig_axis, fig_size)
        return self._plot_tree(title, plt_fig_axis, fig_size)

    def _plot_samples(self, max_samples, title, plt_fig_axis, fig_size):
        from ....visualization import visualize_image_grid

        self._check_images("samples")
        n = min(self.n_samples, max_samples)
        images = torch.cat(
            [self.query_output.unsqueeze(0), self.outputs[:n]], dim=0
        ).float()
        low, high = float(images.min()), float(images.max())
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        # Only the exceptions are captioned: a label on every tile hides them.
        captions = ["query"] + [
            "" if bool(flag) else "out" for flag in self.in_region[:n]
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

    def _check_images(self, kind: str) -> None:
        if self.query_output.dim() not in (2, 3):
            raise ValueError(
                f"kind={kind!r} needs image outputs (C, H, W); got outputs of "
                f"shape {tuple(self.query_output.shape)}; use kind='tree'"
            )

    def _plot_difference(self, max_samples, title, plt_fig_axis, fig_size):
        from ....visualization import visualize_image_grid

        self._check_images("difference")
        if self.n_samples == 0:
            raise ValueError("kind='difference' needs at least one sample")
        n = min(self.n_samples, max_samples)
        query = self.query_output.float()
        diff = self.outputs[:n].float() - query.unsqueeze(0)
        if diff.dim() == 4:
            diff = diff.mean(dim=1)  # (n, H, W): the change, all channels
        scale = float(diff.abs().max()) or 1.0
        captions = ["" if bool(f) else "out" for f in self.in_region[:n]]
        fig, ax = visualize_image_grid(
            diff,
            titles=captions,
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
            title=f"{title}: output - query (colour range +/-{scale:.2g})",
            plt_fig_axis=plt_fig_axis,
            fig_size=fig_size,
        )
        return fig, ax

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
        xy = xy.cpu().numpy()
        fig, ax = figure_axis(plt_fig_axis, fig_size)
        for child, parent in enumerate(self.tree.tolist()):
            a, b = xy[parent + 1], xy[child + 1]
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.7", lw=0.6, zorder=1)
        inside = self.in_region.cpu().numpy().astype(bool)
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
