"""Network Dissection concept scores of a layer's units."""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.data import DatasetLike, count_batches, is_tensor_data, iter_batches
from ..._utils.deprecation import deprecated_alias
from ..._utils.hooks import preserve_model_state
from ..._utils.layer_eval import layer_eval
from ..._utils.layers import resolve_layer
from ..._utils.memory import available_memory, check_memory, format_bytes
from ..._utils.progress import progress
from ..._utils.results import InterpretationResult, result_dataclass
from ..._utils.validation import (
    check_finite_inputs,
    check_number,
    check_positive_int,
    model_device,
)

__all__ = ["DissectionResult", "NetworkDissection"]


def _linear_quantile(values: Tensor, q: float) -> Tensor:
    """Row-wise quantile with linear interpolation (``torch.quantile``'s rule).

    Written with ``sort`` because ``torch.quantile`` refuses large inputs.
    """
    sorted_values = values.sort(dim=1).values
    pos = q * (values.shape[1] - 1)
    lo = int(pos)
    hi = min(lo + 1, values.shape[1] - 1)
    frac = pos - lo
    return sorted_values[:, lo] + frac * (sorted_values[:, hi] - sorted_values[:, lo])


def _check_units(units: Any) -> Optional[Tensor]:
    if units is None:
        return None
    if torch.is_tensor(units):
        if units.device.type == "meta":
            raise ValueError("units is a meta tensor: it holds no values")
        if units.is_floating_point() or units.dtype == torch.bool:
            raise ValueError(f"units must be channel indices (ints), got {units}")
        units = units.reshape(-1).tolist()
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise ValueError(f"units must be a sequence of channel indices, got {units!r}")
    units = list(units)
    if not units:
        raise ValueError("units must be a non-empty sequence of channels")
    for u in units:
        if isinstance(u, bool) or not isinstance(u, int):
            raise ValueError(f"units must hold ints (channel indices), got {u!r}")
    return torch.tensor(units, dtype=torch.long)


def _check_thresholds(thresholds: Any) -> Optional[Tensor]:
    if thresholds is None:
        return None
    if torch.is_tensor(thresholds):
        check_finite_inputs("thresholds", thresholds)
        t = thresholds
    else:
        try:
            t = torch.as_tensor(thresholds)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"thresholds must be a tensor of numbers, got {thresholds!r}"
            ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"thresholds must hold numbers, got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.float32)
    check_finite_inputs("thresholds", t)
    if t.dim() != 1:
        raise ValueError(
            f"thresholds must be one value per unit (1-D), got shape {tuple(t.shape)}"
        )
    return t


# Bytes per activation the threshold pass holds: the float32 chunks, their
# concatenation, the sorted copy and its int64 indices.
_THRESHOLD_BYTES = 20
# Upper bound of one IoU chunk's float64 work arrays.
_IOU_CHUNK_BYTES = 64 * 2**20


def _check_threshold_memory(inputs: Any, maps: Tensor, n_batches: Optional[int]):
    """Raise before the threshold pass collects more than it can hold."""
    if is_tensor_data(inputs):
        first = inputs if torch.is_tensor(inputs) else inputs[0]
        n_total = first.shape[0]
    elif n_batches is not None:
        n_total = n_batches * maps.shape[0]
    else:
        return
    need = _THRESHOLD_BYTES * maps[0].numel() * n_total
    budget = 0.5 * available_memory()
    if need > budget:
        raise ValueError(
            f"inputs: the threshold pass keeps every activation of the "
            f"{maps.shape[1]} units ({format_bytes(need)} for {n_total} "
            f"examples), more than {format_bytes(budget)}; pass thresholds= "
            "(e.g. computed on a subset), fewer units=, or fewer inputs"
        )


