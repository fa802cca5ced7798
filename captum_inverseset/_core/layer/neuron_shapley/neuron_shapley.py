"""NeuronShapley: Shapley values of a layer's neurons for a metric of the network.

Ghorbani & Zou, "Neuron Shapley: Discovering the Responsible Neurons"
(NeurIPS 2020). This module is the public class; the game, its metrics,
removal strategies and engines, the estimators and the run state live in
the other modules of this package (``docs/design.rst`` shows how they fit).
"""

import warnings
from typing import Any, Callable, List, Optional, Sequence, Union

import torch
from captum.attr import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import nn

from ...._utils.deprecation import warn_deprecated
from ...._utils.hooks import preserve_model_state
from ...._utils.validation import model_device
from .checkpoint import run_fingerprint
from .data import label_batches, make_batches
from .estimators import ExactEnumeration, PermutationSampling, TopKBandit
from .game import ShapleyGame
from .metrics import MetricType
from .options import ShapleyOptions, check_run_memory
from .result import NeuronShapleyResult
from .run_state import RunCheckpoint, broadcast_seed, dist_info, permutation_seed

__all__ = ["NeuronShapley", "NeuronShapleyWarning"]


class NeuronShapleyWarning(UserWarning):
    """A Neuron Shapley answer that is weak: every coalition has the same
    value at both ends, so the values are all zero or cancel out."""


