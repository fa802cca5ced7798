r"""E-GBAS: explorative sampling in the generative region of a query latent.

Jeon, Jeong & Choi, "An Efficient Explorative Sampling Considering the
Generative Boundaries of Deep Generative Neural Networks", AAAI 2020.

The public class; the algorithm's pieces live beside it: :mod:`.region`
(latents, masks, sign patterns, layer evaluation), :mod:`.mask` (the
supporting boundary set), :mod:`.tree` (the rapidly-exploring random tree),
:mod:`.epsilon` (the epsilon-ball baseline) and :mod:`.result`.
"""

import warnings
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ...._utils.captum_compat import get_module_from_name
from ...._utils.hooks import preserve_model_state
from ...._utils.validation import (
    check_number,
    check_positive_float,
    check_positive_int,
    check_submodule,
    make_generator,
    model_device,
)
from .arguments import (
    MASK_OPTIONS,
    check_batch_memory,
    check_bool,
    check_mask_kwargs,
    check_result_memory,
    query_batches,
)
from .epsilon import bisect_radius, epsilon_ball
from .mask import keep_probabilities
from .region import LayerSplit, SignPattern, check_mask, format_queries, format_query
from .result import EGBASResult, EGBASWarning
from .tree import QueryAndFirstPass, TreeSettings, grow_tree

