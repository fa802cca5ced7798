"""The sub-commands of ``captum-inverseset`` (see :mod:`captum_inverseset.cli`).

Each validates its options, loads and probes the user's model, calls the
library through its public API and writes a PNG, the result and a JSON
summary into ``--out``.
"""

from typing import Any, Dict, Optional

import torch
from torch import nn

from . import _cli_support as support
from ._cli_support import (
    CLIError,
    as_option,
    build_model,
    build_preprocess,
    check_labels,
    check_selector,
    library_arguments,
    load_data,
    load_data_file,
    parse_device,
    parse_selector,
    parse_shape,
    prepare_out,
    probe_layer,
    probe_model,
    resolve_layer,
    wrap_model,
)
from .demo import _shapley_result


def _limit(inputs, labels, limit: Optional[int]):
    if limit is None:
        return inputs, labels
    return inputs[:limit], None if labels is None else labels[:limit]


def _classifier(args, device: torch.device):
    """``(model, forward)``: the user's model (layers are looked up in it)
    and the function the methods call, with ``--normalize``/``--preprocess``
    in front of it."""
    model = build_model(args.model, args.weights, device)
    return model, wrap_model(model, build_preprocess(args, device))


# --------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------


def cmd_shapley(args) -> dict:
    from . import NeuronShapley

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    raw, model = _classifier(args, device)
    layers = [resolve_layer(raw, name) for name in args.layer]
    inputs, labels = _limit(*load_data(args.data, device), args.limit)
    logits = probe_model(model, inputs, "--data", "the model")
    n_classes = check_labels(labels, logits)
    if labels is None and args.metric in ("accuracy", "loss", "class_accuracy"):
        raise CLIError(f"--metric {args.metric} needs labels in --data")
    kwargs: Dict[str, Any] = {}
    if args.metric == "class_accuracy":
        if args.cls is None:
            raise CLIError("--metric class_accuracy needs --class")
        if args.cls >= n_classes:
            raise CLIError(
                f"--class: {args.cls} out of range, the model has {n_classes} "
                f"outputs (valid: 0 to {n_classes - 1})"
            )
        kwargs["metric_class"] = args.cls
    n_players = 0
    for name, layer in zip(args.layer, layers):
        out = probe_layer(model, layer, inputs, "--layer")
        if out.dim() < 2:
            raise CLIError(f"--layer: {name} has no unit dimension")
        n_players += out.shape[1]
    if args.top_k is not None and args.top_k >= n_players:
        raise CLIError(
            f"--top-k: must be smaller than the number of neurons ({n_players})"
        )
    ns = NeuronShapley(model, layers if len(layers) > 1 else layers[0])
    options = {
        "n_permutations": "--n-permutations",
        "top_k": "--top-k",
        "metric_class": "--class",
        "metric": "--metric",
        "target": "--data",
        "inputs": "--data",
        "seed": "--seed",
    }
    with library_arguments(options):
        result = _shapley_result(
            ns,
            inputs,
            target=labels,
            metric=args.metric,
            n_permutations=args.n_permutations,
            top_k=args.top_k,
            seed=args.seed,
            show_progress=not args.quiet,
            **kwargs,
        )
    per_layer = result.values_per_layer()
    payload = {
        "layers": args.layer,
        "metric": args.metric,
        "values": [v.detach().cpu().flatten().tolist() for v in per_layer],
    }
    return support.write_outputs(result, args.out, "shapley", payload)


def _generator_parameterization(generator: nn.Module, latent_dim: Optional[int]):
    """The generator as the sampler takes it: with ``--latent-dim``, wrapped
    with that latent shape (else the generator's own ``latent_dim``)."""
    if latent_dim is None:
        return generator
    from .param import GeneratorParameterization

    return GeneratorParameterization(generator, (latent_dim,))


def _latent_size(generator: nn.Module, latent_dim: Optional[int]) -> int:
    size = latent_dim or getattr(generator, "latent_dim", None)
    if size is None:
        code_shape = getattr(generator, "code_shape", None)
        if code_shape is not None and len(code_shape) == 1:
            size = int(code_shape[0])
    if size is None:
        raise CLIError("--latent-dim is required for this generator")
    return int(size)