class NeuronShapley(LayerAttribution, PerturbationAttribution):
    r"""Neuron Shapley (Ghorbani & Zou, 2020): the Shapley value of every neuron
    of one or more layers in the game whose value is a metric of the network.

    The players are the units of ``layer``: the channels of a convolutional
    layer (dimension 1 of its output), the units of a linear layer. For a
    coalition :math:`S` of players, :math:`V(S)` is the metric (accuracy, loss,
    ...) of the network in which the players outside :math:`S` are removed:
    their output is replaced by its mean over the evaluation inputs
    (``removal="mean"``) or by zero (``removal="zero"``). The Shapley value of
    player :math:`i` among :math:`P` players is

    .. math::

        \phi_i = \frac{1}{P!} \sum_{\pi} \left[ V(S^\pi_i \cup \{i\})
        - V(S^\pi_i) \right]

    where :math:`S^\pi_i` is the set of players after :math:`i` in the
    permutation :math:`\pi` (walking :math:`\pi` removes players one by one
    from the full network). The values satisfy efficiency,
    :math:`\sum_i \phi_i = V(N) - V(\emptyset)`.

    The estimate samples permutations (truncated Monte Carlo: a walk stops
    once :math:`|V(S) - V(\emptyset)|` falls below ``truncation_tolerance``;
    the remaining players get a zero contribution). With ``top_k``, a
    multi-armed bandit stops sampling a player once its empirical Bernstein
    confidence interval shows whether it is in the top ``k``, which only
    needs the coalitions next to the still-uncertain players. With
    ``exact=True``, every coalition is enumerated (at most ``20`` players).

    Many coalitions are evaluated in one forward pass by an *engine*
    (``engine=``): the reference runs the whole model with the player layers
    masked by hooks; faster engines split the model with ``torch.fx`` and
    rerun only what a coalition changes. Every engine gives the reference's
    values.

    :meth:`attribute` returns the values (Captum's contract);
    :meth:`interpret` returns a :class:`NeuronShapleyResult` with the
    standard errors, confidence bounds and counts.
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: Union[nn.Module, Sequence[nn.Module]],
        device_ids: Optional[List[int]] = None,
        prefix_cache: bool = True,
    ) -> None:
        r"""
        Args:
            forward_func (Callable or torch.nn.Module): the model or a
                function computing its outputs (logits for the built-in
                metrics).
            layer (torch.nn.Module or list of torch.nn.Module): the layer
                whose units are the players, or a list of layers whose units
                together form the player set.
            device_ids (list of int, optional): as in Captum (DataParallel);
                the engines run ``forward_func`` as given. Default: None
            prefix_cache (bool, optional): deprecated, use
                ``engine="hooks"`` in :meth:`attribute` for
                ``prefix_cache=False``. Default: True
        """
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers or not all(isinstance(m, nn.Module) for m in layers):
            raise ValueError("layer must be an nn.Module or a list of nn.Module")
        if len({id(m) for m in layers}) != len(layers):
            raise ValueError("layer lists the same module twice")
        if isinstance(forward_func, nn.Module):
            for m in layers:
                if not any(m is sub for sub in forward_func.modules()):
                    raise ValueError("layer is not a submodule of forward_func")
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        PerturbationAttribution.__init__(self, forward_func)
        self._layers = layers
        self._layer_is_list = isinstance(layer, (list, tuple))
        self._default_engine = "auto"
        if not prefix_cache:
            warn_deprecated(
                "NeuronShapley(prefix_cache=False) is deprecated, use "
                "attribute(..., engine='hooks')"
            )
            self._default_engine = "hooks"
        self._last_result: Optional[NeuronShapleyResult] = None

    @property
    def last_result(self) -> Optional[NeuronShapleyResult]:
        """Deprecated: the result of the last call; use :meth:`interpret`."""
        warn_deprecated(
            "NeuronShapley.last_result is deprecated, use interpret() to get the "
            "NeuronShapleyResult"
        )
        return self._last_result

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        metric: MetricType = "accuracy",
        metric_class: Optional[int] = None,
        n_permutations: int = 200,
        removal: str = "mean",
        truncation_tolerance: Optional[float] = None,
        truncation_patience: int = 1,
        top_k: Optional[int] = None,
        bandit_delta: float = 0.05,
        bandit_tolerance: float = 0.0,
        bandit_union_bound: bool = True,
        bandit_min_samples: int = 10,
        bandit_value_range: Any = None,
        exact: bool = False,
        examples_per_permutation: Optional[int] = None,
        seed: Optional[int] = 0,
        batch_size: Optional[int] = None,
        coalitions_per_batch: Optional[int] = None,
        permutations_per_round: int = 8,
        checkpoint: Optional[str] = None,
        checkpoint_every: int = 8,
        checkpoint_key: Optional[str] = None,
        distributed: Optional[bool] = None,
        show_progress: bool = False,
        engine: Optional[str] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        max_memory: Optional[int] = None,
        return_stats: bool = False,
    ) -> Any:
        r"""Estimate the Shapley value of every player (neuron).

        Args:
            inputs (Tensor, tuple of Tensor or DataLoader): the evaluation
                inputs on which the metric is computed, or a ``DataLoader``
                yielding ``(inputs, labels)`` batches or inputs only. Inputs
                holding NaN or an infinity are refused.
            target (int, Tensor or list, optional): the labels the metric
                compares the outputs with, one per example (or one int for
                all); for the built-in metrics, class indices of the model's
                output. None uses the full network's own predictions (the
                metric then measures agreement with the unablated model).
                With a DataLoader that yields labels, must be None; with one
                that yields inputs only, the labels of every example in the
                loader's order (or one int). Default: None
            additional_forward_args (Any, optional): extra arguments of
                ``forward_func`` after the inputs (only the ``"hooks"``
                engine takes them). Default: None
            metric (str or Callable, optional): ``"accuracy"``, ``"loss"``
                (negative cross-entropy, so larger is better),
                ``"class_accuracy"`` (accuracy on the examples of class
                ``metric_class``) or a callable ``metric(outputs, target)``
                returning a scalar tensor or a number; ``outputs`` is what
                the model returns for one coalition (a tensor, or a tuple or
                dict of tensors). A callable is averaged over evaluation
                batches weighted by their size. The built-in metrics need a
                logits tensor ``(N, classes)``. Default: "accuracy"
            metric_class (int, optional): the class of
                ``"class_accuracy"``. Default: None
            n_permutations (int, optional): permutations to sample (in total,
                over all ranks). Default: 200
            removal (str, optional): ``"mean"`` replaces a removed unit's
                output by its mean over the inputs, ``"zero"`` by zero,
                ``"conv_bn"`` as the paper's code does for a convolution and
                its BatchNorm (the channel then outputs the BatchNorm's
                shift). Default: "mean"
            truncation_tolerance (float, optional): stop walking a
                permutation once :math:`|V(S) - V(\emptyset)|` is below this;
                None walks every permutation to the end (unbiased, exact
                efficiency). Default: None
            truncation_patience (int, optional): a walk is truncated once
                ``truncation_patience`` consecutive evaluated coalitions are
                within ``truncation_tolerance`` of :math:`V(\emptyset)`. 1
                stops at the first; the paper's code waits for more than 5
                consecutive removals (``truncation_patience=6``).
                Default: 1
            top_k (int, optional): only separate the top ``k`` players from
                the rest, with a bandit on empirical Bernstein bounds; stops
                early once every player is settled. Default: None
            bandit_delta (float, optional): failure probability of the
                bandit's decisions: with ``bandit_union_bound``, each
                player's interval (also the reported bounds) is at
                ``bandit_delta / P``. Default: 0.05
            bandit_tolerance (float, optional): :math:`\epsilon` of an
                :math:`\epsilon`-approximate top ``k``: a player is settled
                once its interval lies above the (k+1)-th estimate minus
                :math:`\epsilon` or below the k-th estimate plus
                :math:`\epsilon`. Default: 0.0
            bandit_union_bound (bool, optional): a union bound over the
                :math:`P` players (the paper's code has none), so that all
                decisions hold together with probability
                ``1 - bandit_delta``. Default: True
            bandit_min_samples (int, optional): a player is settled only
                after this many of its contributions were evaluated (not set
                to 0 by truncation). Default: 10
            bandit_value_range (tuple, str or None, optional): ``(low,
                high)``, the range of the metric, whose width bounds the
                marginal contributions (the range term of the bound); None
                uses the metric's known range ([0, 1] for the accuracies)
                and each player's observed range for other metrics;
                ``"observed"`` always the observed range (not a valid bound:
                it is 0 while a player's contributions are all equal).
                Default: None
            exact (bool, optional): enumerate all :math:`2^P` coalitions
                (at most 20 players). Default: False
            examples_per_permutation (int, optional): evaluate each
                permutation on a fresh random subset of this many examples
                (drawn from the permutation's seed), as the paper does (128
                images of 25,000), so the data can be much larger than what
                one permutation evaluates; the standard errors then include
                the variation between subsets, and each walk's contributions
                sum to :math:`V(N) - V(\emptyset)` on its subset. None
                evaluates every permutation on all the examples.
                Default: None
            seed (int, optional): seed of the permutations; None draws one.
                Default: 0
            batch_size (int, optional): evaluation examples per forward
                pass for tensor inputs; None uses all. Default: None
            coalitions_per_batch (int, optional): coalitions evaluated in
                one forward pass; None lets the engine choose (on a CPU about
                1024 examples per pass, more for the segment engines with
                several player layers; on CUDA a quarter of the free memory,
                at most 512 coalitions). Default: None
            permutations_per_round (int, optional): permutations between two
                bandit decisions, all-reduces, checkpoints and callbacks.
                Default: 8
            checkpoint (str, optional): file to save the statistics to and to
                resume from when it exists. The file holds a fingerprint of
                what determines the values (a hash of the model's parameters
                and buffers, of the inputs in their order and the labels, the
                player layers' names, the metric and the arguments); a
                checkpoint of another run is refused with an error naming
                what differs. Needs an int ``seed``. Default: None
            checkpoint_every (int, optional): save after at least this many
                permutations (rounded up to whole rounds). Default: 8
            checkpoint_key (str, optional): a name for what a checkpoint
                cannot fingerprint by itself: a callable ``metric`` (its code
                and closure) or a ``forward_func`` that is not an
                ``nn.Module``. Required with a checkpoint in those cases;
                change it whenever the metric or model changes.
                Default: None
            distributed (bool, optional): split permutations over the ranks
                of ``torch.distributed``; None uses it when a process group
                with more than one rank is initialised. Default: None
            show_progress (bool, optional): tqdm bar over permutations.
                Default: False
            engine (str, optional): how coalitions are evaluated:
                ``"hooks"`` (the reference: full forward passes, player
                layers masked by hooks; any ``forward_func``), ``"prefix"``
                (the model up to the first player layer runs once per
                batch), ``"segments"`` (a chain through the player layers
                split at each, every segment once per distinct upstream
                mask), ``"incremental"`` (the segments depth first, the
                layer after each player layer updated one removed channel at
                a time), ``"graph"`` (any traced network, residual
                connections and branches included: each node once per
                distinct mask of the player layers upstream of it, memory
                bounded by ``max_memory``) or ``"auto"``: the fastest that
                applies (incremental on a CPU with at least 96 examples per
                batch, then segments, graph, prefix, hooks). A named engine
                that does not apply raises. None is ``"auto"``.
                Default: None
            callback (Callable, optional): called after every round with
                the running statistics (``n_permutations``,
                ``n_evaluations``, ``counts``, ``means()``,
                ``variances()``, ``radius(delta)``, ``settled(k, delta)``);
                a true return value ends the run there. Default: None
            max_memory (int, optional): bytes the activations of one forward
                pass may take; the ``"graph"`` engine splits its passes
                (down to one coalition and slices of the examples) to stay
                below. None: a quarter of the memory available on the
                model's device. Default: None
            return_stats (bool, optional): deprecated, use :meth:`interpret`;
                also return the :class:`NeuronShapleyResult`.
                Default: False

        Returns:
            *Tensor* or *tuple of Tensor*: one value per unit of ``layer``
            (shape ``(C,)``), a tuple of such tensors when ``layer`` is a
            list; float32, on the model's device. With the deprecated
            ``return_stats=True``, ``(attributions, NeuronShapleyResult)``.

        Examples::

            >>> from captum_inverseset import NeuronShapley
            >>> from captum_inverseset.zoo import digits_classifier
            >>> from captum_inverseset.zoo import load_digits_dataset
            >>> model = digits_classifier()
            >>> data = load_digits_dataset()
            >>> ns = NeuronShapley(model, model.conv3)
            >>> values = ns.attribute(data.test_inputs, target=data.test_labels,
            ...                       metric="accuracy", n_permutations=20)
            >>> values.shape
            torch.Size([32])
        """
        if return_stats:
            warn_deprecated(
                "NeuronShapley.attribute(return_stats=True) is deprecated, use "
                "interpret() to get the NeuronShapleyResult"
            )
        options = dict(locals())
        for name in ("self", "return_stats", "__class__"):
            options.pop(name, None)
        result = self._run(**options)
        attributions = self._format(result)
        return (attributions, result) if return_stats else attributions

    def interpret(
        self,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> NeuronShapleyResult:
        r"""Estimate the Shapley values and return them with their statistics.

        Takes the arguments of :meth:`attribute` (except ``return_stats``).

        Returns:
            :class:`NeuronShapleyResult`: the values (flat, layer by layer),
            standard errors, confidence bounds, counts, :math:`V(N)`,
            :math:`V(\emptyset)`, the evaluations and the engine used.

        Examples::

            >>> result = NeuronShapley(model, model.conv3).interpret(
            ...     x, target=y, metric="loss", n_permutations=50)
            >>> result.top_players(5)
            >>> fig, ax = result.plot(top=10)
        """
        if "return_stats" in kwargs:
            raise TypeError("interpret() takes no return_stats (it returns the result)")
        return self._run(inputs, target, additional_forward_args, **kwargs)

    def _run(
        self,
        inputs: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> NeuronShapleyResult:
        """Validate, build the game, run the estimator, make the result."""
        if kwargs.get("engine") is None:
            kwargs["engine"] = self._default_engine
        opts = ShapleyOptions.checked(self.forward_func, **kwargs)
        rank, world, is_dist = dist_info(opts.distributed)
        seed = opts.seed
        if seed is None:
            seed = int(torch.Generator().seed() % (2**31))
            if is_dist:
                seed = broadcast_seed(seed)
        device = model_device(self.forward_func)
        builtin = opts.metric.builtin
        batches, n_examples = make_batches(
            inputs, target, additional_forward_args, opts.batch_size, device, builtin
        )
        m = opts.examples_per_permutation
        if m is not None and m > n_examples:
            raise ValueError(
                f"examples_per_permutation={m} is more than the {n_examples} examples"
            )
        with preserve_model_state(self.forward_func):
            if builtin:
                metric_class = getattr(opts.metric, "metric_class", None)
                batches = label_batches(
                    self.forward_func, batches, opts.metric.name, metric_class
                )
            game = ShapleyGame(
                self.forward_func,
                self._layers,
                batches,
                opts.metric,
                opts.removal,
                engine=opts.engine,
                rows_per_pass=opts.coalitions_per_batch,
                exact=opts.exact,
                memory_budget=opts.max_memory,
            )
            if opts.engine == "auto" and game.trace_error is not None:
                warnings.warn(
                    f"torch.fx cannot trace the model ({game.trace_error}), so "
                    f"every coalition costs a forward pass of the whole model "
                    f"(engine={game.engine_name!r}) instead of only the parts a "
                    "removal changes. Python control flow on the inputs in a "
                    "forward (a shape check, a loop over the batch) is the usual "
                    "cause: an nn.Sequential of the same modules can be traced. "
                    "Pass engine='hooks' to silence this",
                    NeuronShapleyWarning,
                    stacklevel=4,
                )
            if opts.top_k is not None and opts.top_k >= game.n_players:
                raise ValueError(
                    f"top_k must be smaller than the number of players "
                    f"({game.n_players}), got {opts.top_k}"
                )
            largest = max(b[0][0].shape[0] for b in batches)
            check_run_memory(game, opts, largest, device)
            ends = game.evaluate(
                torch.stack([torch.ones(game.n_players), torch.zeros(game.n_players)])
            )
            value_full, value_empty = ends[0].item(), ends[1].item()
            if value_full == value_empty:
                warnings.warn(
                    f"V(N) == V(empty) == {value_full:.6g}: removing every player "
                    "does not change the metric, so the values sum to 0 (with "
                    "accuracy on few examples, usually every value is 0); use a "
                    "finer metric (metric='loss'), more examples or other layers",
                    NeuronShapleyWarning,
                    stacklevel=4,
                )
            if opts.exact:
                fields = ExactEnumeration().run(game, opts.show_progress)
                fields["top_k_settled"] = opts.top_k is not None
            else:
                fields = self._sample(
                    game, opts, seed, batches, target, value_full, value_empty,
                    rank, world, is_dist,
                )  # fmt: skip
        engine = game.engine_name
        result = NeuronShapleyResult(
            layer_names=self._layer_names(),
            layer_sizes=list(game.layer_sizes),
            n_forward_passes=game.n_forward_passes,
            value_full=value_full,
            value_empty=value_empty,
            top_k=opts.top_k,
            engine=engine,
            prefix_cache=engine != "hooks",
            segment_cache=engine in ("segments", "incremental"),
            incremental=engine == "incremental",
            metric=opts.metric.name,
            removal=opts.removal.name,
            **fields,
        )
        self._last_result = result
        return result

    def _sample(
        self, game, opts, seed, batches, target, value_full, value_empty,
        rank, world, is_dist,
    ) -> dict:  # fmt: skip
        fp = ""
        if opts.checkpoint is not None or is_dist:
            fp = run_fingerprint(
                self.forward_func,
                batches,
                target_given=target is not None
                or any(b[1] is not None for b in batches),
                layer_names=self._layer_names(),
                layer_sizes=list(game.layer_sizes),
                metric=opts.metric.identity(),
                checkpoint_key=opts.checkpoint_key,
                arguments=opts.fingerprint_arguments(seed),
            )
        bandit = None
        if opts.top_k is not None:
            bandit = TopKBandit(
                opts.top_k,
                opts.bandit_delta,
                opts.bandit_tolerance,
                union_bound=opts.bandit_union_bound,
                min_samples=opts.bandit_min_samples,
                value_range=opts.marginal_range(),
            )
        estimator = PermutationSampling(
            opts.n_permutations,
            opts.truncation_tolerance,
            seed,
            opts.permutations_per_round,
            delta=opts.bandit_delta,
            bandit=bandit,
            callback=opts.callback,
            truncation_patience=opts.truncation_patience,
            value_range=opts.marginal_range(),
        )
        walk_game = None
        if opts.examples_per_permutation is not None:
            walk_game = self._subset_games(game, batches, opts, seed)
        estimator.walk_game = walk_game
        checkpoint = RunCheckpoint(opts.checkpoint, opts.checkpoint_every, fp, rank)
        return estimator.run(
            game, value_full, value_empty, checkpoint, rank, world, is_dist,
            opts.show_progress,
        )  # fmt: skip

    @staticmethod
    def _subset_games(game, batches, opts, seed):
        """``walk_game(i)``: the game on permutation ``i``'s random subset of
        the examples, with its two ends."""
        pool = tuple(torch.cat(xs) for xs in zip(*(b[0] for b in batches)))
        labels = None
        if batches[0][1] is not None:
            labels = torch.cat([b[1] for b in batches])
        extra = batches[0][2]
        n = pool[0].shape[0]
        m = opts.examples_per_permutation
        size = opts.batch_size or m
        ends = torch.stack([torch.ones(game.n_players), torch.zeros(game.n_players)])

        def walk_game(index: int):
            gen = torch.Generator().manual_seed(permutation_seed(seed, index) ^ 1)
            chosen = torch.randperm(n, generator=gen)[:m].to(pool[0].device)
            sub_batches = []
            for start in range(0, m, size):
                idx = chosen[start : start + size]
                y = None if labels is None else labels[idx]
                sub_batches.append((tuple(t[idx] for t in pool), y, extra))
            sub = game.on_examples(sub_batches)
            v = sub.evaluate(ends)
            return sub, v[0].item(), v[1].item()

        return walk_game

    def _format(self, result: NeuronShapleyResult) -> Any:
        # On the model's device, like Captum's attributions; the statistics
        # of the result stay float64 on the CPU.
        device = model_device(self.forward_func)
        per_layer = [v.float().to(device) for v in result.values_per_layer()]
        return tuple(per_layer) if self._layer_is_list else per_layer[0]

    def _layer_names(self) -> List[str]:
        names = []
        for i, layer in enumerate(self._layers):
            name = None
            if isinstance(self.forward_func, nn.Module):
                for n, m in self.forward_func.named_modules():
                    if m is layer:
                        name = n
                        break
            names.append(name or f"layer{i}")
        return names