__all__ = ["EGBAS", "EGBASResult", "EGBASWarning"]


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
           \theta^* = \arg\min_\theta\ \mathbb{E}_m
           \frac{\| g_{L:\ell+1}(g_{\ell:1}(z_0) \odot m) - G(z_0) \|_2^2}
           {\| g_{L:\ell+1}(g_{\ell:1}(z_0) \odot 0) - G(z_0) \|_2^2}
           + \frac{\lambda}{|h|} \|\theta\|_1,

       optimised with Adam through Captum's hard-concrete gates
       (:math:`\lambda` is ``sparsity``; the error relative to the empty
       mask's makes it scale-free, see :meth:`attribute`); the units with
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
        >>> mask = egbas.supporting_boundaries(z0, seed=0)
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
        model_device(generator)  # refuses a generator on the meta device
        LayerAttribution.__init__(self, generator, layer, device_ids)
        self._split = LayerSplit(generator, layer, device_ids)

    # ------------------------------------------------------------------ helpers
    def _query(self, z0: Any, run: Optional[Callable] = None) -> Tuple[Tensor, ...]:
        """``(z0, h(z0), G(z0))`` of a validated query, batch of one (inside
        the caller's ``preserve_model_state`` and ``no_grad`` block); ``run``
        (the formatted query to ``(h, G)``) replaces the plain forward pass."""
        z0 = format_query(self.forward_func, z0)
        pre0, out0 = (run or self._split.run)(z0)
        return z0, pre0, out0

    def _prepare_sampling(self, z0, n_samples, mask, seed, mask_kwargs, run=None):
        check_positive_int("n_samples", n_samples)
        mask_kwargs = check_mask_kwargs(mask_kwargs)
        make_generator(seed)  # validates the seed before any work
        z0, pre0, out0 = self._query(z0, run)
        check_result_memory(n_samples, z0, out0)
        if mask is None:
            mask = self.supporting_boundaries(z0, seed=seed, **mask_kwargs)
        mask = check_mask(mask, pre0.shape[1:], pre0.device)
        return z0, pre0, out0, mask

    # ---------------------------------------------------------- mask learning
    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: Tensor,
        sparsity: float = 0.5,
        n_steps: int = 200,
        lr: float = 0.2,
        temperature: float = 0.5,
        init_keep: float = 0.9,
        seed: Optional[int] = 0,
        show_progress: bool = False,
    ) -> Tensor:
        r"""Keep probabilities :math:`\theta^*` of the layer's units for each
        query latent (the Bernoulli mask optimisation of E-GBAS).

        Each unit :math:`i` gets a hard-concrete gate :math:`m_i` (Captum's
        :class:`~captum.module.BinaryConcreteStochasticGates`): with
        :math:`u \sim U(0, 1)`, :math:`\gamma = -0.1`, :math:`\zeta = 1.1`,

        .. math::
            m_i = \min\bigl(1, \max\bigl(0, \gamma + (\zeta - \gamma)\,
            \sigma((\log u - \log(1 - u) + \log\alpha_i) / \tau)\bigr)\bigr),
            \qquad
            \theta_i = P(m_i > 0) = \sigma(\log\alpha_i - \tau
            \log(-\gamma / \zeta)),

        a relaxed Bernoulli variable that is exactly 0 or 1 with positive
        probability. Each step draws one gate per unit and query, replaces
        the layer's output :math:`h` by :math:`h \odot m`, and takes an Adam
        step on :math:`\log\alpha` for

        .. math::
            \sum_{\text{queries}}
            \frac{\| g_{L:\ell+1}(h \odot m) - G(z_0) \|_2^2}
            {\| g_{L:\ell+1}(h \odot 0) - G(z_0) \|_2^2}
            + \frac{\lambda}{|h|} \sum_i \theta_i .

        **The sparsity is scale-free.** The reconstruction error is measured
        relative to the error of the empty mask (every unit zeroed), so the
        objective, hence the mask, does not change when the output is scaled
        or shifted (:math:`G \to aG + b`). Both terms are fractions: the full
        mask costs :math:`\lambda`, the empty mask 1, so for
        :math:`\lambda < 1` the empty mask is never optimal, and a unit is
        dropped when it accounts for less than :math:`\lambda` times the
        average unit's share of the empty mask's error. The default
        :math:`\lambda = 0.5` keeps the output within a few percent of that
        error. A query whose output does not change when every unit is zeroed
        has no supporting boundary: its :math:`\theta` is 0, with an
        :class:`EGBASWarning`.

        Args:
            inputs (Tensor or iterable of Tensor): query latents
                ``(N, *latent_shape)``, or an iterable of such batches (e.g. a
                ``DataLoader``); the batches are optimised one after another.
            sparsity (float, optional): :math:`\lambda \ge 0`; larger values
                give fewer supporting boundaries. Default: 0.5
            n_steps (int, optional): optimisation steps. Default: 200
            lr (float, optional): Adam learning rate on :math:`\log\alpha`.
                Default: 0.2
            temperature (float, optional): :math:`\tau` of the concrete
                relaxation, in (0, 1). Default: 0.5
            init_keep (float, optional): initial :math:`\theta`, in (0, 1).
                Default: 0.9
            seed (int, optional): seed of the gates' noise. Captum's gates
                draw it from the device's default generator, which is seeded
                inside a forked RNG state (the global RNG is left untouched).
                Default: 0
            show_progress (bool, optional): show a progress bar over the
                optimisation steps. Default: False

        Returns:
            Tensor: :math:`\theta^*`, shape ``(N, *layer_shape)``, in [0, 1].

        Examples::

            >>> theta = egbas.attribute(torch.randn(4, 8))
            >>> theta.shape
            torch.Size([4, 512])
        """
        sparsity = check_number("sparsity", sparsity, minimum=0.0)
        check_positive_int("n_steps", n_steps)
        lr = check_positive_float("lr", lr)
        temperature = check_number(
            "temperature",
            temperature,
            0.0,
            1.0,
            strict_minimum=True,
            strict_maximum=True,
        )
        init_keep = check_number(
            "init_keep", init_keep, 0.0, 1.0, strict_minimum=True, strict_maximum=True
        )
        check_bool("show_progress", show_progress)
        gen = make_generator(seed)
        thetas = [
            keep_probabilities(
                self._split,
                format_queries(self.forward_func, batch),
                sparsity,
                n_steps,
                lr,
                temperature,
                init_keep,
                gen,
                show_progress,
            )
            for batch in query_batches(inputs)
        ]
        if not thetas:
            raise ValueError("inputs holds no latents")
        return torch.cat(thetas) if len(thetas) > 1 else thetas[0]

    def supporting_boundaries(
        self,
        z0: Tensor,
        sparsity: float = 0.5,
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
        threshold = check_number(
            "threshold", threshold, 0.0, 1.0, strict_minimum=True, strict_maximum=True
        )
        unknown = sorted(set(kwargs) - set(MASK_OPTIONS))
        if unknown:
            raise TypeError(
                f"supporting_boundaries() got unknown argument(s) {unknown}"
            )
        z0 = format_query(self.forward_func, z0)
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
        z0 = format_queries(self.forward_func, z0, "z0")
        with preserve_model_state(self.forward_func), torch.no_grad():
            pre0, _ = self._split.run(z0)
            mask = check_mask(mask, pre0.shape[1:], pre0.device, warn_empty=False)
            return self._split.run_masked(z0, mask)

    # --------------------------------------------------------------- sampling
    def sample(
        self,
        z0: Tensor,
        n_samples: int = 100,
        mask: Optional[Tensor] = None,
        step_size: float = 0.25,
        seed: Optional[int] = 0,
        show_progress: bool = False,
        batch_size: int = 256,
        exploration_scale: float = 1.0,
        latent_bound: Union[None, float, str] = None,
        max_iterations: int = 200,
        n_step_halvings: int = 3,
        mask_kwargs: Optional[Dict[str, Any]] = None,
    ) -> EGBASResult:
        r"""Explore the generative region of ``z0`` with a boundary-constrained
        rapidly-exploring random tree.

        The tree grows in passes. A pass proposes about two candidates per
        tree node (at least 32, or half of ``n_samples`` if less; at most
        ``batch_size``): for each, a target
        :math:`t \sim \mathcal{N}(z_0, s^2 I)` (:math:`s` is
        ``exploration_scale``), its nearest tree node :math:`z_n`, and

        .. math::
            z_n + \min(\eta, \|t - z_n\|) \frac{t - z_n}{\|t - z_n\|}

        (:math:`\eta` is ``step_size``). All candidates of a pass go through
        the generator in one forward pass that stops at the layer (their sign
        patterns are all the test needs); those with :math:`z_0`'s sign
        pattern on ``mask`` (and inside ``latent_bound``) join the tree, the
        others are retried at half the step in the next pass. Every sample is
        in the region by construction. The generator's outputs are computed
        afterwards, for the accepted latents only; when the layer holds most
        of the generator's FLOPs, the candidates run through the whole
        generator instead and the accepted ones keep their outputs
        (whichever costs fewer FLOPs per accepted sample); the first pass
        then shares the query's forward pass.

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
            show_progress (bool, optional): show a progress bar over the
                samples found. Default: False
            batch_size (int, optional): most candidates per forward pass
                (and latents per output pass). The candidates of a pass extend
                the tree as it was before the pass, so a small ``batch_size``
                gives more, smaller passes and a deeper tree; passes never
                exceed what the tree can use (about two candidates per node,
                and at most what the remaining samples need), so a large
                value costs no memory. Default: 256
            exploration_scale (float, optional): standard deviation of the
                targets around ``z0``. Default: 1.0
            latent_bound (float or str, optional): None, a maximum latent
                norm, or ``"typical"``. Default: None
            max_iterations (int, optional): most passes of candidates; when
                they are used up before ``n_samples`` are found, the result
                holds the samples found, ``complete`` is False and an
                :class:`EGBASWarning` is issued. Default: 200
            n_step_halvings (int, optional): a rejected extension is retried
                in the following passes at :math:`1/2, 1/4, \dots, 2^{1-k}`
                of its step for this :math:`k`, so the longest in-region step
                is the one kept; 1 tries the full step only. Default: 3
            mask_kwargs (dict, optional): arguments of
                :meth:`supporting_boundaries` when ``mask`` is None.
                Default: None

        Returns:
            EGBASResult: ``in_region`` all True and ``tree`` the parents.
        """
        step_size = check_positive_float("step_size", step_size)
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_iterations", max_iterations)
        check_positive_int("n_step_halvings", n_step_halvings)
        exploration_scale = check_positive_float("exploration_scale", exploration_scale)
        check_bool("show_progress", show_progress)
        start = QueryAndFirstPass(
            self._split,
            partial(
                TreeSettings.for_query,
                n_samples=n_samples,
                step_size=step_size,
                batch_size=batch_size,
                exploration_scale=exploration_scale,
                latent_bound=latent_bound,
                max_iterations=max_iterations,
                n_step_halvings=n_step_halvings,
            ),
            seed,
        )
        with preserve_model_state(self.forward_func), torch.no_grad():
            z0, pre0, out0, mask = self._prepare_sampling(
                z0, n_samples, mask, seed, mask_kwargs, start
            )
            largest = start.settings.largest_pass()
            check_batch_memory("batch_size", batch_size, largest, z0, pre0, out0)
            region = SignPattern(pre0[0], mask)
            tree = grow_tree(
                self._split, z0, out0, region, start.settings, start.gen,
                show_progress, start.first,
            )  # fmt: skip
            latents, outputs = tree.latents, tree.outputs
            missing = (~tree.has_output).nonzero().squeeze(1)
            if missing.numel():
                outputs[missing] = self._split.outputs(latents[missing], largest)
        n_found = latents.shape[0]
        complete = n_found == n_samples
        if not complete:
            warnings.warn(
                f"the tree could not grow: found {n_found} of {n_samples} "
                f"samples in {tree.n_proposed} candidates; try a smaller step_size, "
                "a smaller mask (larger sparsity) or more max_iterations",
                EGBASWarning,
                stacklevel=2,
            )
        return EGBASResult(
            query=z0[0].detach(),
            query_output=out0[0].detach(),
            latents=latents,
            outputs=outputs,
            mask=mask,
            in_region=torch.ones(n_found, dtype=torch.bool, device=z0.device),
            tree=tree.parents,
            method="egbas",
            complete=complete,
            n_requested=n_samples,
            n_proposed=tree.n_proposed,
            n_passes=tree.n_passes,
            step_size=step_size,
        )

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
        with preserve_model_state(self.forward_func), torch.no_grad():
            z0, pre0, out0, mask = self._prepare_sampling(
                z0, n_samples, mask, seed, mask_kwargs
            )
            chunk = min(batch_size, n_samples)
            check_batch_memory("batch_size", batch_size, chunk, z0, pre0, out0)
            gen = make_generator(seed)
            latents, outputs, inside = epsilon_ball(
                self._split,
                z0,
                SignPattern(pre0[0], mask),
                n_samples,
                epsilon,
                chunk,
                gen,
            )
        return EGBASResult(
            query=z0[0].detach(),
            query_output=out0[0].detach(),
            latents=latents,
            outputs=outputs,
            mask=mask,
            in_region=inside,
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
            float: the calibrated :math:`\epsilon`. When the bisection
            saturates, an :class:`EGBASWarning` says so: at the interval's
            lower end (even that radius misses the target; that end is
            returned) or at its upper end (every radius tried met the target;
            the value is a lower bound).
        """
        target_acceptance = check_number(
            "target_acceptance", target_acceptance, 0.0, 1.0, strict_minimum=True
        )
        check_positive_int("iterations", iterations)
        check_positive_int("n_samples", n_samples)
        if not isinstance(epsilon_range, (tuple, list)) or len(epsilon_range) != 2:
            raise ValueError(
                f"epsilon_range must be a (low, high) pair, got {epsilon_range!r}"
            )
        low, high = (check_positive_float("epsilon_range", e) for e in epsilon_range)
        if high <= low:
            raise ValueError(f"epsilon_range must be increasing, got {epsilon_range}")
        with preserve_model_state(self.forward_func), torch.no_grad():
            # The samples are drawn and tested 256 at a time: nothing of size
            # n_samples is held.
            z0, pre0, _ = self._query(z0)
            if mask is None:
                mask = self.supporting_boundaries(z0, seed=seed)
            mask = check_mask(mask, pre0.shape[1:], pre0.device)
            low, high = bisect_radius(
                self._split,
                z0,
                SignPattern(pre0[0], mask),
                target_acceptance,
                n_samples,
                iterations,
                seed,
                (low, high),
            )
        first, last = epsilon_range
        if low == float(first):
            warnings.warn(
                f"calibrate_epsilon saturated at the lower end of epsilon_range "
                f"({first:g}): no radius tried kept {target_acceptance:.0%} of "
                "the samples in the region; the region is smaller than that "
                "(lower epsilon_range[0], or use a smaller mask)",
                EGBASWarning,
                stacklevel=2,
            )
        elif high == float(last):
            warnings.warn(
                f"calibrate_epsilon saturated at the upper end of epsilon_range "
                f"({last:g}): every radius tried kept {target_acceptance:.0%} of "
                f"the samples in the region, so the returned {low:.4g} is a lower "
                "bound (raise epsilon_range[1])",
                EGBASWarning,
                stacklevel=2,
            )
        return low