def cmd_inverse_set(args) -> dict:
    from . import NeuronInverseSet

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    raw, model = _classifier(args, device)
    layer = resolve_layer(raw, args.layer)
    generator = encoder = None
    if args.generator:
        generator = build_model(
            args.generator,
            args.generator_weights,
            device,
            "--generator",
            "--generator-weights",
        )
    elif args.generator_weights or args.latent_dim:
        flag = "--generator-weights" if args.generator_weights else "--latent-dim"
        raise CLIError(f"{flag} needs --generator")
    if args.encoder:
        encoder = build_model(
            args.encoder, args.encoder_weights, device, "--encoder", "--encoder-weights"
        )
    elif args.encoder_weights:
        raise CLIError("--encoder-weights needs --encoder")
    input_shape = parse_shape(args.input_shape) if args.input_shape else None
    if generator is None and input_shape is None:
        raise CLIError("--input-shape is required when no --generator is given")
    low, high = args.range
    if not low < high:
        raise CLIError(f"--range: Z1 must be smaller than Z2, got {low} {high}")
    selector = parse_selector(args.neuron)

    # Check model, generator, encoder and neuron on one probe before sampling.
    if generator is not None:
        size = _latent_size(generator, args.latent_dim)
        z = torch.zeros(2, size, device=device)
        probe = probe_model(generator, z, "--latent-dim", "the generator")
        if not torch.is_tensor(probe):
            raise CLIError("--generator: must return one tensor of inputs")
        if input_shape is not None and tuple(probe.shape[1:]) != input_shape:
            raise CLIError(
                f"--input-shape: the generator makes inputs of shape "
                f"{tuple(probe.shape[1:])}, not {input_shape}"
            )
        generator = _generator_parameterization(generator, args.latent_dim)
    else:
        probe = torch.full((2, *input_shape), 0.5, device=device)
    probe_model(
        model, probe, "--generator" if generator else "--input-shape", "the model"
    )
    if encoder is not None:
        probe_model(encoder, probe, "--encoder", "the encoder")
    check_selector(selector, probe_layer(model, layer, probe, "--layer"))

    sampler = NeuronInverseSet(model, layer, generator=generator, encoder=encoder)
    options = {
        "neuron_selector": "--neuron",
        "activation_range": "--range",
        "n_samples": "--n-samples",
        "batch_size": "--batch-size",
        "input_shape": "--input-shape",
        "latent_shape": "--latent-dim",
        "seed": "--seed",
    }
    with library_arguments(options):
        result = sampler.sample(
            selector,
            activation_range=(low, high),
            n_samples=args.n_samples,
            batch_size=args.batch_size,
            input_shape=input_shape,
            seed=args.seed,
            show_progress=not args.quiet,
        )
    payload = {
        "layer": args.layer,
        "neuron": args.neuron,
        "activation_range": [low, high],
        "n_samples": int(result.inputs.shape[0]),
        "feasible_fraction": float(result.feasible.float().mean()),
    }
    return support.write_outputs(result, args.out, "inverse_set", payload)


def cmd_egbas(args) -> dict:
    from . import EGBAS

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    generator = build_model(args.generator, args.weights, device, "--generator")
    layer = resolve_layer(generator, args.layer)
    latent_dim = _latent_size(generator, args.latent_dim)
    gen = torch.Generator().manual_seed(args.seed)
    z0 = torch.randn(1, latent_dim, generator=gen).to(device)
    probe_model(generator, z0, "--latent-dim", "the generator")
    probe_layer(generator, layer, z0, "--layer")
    egbas = EGBAS(generator, layer)
    options = {"n_samples": "--n-samples", "seed": "--seed", "z0": "--latent-dim"}
    with library_arguments(options):
        result = egbas.sample(
            z0, n_samples=args.n_samples, seed=args.seed, show_progress=not args.quiet
        )
    payload = {
        "layer": args.layer,
        "n_samples": int(result.latents.shape[0]),
        "mask_size": int(result.mask.sum()),
        "in_region_fraction": float(result.in_region.float().mean()),
    }
    return support.write_outputs(result, args.out, "egbas", payload)


def _image_probe(model, input_shape, device, option: str) -> torch.Tensor:
    probe = torch.full((2, *input_shape), 0.5, device=device)
    probe_model(model, probe, option, "the model")
    return probe


def cmd_profile(args) -> dict:
    from . import NeuronProfile

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    raw, model = _classifier(args, device)
    layer = resolve_layer(raw, args.layer)
    selector = parse_selector(args.neuron)
    inputs, labels = _limit(*load_data(args.data, device), args.limit)
    probe_model(model, inputs, "--data", "the model")
    check_selector(selector, probe_layer(model, layer, inputs, "--layer"))
    options = {
        "neuron_selector": "--neuron",
        "k": "--k",
        "n_bins": "--n-bins",
        "batch_size": "--batch-size",
        "target": "--data",
        "inputs": "--data",
    }
    with library_arguments(options):
        result = NeuronProfile(model, layer).interpret(
            inputs,
            selector,
            target=labels,
            k=args.k,
            n_bins=args.n_bins,
            batch_size=args.batch_size,
            show_progress=not args.quiet,
        )
    low, high = result.activation_range(0.99, 1.0)
    payload = {
        "layer": args.layer,
        "neuron": args.neuron,
        "n_examples": int(result.n_examples),
        "top_indices": result.top_indices.tolist(),
        "top_activations": result.top_activations.tolist(),
        "top_1_percent_band": [low, high],
        "class_means": (
            None if result.class_means is None else result.class_means.tolist()
        ),
    }
    return support.write_outputs(result, args.out, "profile", payload)


