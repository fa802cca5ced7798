"""The result of inverse-set sampling: :class:`InverseSetResult`."""

from typing import Any, Optional, Tuple

from torch import Tensor

from ...._utils.distance import mean_pairwise_distance
from ...._utils.results import InterpretationResult, result_dataclass
from ...._utils.validation import check_positive_int

__all__ = ["BandUnreachableWarning", "InfeasibleSamplesWarning", "InverseSetResult"]


class InfeasibleSamplesWarning(UserWarning):
    """Some samples are outside their band(s): they are returned (flagged
    ``feasible=False`` in :class:`InverseSetResult`), not dropped."""


class BandUnreachableWarning(InfeasibleSamplesWarning):
    """The early reachability probe did not get close to the band(s): the
    sampling goes on, but the band may be out of the neuron's reach."""


@result_dataclass
class InverseSetResult(InterpretationResult):
    r"""A sample of a neuron's inverse set.

    Attributes:
        inputs (Tensor): ``(n_samples, *input_shape)`` samples in the model's
            input space.
        codes (Tensor): ``(n_samples, *code_shape)`` the codes the samples
            were generated from (generator latents, or the parameters of the
            input parameterization).
        activations (Tensor): ``(n_samples,)`` the neuron's value at each
            sample (the first constraint).
        constraint_activations (Tensor): ``(n_samples, n_constraints)`` the
            value of every constrained neuron (column 0 is ``activations``).
        feasible (Tensor): ``(n_samples,)`` bool, True where every constrained
            neuron is inside its band. Samples that never became feasible
            within ``max_steps`` are kept and flagged False.
        encodings (Tensor): ``(n_samples, d)`` the encodings :math:`E(x)` the
            spread was measured in.
        steps (Tensor): ``(n_samples,)`` optimisation steps taken by each
            sample's batch.
        activation_ranges (list): ``[z1, z2]`` of every constraint.
        constraint_method (str): ``"augmented_lagrangian"``.
        batch_size (int): samples optimised together (``K``).
        elapsed_s (float): wall-clock seconds of the sampling.
        starts (list of str): where the batches started, in order of first
            use: ``"data"`` (in-band examples of ``data``), ``"screen"``
            (prior draws nearest the band), ``"given"`` (``init_codes`` or
            ``attribute``'s inputs), ``"warm"`` (the previous batch's feasible
            samples plus noise), ``"random"``.
        data_baseline (dict): with ``data``, what simply picking dataset
            examples gives: ``n_examined``, ``n_in_band``, ``covers_band``
            (at least ``n_samples`` examples are in the band), and the mean
            pairwise distances (``"encodings"``, ``"inputs"``) of a
            ``"random"`` and a ``"farthest"``-point pick of ``n_samples``
            in-band examples.
        notes (list of str): what the user should know (an unreachable band,
            data that already covers the band).
    """

    inputs: Optional[Tensor] = None
    codes: Optional[Tensor] = None
    activations: Optional[Tensor] = None
    constraint_activations: Optional[Tensor] = None
    feasible: Optional[Tensor] = None
    encodings: Optional[Tensor] = None
    steps: Optional[Tensor] = None
    activation_ranges: Any = None
    constraint_method: Any = None
    batch_size: Any = None
    elapsed_s: Any = None
    starts: Any = None
    data_baseline: Any = None
    notes: Any = None

    @property
    def activation_range(self) -> Tuple[float, float]:
        """``(z1, z2)`` of the sampled neuron."""
        lo, hi = self.activation_ranges[0]
        return float(lo), float(hi)

    @property
    def n_samples(self) -> int:
        return int(self.codes.shape[0])

    @property
    def feasible_fraction(self) -> float:
        """Fraction of samples inside every band."""
        return float(self.feasible.float().mean())

    def summary(self) -> dict:
        """The quality figures: fraction in band, spread of the samples in
        the encodings and in input space, and the dataset baseline if any."""
        out = {
            "n_samples": self.n_samples,
            "fraction_in_band": self.feasible_fraction,
            "spread_encodings": self.mean_pairwise_distance("encodings"),
            "spread_inputs": self.mean_pairwise_distance("inputs"),
        }
        if self.data_baseline:
            out["data_baseline"] = self.data_baseline
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def mean_pairwise_distance(
        self, space: str = "encodings", feasible_only: bool = False
    ) -> float:
        r"""Mean Euclidean distance over all pairs of samples.

        Computed in row chunks, so memory stays linear in the number of samples.

        Args:
            space (str, optional): ``"encodings"`` (the space the spread was
                maximised in), ``"inputs"`` or ``"codes"``.
                Default: "encodings"
            feasible_only (bool, optional): use only feasible samples.
                Default: False
        """
        if space not in ("encodings", "inputs", "codes"):
            raise ValueError(
                f"space must be 'encodings', 'inputs' or 'codes', got {space!r}"
            )
        x = getattr(self, space)
        if feasible_only:
            x = x[self.feasible]
        return mean_pairwise_distance(x)

    def plot(
        self,
        n: Optional[int] = None,
        ncols: Optional[int] = None,
        show_activations: bool = True,
        title: Optional[str] = None,
        plt_fig_axis: Optional[Tuple] = None,
        fig_size: Tuple[float, float] = (6, 6),
    ):
        r"""Show the samples.

        Images (``(N, C, H, W)`` with 1 or 3 channels) are tiled in a grid with
        each sample's activation under it (infeasible ones marked ``x``);
        other inputs are drawn as a scatter of their first two encoding
        dimensions, coloured by feasibility.

        Args:
            n (int, optional): show only the first ``n`` samples.
                Default: None (all)
            ncols (int, optional): tiles per row. Default: None
            show_activations (bool, optional): caption tiles with activations.
                Default: True
            title (str, optional): axis title. Default: the band and the
                fraction of feasible samples.
            plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
                Default: None
            fig_size (tuple, optional): size of a new figure. Default: (6, 6)

        Returns:
            ``(fig, ax)``
        """
        from ....visualization import figure_axis, visualize_image_grid

        n = (
            self.n_samples
            if n is None
            else min(check_positive_int("n", n), self.n_samples)
        )
        if title is None:
            lo, hi = self.activation_range
            title = (
                f"inverse set [{lo:.3g}, {hi:.3g}]: "
                f"{int(self.feasible.sum())}/{self.n_samples} feasible"
            )
        x = self.inputs[:n]
        if x.dim() == 4 and x.shape[1] in (1, 3):
            titles = None
            if show_activations:
                titles = [
                    f"{float(a):.2f}" + ("" if bool(ok) else " x")
                    for a, ok in zip(self.activations[:n], self.feasible[:n])
                ]
            lo_v, hi_v = float(x.min()), float(x.max())
            return visualize_image_grid(
                x,
                titles=titles,
                ncols=ncols,
                vmin=min(0.0, lo_v),
                vmax=max(1.0, hi_v),
                title=title,
                plt_fig_axis=plt_fig_axis,
                fig_size=fig_size,
            )
        fig, ax = figure_axis(plt_fig_axis, fig_size)
        e = self.encodings[:n].detach().cpu().float()
        ys = e[:, 1] if e.shape[1] > 1 else self.activations[:n].cpu()
        ok = self.feasible[:n].cpu()
        ax.scatter(e[ok, 0], ys[ok], s=12, c="tab:blue", label="feasible")
        if (~ok).any():
            ax.scatter(
                e[~ok, 0], ys[~ok], s=12, c="tab:red", marker="x", label="infeasible"
            )
        ax.set_xlabel("encoding 0")
        ax.set_ylabel("encoding 1" if e.shape[1] > 1 else "activation")
        ax.legend(loc="best", fontsize=7)
        ax.set_title(title)
        return fig, ax