# Multilinear interpolation of 1, 2 or 3 spatial dimensions.
_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _resample(maps: Tensor, size: Tuple[int, ...], mode: str) -> Tensor:
    """Unit maps ``(n, U, *S)`` at the masks' resolution ``size``: linear
    interpolation in every spatial dimension (``mode="bilinear"``, Bau et
    al.) or nearest neighbour; the identity for equal sizes and for layers
    without spatial dimensions."""
    if tuple(maps.shape[2:]) == tuple(size) or maps.dim() == 2:
        return maps
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    return F.interpolate(
        maps, size=size, mode=_LINEAR_MODES[len(size)], align_corners=False
    )


def _batch_counts(
    maps: Tensor, masks: Tensor, thresholds: Tensor, upsample_mode: str
) -> Tuple[Tensor, Tensor]:
    """``(U, K)`` intersections and unions of one batch, in example chunks
    small enough that the resampled maps never exceed a fixed budget.

    ``maps`` is ``(n, U, *S)`` and ``masks`` ``(n, K, *S')`` with as many
    spatial dimensions (none for a linear layer)."""
    n, n_units = maps.shape[:2]
    size = tuple(masks.shape[2:])
    positions = 1
    for s in size:
        positions *= s
    per_example = 8 * (n_units + masks.shape[1]) * positions * 2
    step = max(1, int(_IOU_CHUNK_BYTES // max(per_example, 1)))
    check_memory("concept_masks", tuple(masks.shape), per_example, maps.device)
    view = (1, -1) + (1,) * len(size)
    inter = union = None
    for start in range(0, n, step):
        up = _resample(maps[start : start + step], size, upsample_mode)
        active = (up > thresholds.reshape(view)).to(torch.float64)
        active = active.reshape(active.shape[0], n_units, -1)
        labels = masks[start : start + step].to(torch.float64)
        labels = labels.reshape(labels.shape[0], labels.shape[1], -1)
        i = torch.einsum("nup,nkp->uk", active, labels)
        u = active.sum((0, 2))[:, None] + labels.sum((0, 2))[None] - i
        inter = i if inter is None else inter + i
        union = u if union is None else union + u
    return inter, union


@result_dataclass
class DissectionResult(InterpretationResult):
    r"""Concept scores of a layer's units from :meth:`NetworkDissection.interpret`.

    Attributes:
        iou (Tensor): ``(n_units, n_concepts)`` dataset-wide IoU of each unit
            with each concept.
        intersection, union (Tensor): ``(n_units, n_concepts)`` pixel counts
            summed over the dataset.
        thresholds (Tensor): ``(n_units,)`` activation thresholds :math:`T_u`.
        units (Tensor): ``(n_units,)`` channel index of each row.
        concept_names (list of str): one name per concept column.
    """

    iou: Optional[Tensor] = None
    intersection: Optional[Tensor] = None
    union: Optional[Tensor] = None
    thresholds: Optional[Tensor] = None
    units: Optional[Tensor] = None
    concept_names: Any = None
    quantile: Any = None

    def _concept_index(self, concept: Union[int, str]) -> int:
        if isinstance(concept, str):
            if concept not in self.concept_names:
                raise ValueError(f"unknown concept {concept!r}")
            return self.concept_names.index(concept)
        if not 0 <= int(concept) < self.iou.shape[1]:
            raise ValueError(f"concept index {concept} out of range")
        return int(concept)

    def rank_units(
        self, concept: Union[int, str], k: Optional[int] = None
    ) -> Tuple[Tensor, Tensor]:
        """Units sorted by IoU with ``concept`` (best first; ties: lower unit).

        Returns:
            ``(units, iou)``: channel indices and their IoU, ``k`` of them
            (all when None).
        """
        c = self._concept_index(concept)
        order = torch.sort(self.iou[:, c], descending=True, stable=True).indices
        if k is not None:
            order = order[: check_positive_int("k", k)]
        return self.units[order], self.iou[order, c]

    def best_concepts(self) -> Tuple[List[str], Tensor]:
        """Each unit's best concept (Network Dissection's label) and its IoU."""
        best = self.iou.max(dim=1)
        return [self.concept_names[int(i)] for i in best.indices], best.values

    def plot(
        self,
        concept: Union[int, str, None] = None,
        k: int = 10,
        plt_fig_axis: Optional[Tuple] = None,
    ):
        """Bar chart of the ``k`` best units for ``concept``, or a heatmap.

        With ``concept=None`` draws the unit x concept IoU matrix.

        Returns:
            ``(fig, ax)``
        """
        import matplotlib.pyplot as plt

        fig, ax = plt_fig_axis if plt_fig_axis is not None else plt.subplots()
        if concept is None:
            im = ax.imshow(self.iou.numpy(), aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(self.concept_names)))
            short = len(self.concept_names) <= 6 and all(
                len(c) <= 12 for c in self.concept_names
            )
            ax.set_xticklabels(
                self.concept_names,
                rotation=0 if short else 45,
                ha="center" if short else "right",
            )
            ax.set_ylabel("unit")
            ax.set_title("IoU")
            fig.colorbar(im, ax=ax)
        else:
            units, scores = self.rank_units(concept, k)
            ax.bar([str(int(u)) for u in units], scores.numpy())
            ax.set_xlabel("unit")
            ax.set_ylabel("IoU")
            ax.set_title(
                f"units for {self.concept_names[self._concept_index(concept)]}"
            )
        return fig, ax


class NetworkDissection:
    r"""Network Dissection (Bau et al., 2017): IoU of units with concepts.

    For every unit (channel) :math:`u` of a layer, the threshold :math:`T_u`
    is the ``quantile`` (default the top 0.5%) of its activations over all
    examples and positions. Each activation map
    :math:`A_u(x)` is upsampled to the resolution of the concept masks
    :math:`L_c(x)` and thresholded, :math:`M_u(x) = S(A_u(x)) > T_u`, and

    .. math::
        \mathrm{IoU}_{u,c} = \frac{\sum_x |M_u(x) \cap L_c(x)|}
        {\sum_x |M_u(x) \cup L_c(x)|}

    Units ranked by IoU for a concept are the detectors of that concept.

    The same definition holds for any layer whose output is ``(N, C, *S)``:
    a 1-D convolution (``S = (L,)``, masks ``(N, K, L')``) or a linear layer
    (``S`` empty, masks ``(N, K)``: one bit per example and concept, so
    :math:`\mathrm{IoU}_{u,c}` compares the examples on which unit :math:`u`
    is above its threshold with those that show concept :math:`c`).

    The thresholds need every activation of the layer (one pass, kept on the
    CPU: ``N x C x prod(S)`` floats, not the inputs); pass ``thresholds`` to
    skip that pass. The IoU pass streams and keeps only ``C x K`` counts.

    Args:
        forward_func (Callable or torch.nn.Module): the model or its forward
            function.
        layer (torch.nn.Module or str): the layer, or its dotted name in
            ``forward_func``. Its output is ``(N, C, *S)``: ``(N, C, H, W)``
            for a 2-D convolution, ``(N, C, L)`` for a 1-D one, ``(N, C)``
            for a linear layer (``S`` empty: each unit has one value per
            example and each concept one mask bit per example).
        device_ids (list of int, optional): the devices of a
            ``DataParallel`` forward function, passed to Captum's layer
            evaluation. Default: None
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: Union[nn.Module, str],
        device_ids: Optional[List[int]] = None,
    ) -> None:
        if not callable(forward_func):
            raise ValueError("forward_func must be a callable (the model)")
        self.forward_func = forward_func
        self.layer = resolve_layer(forward_func, layer)
        self.device_ids = device_ids

    @log_usage(part_of_slo=True)
    def interpret(
        self,
        inputs: DatasetLike,
        concept_masks: Optional[Tensor] = None,
        concept_names: Optional[Sequence[str]] = None,
        units: Optional[Sequence[int]] = None,
        quantile: float = 0.995,
        thresholds: Optional[Tensor] = None,
        upsample_mode: str = "bilinear",
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> DissectionResult:
        r"""IoU of every unit with every concept over a dataset.

        Args:
            inputs (Tensor, tuple of Tensor or DataLoader): the images. A
                DataLoader must yield ``(x, masks)`` pairs, in the same order
                on every pass when ``thresholds`` is None.
            concept_masks (Tensor, optional): ``(N, K, *S')`` binary masks
                (bool or 0/1) of the ``K`` concepts for tensor inputs, with as
                many spatial dimensions as the layer output: ``(N, K, H',
                W')`` for a 2-D layer, ``(N, K, L')`` for a 1-D one, ``(N,
                K)`` for a linear layer. Masks of one concept, without the
                ``K`` dimension, are also accepted. Default: None (only with a
                DataLoader)
            concept_names (sequence of str, optional): ``K`` names.
                Default: None (``"concept_0"``, ...)
            units (sequence of int, optional): channels to score.
                Default: None (all)
            quantile (float, optional): level of :math:`T_u` in (0, 1).
                Default: 0.995
            thresholds (Tensor, optional): ``(n_units,)`` precomputed
                :math:`T_u`, one per scored unit. Default: None
            upsample_mode (str, optional): how the unit maps are resampled
                to the masks' resolution: ``"bilinear"`` (Bau et al.; linear
                in every spatial dimension, so also for 1-D and 3-D layers;
                ``"linear"`` is the same) or ``"nearest"``. Default:
                "bilinear"
            additional_forward_args (Any, optional): extra forward arguments.
                Default: None
            attribute_to_layer_input (bool, optional): dissect the layer's
                input. Default: False
            batch_size (int, optional): chunk size for tensor inputs.
                Default: 64
            show_progress (bool, optional): progress bars. Default: False

        Returns:
            DissectionResult: IoU, counts, thresholds; ``rank_units(concept)``
            ranks units by concept.

        Examples::

            >>> dissection = NetworkDissection(model, model.relu2)
            >>> result = dissection.interpret(images, masks, ["stroke", "hole"])
            >>> units, iou = result.rank_units("hole", k=3)
        """
        quantile = check_number(
            "quantile", quantile, 0.0, 1.0, strict_minimum=True, strict_maximum=True
        )
        if upsample_mode not in ("bilinear", "linear", "nearest"):
            raise ValueError(
                "upsample_mode must be 'bilinear' (or 'linear') or 'nearest', got "
                f"{upsample_mode!r}"
            )
        batch_size = check_positive_int("batch_size", batch_size)
        if concept_masks is not None:
            if not torch.is_tensor(concept_masks):
                raise ValueError("concept_masks must be a tensor (N, K, *S)")
            if concept_masks.device.type == "meta":
                raise ValueError("concept_masks is a meta tensor: it holds no values")
        unit_index = _check_units(units)
        thresholds_given = _check_thresholds(thresholds)
        if concept_names is not None and (
            isinstance(concept_names, str)
            or not all(isinstance(c, str) for c in concept_names)
        ):
            raise ValueError(
                f"concept_names must be a sequence of str, got {concept_names!r}"
            )
        device = model_device(self.forward_func)

        def unit_maps(batch: Tuple[Tensor, ...]) -> Tensor:
            outs = layer_eval(
                self.forward_func,
                tuple(t.to(device) for t in batch),
                self.layer,
                additional_forward_args,
                attribute_to_layer_input=attribute_to_layer_input,
                device_ids=self.device_ids,
            )
            if len(outs) != 1:
                raise ValueError(
                    f"NetworkDissection needs a layer with one output tensor, got "
                    f"{len(outs)}"
                )
            out = outs[0]
            if not torch.is_tensor(out) or not 2 <= out.dim() <= 5:
                raise ValueError(
                    "NetworkDissection needs a layer with (N, C), (N, C, L), "
                    "(N, C, H, W) or (N, C, D, H, W) output, got "
                    f"{tuple(out.shape) if torch.is_tensor(out) else type(out)}"
                )
            n_channels = out.shape[1]
            if unit_index is not None:
                if bool((unit_index < 0).any()) or int(unit_index.max()) >= n_channels:
                    raise ValueError(
                        f"units must be channel indices in [0, {n_channels}), got "
                        f"{unit_index.tolist()}"
                    )
                out = out[:, unit_index.to(out.device)]
            return out.detach()

        n_batches = count_batches(inputs, batch_size)
        with preserve_model_state(self.forward_func), torch.no_grad():
            if thresholds_given is None:
                chunks = []
                with progress(n_batches, show_progress, "Dissection thresholds") as bar:
                    for batch, _ in self._batches(inputs, concept_masks, batch_size):
                        maps = unit_maps(batch).float().cpu()
                        if not chunks:
                            _check_threshold_memory(inputs, maps, n_batches)
                        chunks.append(maps.transpose(0, 1).reshape(maps.shape[1], -1))
                        bar.update()
                if not chunks:
                    raise ValueError("inputs is empty")
                thresholds_t = _linear_quantile(torch.cat(chunks, 1), float(quantile))
                del chunks
            else:
                thresholds_t = thresholds_given
            intersection = union = None
            seen = 0
            with progress(n_batches, show_progress, "Dissection IoU") as bar:
                for batch, masks in self._batches(inputs, concept_masks, batch_size):
                    maps = unit_maps(batch)
                    if thresholds_t.shape != (maps.shape[1],):
                        raise ValueError(
                            f"thresholds must have one value per unit "
                            f"({maps.shape[1]}), got {tuple(thresholds_t.shape)}"
                        )
                    masks = self._check_masks(masks, maps).to(maps.device)
                    inter, union_part = _batch_counts(
                        maps, masks, thresholds_t.to(maps.device), upsample_mode
                    )
                    if intersection is None:
                        intersection = torch.zeros_like(inter)
                        union = torch.zeros_like(inter)
                    intersection += inter
                    union += union_part
                    seen += maps.shape[0]
                    bar.update()
        if seen == 0:
            raise ValueError("inputs is empty")
        intersection, union = intersection.cpu(), union.cpu()
        iou = torch.where(union > 0, intersection / union.clamp_min(1), 0.0)
        n_concepts = iou.shape[1]
        if concept_names is None:
            concept_names = [f"concept_{i}" for i in range(n_concepts)]
        elif len(concept_names) != n_concepts:
            raise ValueError(
                f"concept_names has {len(concept_names)} names for {n_concepts} "
                "concepts"
            )
        return DissectionResult(
            iou=iou.float(),
            intersection=intersection.round().long(),
            union=union.round().long(),
            thresholds=thresholds_t.cpu(),
            units=(
                unit_index if unit_index is not None else torch.arange(iou.shape[0])
            ),
            concept_names=[str(c) for c in concept_names],
            quantile=float(quantile),
        )

    @deprecated_alias("interpret")
    def attribute(self, *args: Any, **kwargs: Any) -> DissectionResult:
        """Deprecated spelling of :meth:`interpret` (a ``FutureWarning``):
        dissection scores a layer's units, it attributes nothing."""

    @staticmethod
    def _batches(inputs: DatasetLike, concept_masks: Optional[Tensor], bs: int):
        return iter_batches(inputs, concept_masks, bs, "concept_masks")

    @staticmethod
    def _check_masks(masks: Optional[Tensor], maps: Tensor) -> Tensor:
        if masks is None:
            raise ValueError(
                "concept_masks are needed: pass concept_masks= with tensor inputs "
                "or yield (inputs, masks) batches"
            )
        masks = torch.as_tensor(masks)
        n, spatial = maps.shape[0], maps.dim() - 2
        if masks.dim() == spatial + 1:
            masks = masks.unsqueeze(1)
        if masks.dim() != spatial + 2 or masks.shape[0] != n:
            layout = ("N", "K", *("H", "W", "D")[:spatial])
            raise ValueError(
                f"concept_masks must be ({', '.join(layout)}) with N = {n} for a "
                f"layer output of shape {tuple(maps.shape)}, got "
                f"{tuple(masks.shape)}"
            )
        if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("concept_masks must be binary (bool or 0/1)")
        return masks.bool()