def cmd_maximize(args) -> dict:
    from . import NeuronActivationMaximization
    from .param import standard_transforms

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    raw, model = _classifier(args, device)
    layer = resolve_layer(raw, args.layer)
    selector = parse_selector(args.neuron)
    input_shape = parse_shape(args.input_shape)
    probe = _image_probe(model, input_shape, device, "--input-shape")
    check_selector(selector, probe_layer(model, layer, probe, "--layer"))
    transforms = None
    if args.transforms:
        if len(input_shape) != 3:
            raise CLIError("--transforms needs image inputs: --input-shape C,H,W")
        transforms = standard_transforms(min(input_shape[1:]))
    options = {
        "neuron_selector": "--neuron",
        "n_inputs": "--n-inputs",
        "n_steps": "--n-steps",
        "lr": "--lr",
        "total_variation_weight": "--tv-weight",
        "input_shape": "--input-shape",
    }
    with library_arguments(options):
        result = NeuronActivationMaximization(model, layer).interpret(
            selector,
            input_shape=input_shape,
            n_inputs=args.n_inputs,
            n_steps=args.n_steps,
            lr=args.lr,
            transforms=transforms,
            total_variation_weight=args.tv_weight,
            negative=args.negative,
            seed=args.seed,
            show_progress=not args.quiet,
        )
    payload = {
        "layer": args.layer,
        "neuron": args.neuron,
        "negative": bool(args.negative),
        "initial_objective": result.initial_objective.tolist(),
        "final_objective": result.final_objective.tolist(),
    }
    return support.write_outputs(result, args.out, "maximize", payload)


def _dissection_data(spec: str, device: torch.device, limit: Optional[int]):
    """``inputs``, ``masks`` and optional ``concept_names`` of a data file."""
    obj = load_data_file(spec)
    if "masks" not in obj:
        raise CLIError(
            "--data: dissect needs a file with 'inputs' and 'masks' (N, K, ...) "
            "(and optionally 'concept_names')"
        )
    masks, names = obj["masks"], obj.get("concept_names")
    inputs, _ = load_data(spec, device)
    if not torch.is_tensor(masks):
        raise CLIError(f"--data: 'masks' must be a tensor, got {type(masks).__name__}")
    if masks.dim() == 0 or masks.shape[0] != inputs.shape[0]:
        raise CLIError(
            f"--data: 'masks' must have one entry per input ({inputs.shape[0]}), "
            f"got shape {tuple(masks.shape)}"
        )
    if names is not None and (
        not isinstance(names, (list, tuple))
        or not all(isinstance(n, str) for n in names)
    ):
        raise CLIError("--data: 'concept_names' must be a list of str")
    if limit is not None:
        inputs, masks = inputs[:limit], masks[:limit]
    return inputs, masks, None if names is None else list(names)


def cmd_dissect(args) -> dict:
    from . import NetworkDissection

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    raw, model = _classifier(args, device)
    layer = resolve_layer(raw, args.layer)
    inputs, masks, names = _dissection_data(args.data, device, args.limit)
    probe_model(model, inputs, "--data", "the model")
    probe_layer(model, layer, inputs, "--layer")
    options = {
        "quantile": "--quantile",
        "units": "--units",
        "batch_size": "--batch-size",
        "concept_masks": "--data",
        "concept_names": "--data",
        "inputs": "--data",
        "NetworkDissection": "--layer",
    }
    units = None
    if args.units:
        with as_option("--units"):
            units = [int(u) for u in args.units.split(",")]
    with library_arguments(options):
        result = NetworkDissection(model, layer).interpret(
            inputs,
            masks,
            concept_names=names,
            units=units,
            quantile=args.quantile,
            batch_size=args.batch_size,
            show_progress=not args.quiet,
        )
    best = {}
    for concept in result.concept_names:
        top_units, iou = result.rank_units(concept, min(args.top, len(result.units)))
        best[concept] = {"units": top_units.tolist(), "iou": iou.tolist()}
    payload = {"layer": args.layer, "quantile": args.quantile, "best_units": best}
    return support.write_outputs(result, args.out, "dissection", payload)


def cmd_demo(args) -> dict:
    from .demo import run_demo

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    return run_demo(
        args.out,
        device=device,
        seed=args.seed,
        quick=args.quick,
        show_progress=not args.quiet,
    )
