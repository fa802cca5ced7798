"""Network Dissection concept scores of a layer's units."""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.hooks import preserve_model_state
from ..._utils.progress import progress
from ..._utils.results import InterpretationResult, result_dataclass
from ..._utils.validation import check_module, check_positive_int, model_device
from ..neuron.neuron_profile import (
    DatasetLike,
    _iter_batches,
    _layer_output,
    _n_batches,
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


@result_dataclass
class DissectionResult(InterpretationResult):
    r"""Concept scores of a layer's units from :meth:`NetworkDissection.attribute`.

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
            ax.set_xticklabels(self.concept_names, rotation=90)
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


class NetworkDissection(LayerAttribution):
    r"""Network Dissection (Bau et al., 2017): IoU of units with concepts.

    For every unit (channel) :math:`u` of a convolutional layer, the
    threshold :math:`T_u` is the ``quantile`` (default the top 0.5%) of its
    activations over all examples and positions. Each activation map
    :math:`A_u(x)` is upsampled to the resolution of the concept masks
    :math:`L_c(x)` and thresholded, :math:`M_u(x) = S(A_u(x)) > T_u`, and

    .. math::
        \mathrm{IoU}_{u,c} = \frac{\sum_x |M_u(x) \cap L_c(x)|}
        {\sum_x |M_u(x) \cup L_c(x)|}

    Units ranked by IoU for a concept are the detectors of that concept.

    The thresholds need every activation of the layer (one pass, kept on the
    CPU: ``N x C x H x W`` floats, not the inputs); pass ``thresholds`` to
    skip that pass. The IoU pass streams and keeps only ``C x K`` counts.

    Args:
        forward_func (Callable or torch.nn.Module): the model or its forward
            function.
        layer (torch.nn.Module): a layer with output ``(N, C, H, W)``.
        device_ids (list of int, optional): kept for Captum compatibility.
            Default: None
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        check_module("layer", layer)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)

    @log_usage(part_of_slo=True)
    def attribute(
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
            concept_masks (Tensor, optional): ``(N, K, H', W')`` binary masks
                (bool or 0/1) of the ``K`` concepts for tensor inputs. Masks
                of one concept per image ``(N, H', W')`` are also accepted.
                Default: None (only with a DataLoader)
            concept_names (sequence of str, optional): ``K`` names.
                Default: None (``"concept_0"``, ...)
            units (sequence of int, optional): channels to score.
                Default: None (all)
            quantile (float, optional): level of :math:`T_u` in (0, 1).
                Default: 0.995
            thresholds (Tensor, optional): ``(n_units,)`` precomputed
                :math:`T_u`, one per scored unit. Default: None
            upsample_mode (str, optional): ``"bilinear"`` (Bau et al.) or
                ``"nearest"``. Default: "bilinear"
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
            >>> result = dissection.attribute(images, masks, ["stroke", "hole"])
            >>> units, iou = result.rank_units("hole", k=3)
        """
        if not 0.0 < float(quantile) < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(
                f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}"
            )
        batch_size = check_positive_int("batch_size", batch_size)
        if concept_masks is not None and not torch.is_tensor(concept_masks):
            raise ValueError("concept_masks must be a tensor (N, K, H, W)")
        unit_index = None
        if units is not None:
            unit_index = torch.as_tensor(list(units), dtype=torch.long)
            if unit_index.dim() != 1 or unit_index.numel() == 0:
                raise ValueError("units must be a non-empty sequence of channels")
        device = model_device(self.forward_func)

        def unit_maps(batch: Tuple[Tensor, ...]) -> Tensor:
            out = _layer_output(
                self.forward_func,
                self.layer,
                tuple(t.to(device) for t in batch),
                additional_forward_args,
                attribute_to_layer_input,
            )
            if not torch.is_tensor(out) or out.dim() != 4:
                raise ValueError(
                    "NetworkDissection needs a layer with (N, C, H, W) output, got "
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

        n_batches = _n_batches(inputs, batch_size)
        with preserve_model_state(self.forward_func), torch.no_grad():
            if thresholds is None:
                chunks = []
                with progress(n_batches, show_progress, "Dissection thresholds") as bar:
                    for batch, _ in self._batches(inputs, concept_masks, batch_size):
                        maps = unit_maps(batch).float().cpu()
                        chunks.append(maps.transpose(0, 1).reshape(maps.shape[1], -1))
                        bar.update()
                if not chunks:
                    raise ValueError("inputs is empty")
                thresholds_t = _linear_quantile(torch.cat(chunks, 1), float(quantile))
                del chunks
            else:
                thresholds_t = torch.as_tensor(thresholds, dtype=torch.float32)
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
                    masks = self._check_masks(masks, maps.shape[0]).to(maps.device)
                    size = masks.shape[-2:]
                    if upsample_mode == "bilinear":
                        up = F.interpolate(
                            maps, size=size, mode="bilinear", align_corners=False
                        )
                    else:
                        up = F.interpolate(maps, size=size, mode="nearest")
                    active = (up > thresholds_t.to(up.device)[None, :, None, None]).to(
                        torch.float64
                    )
                    labels = masks.to(torch.float64)
                    inter = torch.einsum("nuhw,nkhw->uk", active, labels)
                    sizes = active.sum((0, 2, 3))[:, None] + labels.sum((0, 2, 3))[None]
                    if intersection is None:
                        intersection = torch.zeros_like(inter)
                        union = torch.zeros_like(inter)
                    intersection += inter
                    union += sizes - inter
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

    @staticmethod
    def _batches(inputs: DatasetLike, concept_masks: Optional[Tensor], bs: int):
        return _iter_batches(inputs, concept_masks, bs, "concept_masks")

    @staticmethod
    def _check_masks(masks: Optional[Tensor], n: int) -> Tensor:
        if masks is None:
            raise ValueError(
                "concept_masks are needed: pass concept_masks= with tensor inputs "
                "or yield (inputs, masks) batches"
            )
        masks = torch.as_tensor(masks)
        if masks.dim() == 3:
            masks = masks.unsqueeze(1)
        if masks.dim() != 4 or masks.shape[0] != n:
            raise ValueError(
                f"concept_masks must be (N, K, H, W) with N = {n}, got "
                f"{tuple(masks.shape)}"
            )
        if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("concept_masks must be binary (bool or 0/1)")
        return masks.bool()
