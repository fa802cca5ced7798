r"""E-GBAS: explorative sampling in the generative region of a query latent.

Jeon, Jeong & Choi, "An Efficient Explorative Sampling Considering the
Generative Boundaries of Deep Generative Neural Networks", AAAI 2020.
"""

import math
import warnings
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.captum_compat import get_module_from_name
from ..._utils.distance import mean_pairwise_distance
from ..._utils.hooks import capture_layer, preserve_model_state, replace_layer_output
from ..._utils.progress import progress
from ..._utils.results import InterpretationResult, result_dataclass
from ..._utils.validation import (
    check_finite,
    check_positive_float,
    check_positive_int,
    check_submodule,
    make_generator,
    model_device,
)

__all__ = ["EGBAS", "EGBASResult", "EGBASWarning"]

# Exceptions a generator raises when it is given a latent of the wrong shape.
# Only these exact types are turned into a ValueError about ``z0``; subclasses
# (an error raised on purpose inside a layer) propagate unchanged.
_SHAPE_ERRORS = (RuntimeError, TypeError, IndexError)


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
        from ...visualization import visualize_image_grid

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
        from ...visualization import figure_axis

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


class EGBAS(LayerAttribution):
    r"""Explorative Generative Boundary Aware Sampling (E-GBAS).

    Split a generator at a layer :math:`\ell`,
    :math:`G = g_{L:\ell+1} \circ g_{\ell:1}`. Each unit :math:`i` of
    :math:`h = g_{\ell:1}(z)` (the layer's *pre-activation* output, every
    element of it for a convolutional layer) defines a *generative boundary*
    :math:`\{z : h_i(z) = 0\}`. The *generative region* of a query
    :math:`z_0` on a set of units :math:`M` is the set of latents with the
    query's sign pattern on :math:`M`:

    .. math::
        R_M(z_0) = \{ z : [h_i(z) > 0] = [h_i(z_0) > 0] \ \forall i \in M \}

    With all units of a piecewise-linear (ReLU or LeakyReLU) network up to
    :math:`\ell`, and :math:`\ell` and all layers below taken together, this
    is a linear region. E-GBAS works in two steps:

    1. :meth:`supporting_boundaries` finds the *smallest supporting
       generative boundary set*: a Bernoulli mask :math:`m \sim
       \mathrm{Ber}(\theta)` on the layer's units that keeps the output
       unchanged with as few units as possible,

       .. math::
           \theta^* = \arg\min_\theta\ \mathbb{E}_m \frac{1}{|G(z_0)|}
           \left\| g_{L:\ell+1}(g_{\ell:1}(z_0) \odot m) - G(z_0)
           \right\|_2^2 + \frac{\lambda}{|h|} \|\theta\|_1,

       optimised with Adam through a binary-concrete relaxation of
       :math:`m` (:math:`\lambda` is ``sparsity``); the units with
       :math:`\theta^*_i` above ``threshold`` form the mask :math:`M`.
    2. :meth:`sample` explores :math:`R_M(z_0)` with a rapidly-exploring
       random tree rooted at :math:`z_0`: draw targets, extend each target's
       nearest tree node by ``step_size`` towards it, and keep a new node only
       if its sign pattern on :math:`M` equals :math:`z_0`'s. Many candidate
       extensions are checked in one forward pass. Every sample is in the
       region by construction.

    :meth:`epsilon_sample` is the baseline: latents drawn uniformly in the L2
    ball of radius :math:`\epsilon` around :math:`z_0`, with their membership
    of the region measured.

    :meth:`attribute` returns :math:`\theta^*` for a batch of queries: one
    value in [0, 1] per unit of the layer, how much the unit is needed to
    reproduce the query's output. Its output has the layer's shape, which is
    why the class is a :class:`captum.attr.LayerAttribution`.

    Args:
        generator (nn.Module or Callable): maps a batch of latents
            ``(N, *latent_shape)`` to outputs ``(N, *output_shape)``.
        layer (nn.Module or str): a module inside ``generator`` whose output is
            the pre-activation that defines the boundaries (e.g. a ``Linear``
            or ``Conv*`` module followed by a separate activation), or its
            dotted name.
        device_ids (list of int, optional): kept for Captum's signature; the
            generator must not be a multi-device ``DataParallel``.
            Default: None

    Examples::

        >>> from captum_inverseset import EGBAS
        >>> from captum_inverseset.zoo import digits_generator
        >>> generator = digits_generator()
        >>> egbas = EGBAS(generator, generator.fc2)
        >>> z0 = torch.randn(1, 8)
        >>> mask = egbas.supporting_boundaries(z0, sparsity=0.05, seed=0)
        >>> result = egbas.sample(z0, n_samples=100, mask=mask, step_size=0.3)
        >>> result.in_region.all()
        tensor(True)
        >>> baseline = egbas.epsilon_sample(z0, n_samples=100, epsilon=0.3,
        ...                                 mask=mask)
        >>> baseline.acceptance_rate, result.mean_pairwise_distance
        >>> fig, ax = result.plot()
    """

    def __init__(
        self,
        generator: Callable,
        layer: Union[nn.Module, str],
        device_ids: Optional[list] = None,
    ) -> None:
        if not callable(generator):
            raise ValueError("generator must be a callable (e.g. an nn.Module)")
        if isinstance(layer, str):
            if not isinstance(generator, nn.Module):
                raise ValueError(
                    "layer can be a name only when generator is an nn.Module"
                )
            try:
                layer = get_module_from_name(generator, layer)
            except AttributeError:
                raise ValueError(
                    f"layer {layer!r} is not a submodule of generator"
                ) from None
        if not isinstance(layer, nn.Module):
            raise ValueError(f"layer must be an nn.Module or a name, got {layer!r}")
        check_submodule(generator, layer, "generator", "layer")
        LayerAttribution.__init__(self, generator, layer, device_ids)

    # ------------------------------------------------------------------ helpers
    def _device(self) -> torch.device:
        return model_device(self.forward_func)

    def _format_query(self, z0: Tensor) -> Tensor:
        if not torch.is_tensor(z0):
            raise ValueError(f"z0 must be a tensor, got {type(z0).__name__}")
        if z0.dim() == 0:
            raise ValueError("z0 must have at least one dimension")
        if not z0.is_floating_point():
            raise ValueError(f"z0 must be a floating point tensor, got {z0.dtype}")
        check_finite("z0", z0)
        if z0.shape[0] != 1:
            z0 = z0.unsqueeze(0)
        return z0.detach().to(self._device())

    def _eval(self, latents: Tensor) -> Tuple[Tensor, Tensor]:
        """(layer pre-activations, generator outputs) for a batch of latents."""
        with capture_layer(self.layer) as cap:
            outputs = self.forward_func(latents)
        if not cap.outputs:
            raise ValueError(
                "layer was not called when the generator ran: is it used by "
                "the generator's forward?"
            )
        return cap.outputs[0], outputs

    def _eval_query(self, z0: Tensor, name: str = "z0") -> Tuple[Tensor, Tensor]:
        try:
            return self._eval(z0)
        except _SHAPE_ERRORS as err:
            if type(err) not in _SHAPE_ERRORS:
                raise
            raise ValueError(
                f"the generator does not accept {name} of shape "
                f"{tuple(z0.shape)}: {err}"
            ) from err

    @staticmethod
    def _check_mask(
        mask: Any, layer_shape: torch.Size, device, warn_empty: bool = True
    ) -> Tensor:
        if not torch.is_tensor(mask):
            raise ValueError(f"mask must be a bool tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != tuple(layer_shape):
            raise ValueError(
                f"mask must have the layer's shape without batch "
                f"{tuple(layer_shape)}, got {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("mask must be bool (or 0/1 valued)")
            mask = mask != 0
        if warn_empty and not mask.any():
            warnings.warn(
                "mask is all False: no boundary constrains the region, which is "
                "then the whole latent space",
                EGBASWarning,
                stacklevel=3,
            )
        return mask.to(device)

    @staticmethod
    def _in_region(
        pre_activations: Tensor, query_pattern: Tensor, mask: Tensor
    ) -> Tensor:
        same = (pre_activations > 0) == query_pattern.unsqueeze(0)
        return (same | ~mask.unsqueeze(0)).flatten(1).all(dim=1)

    # ---------------------------------------------------------- mask learning
    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: Tensor,
        sparsity: float = 0.05,
        n_steps: int = 200,
        lr: float = 0.1,
        temperature: float = 0.5,
        init_keep: float = 0.9,
        seed: Optional[int] = 0,
        show_progress: bool = False,
    ) -> Tensor:
        r"""Keep probabilities :math:`\theta^*` of the layer's units for each
        query latent (the Bernoulli mask optimisation of E-GBAS).

        The queries are optimised together (their losses are independent).
        Each step draws one relaxed mask per query,
        :math:`m = \sigma((\mathrm{logit}\,\theta + \log u - \log(1-u)) / \tau)`
        with :math:`u \sim U(0, 1)`, replaces the layer's output :math:`h` by
        :math:`h \odot m`, and takes an Adam step on

        .. math::
            \frac{1}{|G(z_0)|} \| g_{L:\ell+1}(h \odot m) - G(z_0) \|_2^2
            + \frac{\lambda}{|h|} \sum_i \theta_i .

        Args:
            inputs (Tensor): query latents ``(N, *latent_shape)``.
            sparsity (float, optional): :math:`\lambda \ge 0`; larger values
                give fewer supporting boundaries. Default: 0.05
            n_steps (int, optional): optimisation steps. Default: 200
            lr (float, optional): Adam learning rate on the logits of
                :math:`\theta`. Default: 0.1
            temperature (float, optional): :math:`\tau` of the concrete
                relaxation. Default: 0.5
            init_keep (float, optional): initial :math:`\theta`, in (0, 1).
                Default: 0.9
            seed (int, optional): seed of the relaxation noise (drawn on the
                CPU). Default: 0
            show_progress (bool, optional): show a progress bar.
                Default: False

        Returns:
            Tensor: :math:`\theta^*`, shape ``(N, *layer_shape)``, in [0, 1].

        Examples::

            >>> theta = egbas.attribute(torch.randn(4, 8), sparsity=0.1)
            >>> theta.shape
            torch.Size([4, 512])
        """
        if not torch.is_tensor(inputs) or inputs.dim() < 1:
            raise ValueError("inputs must be a tensor of query latents (N, ...)")
        if not inputs.is_floating_point():
            raise ValueError(f"inputs must be floating point, got {inputs.dtype}")
        check_finite("inputs", inputs)
        try:
            sparsity = float(sparsity)
        except (TypeError, ValueError):
            raise ValueError(f"sparsity must be a number, got {sparsity!r}") from None
        if not (sparsity >= 0.0 and math.isfinite(sparsity)):
            raise ValueError(f"sparsity must be >= 0 and finite, got {sparsity!r}")
        check_positive_int("n_steps", n_steps)
        lr = check_positive_float("lr", lr)
        temperature = check_positive_float("temperature", temperature)
        init_keep = float(init_keep)
        if not 0.0 < init_keep < 1.0:
            raise ValueError(f"init_keep must be in (0, 1), got {init_keep!r}")
        gen = make_generator(seed)
        device = self._device()
        latents = inputs.detach().to(device)

        with preserve_model_state(self.forward_func):
            with torch.no_grad():
                pre0, target = self._eval_query(latents, "inputs")
            layer_shape = pre0.shape
            logits = torch.full(
                layer_shape,
                math.log(init_keep / (1.0 - init_keep)),
                device=device,
                dtype=pre0.dtype,
                requires_grad=True,
            )
            optimiser = torch.optim.Adam([logits], lr=lr)
            relaxed: Dict[str, Tensor] = {}
            with (
                torch.enable_grad(),
                replace_layer_output(self.layer, lambda out: out * relaxed["m"]),
                progress(n_steps, show_progress, "E-GBAS mask") as bar,
            ):
                for _ in range(n_steps):
                    u = torch.rand(layer_shape, generator=gen).clamp_(1e-6, 1 - 1e-6)
                    u = u.to(device=device, dtype=pre0.dtype)
                    noise = torch.log(u) - torch.log1p(-u)
                    relaxed["m"] = torch.sigmoid((logits + noise) / temperature)
                    out = self.forward_func(latents)
                    recon = (out - target).pow(2).flatten(1).mean(dim=1)
                    keep = torch.sigmoid(logits).flatten(1).mean(dim=1)
                    loss = (recon + sparsity * keep).sum()
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    bar.update()
            return torch.sigmoid(logits.detach())

    def supporting_boundaries(
        self,
        z0: Tensor,
        sparsity: float = 0.05,
        n_steps: int = 200,
        threshold: float = 0.5,
        seed: Optional[int] = 0,
        **kwargs: Any,
    ) -> Tensor:
        r"""The smallest supporting generative boundary set of a query.

        Args:
            z0 (Tensor): the query latent, ``(1, *latent_shape)``, or
                ``latent_shape`` when its first size is not 1.
            sparsity (float, optional): :math:`\lambda`; larger gives a
                smaller mask. Default: 0.05
            n_steps (int, optional): optimisation steps. Default: 200
            threshold (float, optional): units with :math:`\theta^*` above it
                are kept, in (0, 1). Default: 0.5
            seed (int, optional): seed of the relaxation noise. Default: 0
            **kwargs: ``lr``, ``temperature``, ``init_keep``,
                ``show_progress``, passed to :meth:`attribute`.

        Returns:
            Tensor: bool mask with the layer output's shape without batch.
        """
        threshold = float(threshold)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        z0 = self._format_query(z0)
        theta = self.attribute.__wrapped__(
            self, z0, sparsity=sparsity, n_steps=n_steps, seed=seed, **kwargs
        )
        return theta[0] > threshold

    def masked_output(self, z0: Tensor, mask: Tensor) -> Tensor:
        r""":math:`g_{L:\ell+1}(g_{\ell:1}(z_0) \odot M)`: the output with the
        units outside ``mask`` set to 0, to check how well a mask reproduces
        :math:`G(z_0)`.

        Args:
            z0 (Tensor): query latent(s) ``(N, *latent_shape)``.
            mask (Tensor): bool, the layer's shape without batch.

        Returns:
            Tensor: outputs ``(N, *output_shape)``.
        """
        if not torch.is_tensor(z0) or z0.dim() < 1:
            raise ValueError("z0 must be a tensor of latents (N, *latent_shape)")
        z0 = z0.detach().to(self._device())
        with preserve_model_state(self.forward_func), torch.no_grad():
            pre0, _ = self._eval_query(z0)
            mask = self._check_mask(mask, pre0.shape[1:], pre0.device, warn_empty=False)
            keep = mask.to(pre0.dtype).unsqueeze(0)
            with replace_layer_output(self.layer, lambda out: out * keep):
                return self.forward_func(z0)

    # --------------------------------------------------------------- sampling
    def _prepare_sampling(self, z0, n_samples, mask, seed, mask_kwargs):
        check_positive_int("n_samples", n_samples)
        z0 = self._format_query(z0)
        with preserve_model_state(self.forward_func), torch.no_grad():
            pre0, out0 = self._eval_query(z0)
        if mask is None:
            options = {"seed": seed, **(mask_kwargs or {})}
            mask = self.supporting_boundaries(z0, **options)
        mask = self._check_mask(mask, pre0.shape[1:], pre0.device)
        return z0, pre0[0] > 0, out0, mask

    def sample(
        self,
        z0: Tensor,
        n_samples: int = 100,
        mask: Optional[Tensor] = None,
        step_size: float = 0.25,
        seed: Optional[int] = 0,
        show_progress: bool = False,
        batch_size: int = 16,
        exploration_scale: float = 1.0,
        latent_bound: Union[None, float, str] = None,
        max_iterations: int = 200,
        n_step_halvings: int = 3,
        mask_kwargs: Optional[Dict[str, Any]] = None,
    ) -> EGBASResult:
        r"""Explore the generative region of ``z0`` with a boundary-constrained
        rapidly-exploring random tree.

        Each iteration draws ``batch_size`` targets
        :math:`t \sim \mathcal{N}(z_0, s^2 I)` (:math:`s` is
        ``exploration_scale``), finds each target's nearest tree node
        :math:`z_n`, proposes
        :math:`z_n + \min(\eta, \|t - z_n\|) (t - z_n) / \|t - z_n\|`
        (:math:`\eta` is ``step_size``), evaluates all proposals in one
        forward pass and adds those with :math:`z_0`'s sign pattern on
        ``mask`` (and inside ``latent_bound``) to the tree.

        The latent prior is respected with ``latent_bound``: a float keeps
        every node in the ball :math:`\|z\|_2 \le` ``latent_bound``;
        ``"typical"`` keeps nodes in the typical set of a standard normal
        prior, the shell
        :math:`|\|z\|_2 - \sqrt{d - 1/2}| \le 3 / \sqrt{2}` (widened to
        contain :math:`z_0`), where :math:`d` is the latent size.

        Args:
            z0 (Tensor): the query latent, ``(1, *latent_shape)``, or
                ``latent_shape`` when its first size is not 1.
            n_samples (int, optional): samples to find (tree nodes besides
                the root). Default: 100
            mask (Tensor, optional): bool supporting boundary set, the layer's
                shape without batch. Default: None
                (:meth:`supporting_boundaries` with ``mask_kwargs``)
            step_size (float, optional): :math:`\eta`, the longest tree edge.
                Default: 0.25
            seed (int, optional): seed of the targets (and of the mask
                optimisation when ``mask`` is None). Default: 0
            show_progress (bool, optional): show a progress bar.
                Default: False
            batch_size (int, optional): candidate extensions per forward
                pass. All candidates of a batch extend the tree as it was
                before the batch, so a batch much smaller than ``n_samples``
                gives a deeper, wider tree; a larger one fewer forward passes.
                Default: 16
            exploration_scale (float, optional): standard deviation of the
                targets around ``z0``. Default: 1.0
            latent_bound (float or str, optional): None, a maximum latent
                norm, or ``"typical"``. Default: None
            max_iterations (int, optional): most batches of candidates; when
                they are used up before ``n_samples`` are found, the result
                holds the samples found, ``complete`` is False and an
                :class:`EGBASWarning` is issued. Default: 200
            n_step_halvings (int, optional): each extension is tried at
                ``step_size`` times :math:`1, 1/2, \dots, 2^{1-k}` for this
                :math:`k` (all in the same forward pass) and the longest
                in-region one is kept; 1 tries the full step only.
                Default: 3
            mask_kwargs (dict, optional): arguments of
                :meth:`supporting_boundaries` when ``mask`` is None.
                Default: None

        Returns:
            EGBASResult: ``in_region`` all True and ``tree`` the parents.
        """
        step_size = check_positive_float("step_size", step_size)
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_iterations", max_iterations)
        exploration_scale = check_positive_float("exploration_scale", exploration_scale)
        z0, pattern0, out0, mask = self._prepare_sampling(
            z0, n_samples, mask, seed, mask_kwargs
        )
        latent_shape = z0.shape[1:]
        dim = z0[0].numel()
        root = z0.flatten(1)
        low, high = self._norm_bounds(latent_bound, root, dim)
        check_positive_int("n_step_halvings", n_step_halvings)
        fractions = [0.5**i for i in range(n_step_halvings)]
        gen = make_generator(seed)

        nodes = torch.empty(n_samples + 1, dim, device=z0.device, dtype=z0.dtype)
        nodes[0] = root[0]
        parents = torch.empty(n_samples, dtype=torch.long)
        outputs: list = []
        n_nodes, n_proposed, iteration = 1, 0, 0
        with (
            preserve_model_state(self.forward_func),
            torch.no_grad(),
            progress(n_samples, show_progress, "E-GBAS tree") as bar,
        ):
            while n_nodes - 1 < n_samples and iteration < max_iterations:
                iteration += 1
                noise = torch.randn(batch_size, dim, generator=gen)
                targets = root + exploration_scale * noise.to(root)
                nearest = torch.cdist(targets, nodes[:n_nodes]).argmin(dim=1)
                base = nodes[nearest]
                direction = targets - base
                length = direction.norm(dim=1, keepdim=True)
                step = length.clamp(max=step_size) / length.clamp_min(1e-12)
                # Each extension is tried at the full step and at shorter ones
                # (halving), all in one forward pass; the longest in-region
                # one is kept, so the tree still grows near a boundary.
                candidates = torch.cat(
                    [base + direction * (step * f) for f in fractions]
                )
                pre, out = self._eval(candidates.reshape(-1, *latent_shape))
                n_proposed += candidates.shape[0]
                ok = self._in_region(pre, pattern0, mask)
                norms = candidates.norm(dim=1)
                ok &= (norms >= low) & (norms <= high)
                ok = ok.reshape(len(fractions), batch_size)
                found = ok.any(dim=0)
                first = ok.float().argmax(dim=0)  # longest step that stays in
                chosen = (
                    first * batch_size + torch.arange(batch_size, device=first.device)
                )[found]
                chosen = chosen[: n_samples - (n_nodes - 1)]
                k = int(chosen.numel())
                if k:
                    nodes[n_nodes : n_nodes + k] = candidates[chosen]
                    parent = nearest[chosen % batch_size]
                    parents[n_nodes - 1 : n_nodes - 1 + k] = parent.cpu() - 1
                    outputs.append(out[chosen])
                    n_nodes += k
                    bar.update(k)
        n_found = n_nodes - 1
        complete = n_found == n_samples
        if not complete:
            warnings.warn(
                f"the tree could not grow: found {n_found} of {n_samples} "
                f"samples in {n_proposed} candidates; try a smaller step_size, "
                "a smaller mask (larger sparsity) or more max_iterations",
                EGBASWarning,
                stacklevel=2,
            )
        latents = nodes[1:n_nodes].reshape(n_found, *latent_shape)
        outs = (
            torch.cat(outputs, dim=0)
            if outputs
            else out0.new_empty((0, *out0.shape[1:]))
        )
        return EGBASResult(
            query=z0[0].detach(),
            query_output=out0[0].detach(),
            latents=latents.detach(),
            outputs=outs.detach(),
            mask=mask,
            in_region=torch.ones(n_found, dtype=torch.bool, device=z0.device),
            tree=parents[:n_found].to(z0.device),
            method="egbas",
            complete=complete,
            n_requested=n_samples,
            n_proposed=n_proposed,
            step_size=step_size,
        )

    @staticmethod
    def _norm_bounds(
        latent_bound: Union[None, float, str], root: Tensor, dim: int
    ) -> Tuple[float, float]:
        z0_norm = float(root.norm())
        if latent_bound is None:
            return 0.0, math.inf
        if isinstance(latent_bound, str):
            if latent_bound != "typical":
                raise ValueError(
                    "latent_bound must be None, a positive number or 'typical', "
                    f"got {latent_bound!r}"
                )
            centre = math.sqrt(max(dim - 0.5, 0.0))
            half_width = 3.0 / math.sqrt(2.0)
            low = max(centre - half_width, 0.0)
            return min(low, z0_norm), max(centre + half_width, z0_norm)
        bound = check_positive_float("latent_bound", latent_bound)
        if z0_norm > bound:
            raise ValueError(
                f"z0 has norm {z0_norm:.3g}, outside latent_bound={bound:.3g}"
            )
        return 0.0, bound

    def epsilon_sample(
        self,
        z0: Tensor,
        n_samples: int = 100,
        epsilon: float = 0.1,
        mask: Optional[Tensor] = None,
        seed: Optional[int] = 0,
        batch_size: int = 256,
        mask_kwargs: Optional[Dict[str, Any]] = None,
    ) -> EGBASResult:
        r"""Baseline: latents uniform in the L2 ball of radius ``epsilon``
        around ``z0``, with their membership of the region measured.

        .. math::
            z = z_0 + \epsilon\, r^{1/d} \frac{v}{\|v\|}, \quad
            v \sim \mathcal{N}(0, I),\ r \sim U(0, 1)

        Args:
            z0 (Tensor): the query latent, ``(1, *latent_shape)``, or
                ``latent_shape`` when its first size is not 1.
            n_samples (int, optional): samples to draw. Default: 100
            epsilon (float, optional): the ball's radius. Default: 0.1
            mask (Tensor, optional): bool supporting boundary set. Default:
                None (:meth:`supporting_boundaries` with ``mask_kwargs``)
            seed (int, optional): seed of the samples (and of the mask
                optimisation when ``mask`` is None). Default: 0
            batch_size (int, optional): latents per forward pass.
                Default: 256
            mask_kwargs (dict, optional): arguments of
                :meth:`supporting_boundaries` when ``mask`` is None.
                Default: None

        Returns:
            EGBASResult: ``in_region`` measured, ``tree`` all ``-1``.
        """
        epsilon = check_positive_float("epsilon", epsilon)
        check_positive_int("batch_size", batch_size)
        z0, pattern0, out0, mask = self._prepare_sampling(
            z0, n_samples, mask, seed, mask_kwargs
        )
        latent_shape = z0.shape[1:]
        dim = z0[0].numel()
        gen = make_generator(seed)
        direction = torch.randn(n_samples, dim, generator=gen)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = torch.rand(n_samples, 1, generator=gen).pow(1.0 / dim)
        offsets = (epsilon * radius * direction).to(z0)
        latents = (z0.flatten(1) + offsets).reshape(n_samples, *latent_shape)
        outputs, inside = [], []
        with preserve_model_state(self.forward_func), torch.no_grad():
            for start in range(0, n_samples, batch_size):
                pre, out = self._eval(latents[start : start + batch_size])
                outputs.append(out)
                inside.append(self._in_region(pre, pattern0, mask))
        return EGBASResult(
            query=z0[0].detach(),
            query_output=out0[0].detach(),
            latents=latents.detach(),
            outputs=torch.cat(outputs, dim=0).detach(),
            mask=mask,
            in_region=torch.cat(inside, dim=0),
            tree=torch.full((n_samples,), -1, dtype=torch.long, device=z0.device),
            method="epsilon",
            complete=True,
            n_requested=n_samples,
            n_proposed=n_samples,
            epsilon=epsilon,
        )

    def calibrate_epsilon(
        self,
        z0: Tensor,
        target_acceptance: float = 0.9,
        mask: Optional[Tensor] = None,
        n_samples: int = 256,
        iterations: int = 14,
        seed: Optional[int] = 0,
        epsilon_range: Tuple[float, float] = (1e-3, 20.0),
    ) -> float:
        r"""The largest ball radius whose epsilon samples stay in the region
        at the target rate.

        Geometric bisection on :math:`\epsilon` over ``epsilon_range``: each
        step draws ``n_samples`` epsilon-ball samples (same ``seed``) and
        keeps the half where the in-region fraction is at least
        ``target_acceptance``. This is how the baseline is set up for a fair
        comparison (and a natural ``step_size`` for :meth:`sample`).

        Args:
            z0 (Tensor): the query latent.
            target_acceptance (float, optional): in-region fraction to reach,
                in (0, 1]. Default: 0.9
            mask (Tensor, optional): the supporting boundary set; None uses
                :meth:`supporting_boundaries`. Default: None
            n_samples (int, optional): samples per bisection step. Default: 256
            iterations (int, optional): bisection steps. Default: 14
            seed (int, optional): seed of the samples. Default: 0
            epsilon_range (tuple of float, optional): search interval.
                Default: (1e-3, 20.0)

        Returns:
            float: the calibrated :math:`\epsilon` (the interval's lower end
            when even that radius misses the target).
        """
        if not 0.0 < float(target_acceptance) <= 1.0:
            raise ValueError(
                f"target_acceptance must be in (0, 1], got {target_acceptance}"
            )
        check_positive_int("iterations", iterations)
        low, high = (check_positive_float("epsilon_range", e) for e in epsilon_range)
        if high <= low:
            raise ValueError(f"epsilon_range must be increasing, got {epsilon_range}")
        if mask is None:
            mask = self.supporting_boundaries(z0, seed=seed)
        for _ in range(iterations):
            mid = (low * high) ** 0.5
            rate = self.epsilon_sample(
                z0, n_samples=n_samples, epsilon=mid, mask=mask, seed=seed
            ).acceptance_rate
            low, high = (mid, high) if rate >= target_acceptance else (low, mid)
        return low
