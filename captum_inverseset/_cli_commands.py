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
    build_model,
    check_labels,
    check_selector,
    library_arguments,
    load_data,
    parse_device,
    parse_selector,
    parse_shape,
    prepare_out,
    probe_layer,
    probe_model,
    resolve_layer,
)


def _shapley_result(ns, inputs, **kwargs):
    """Neuron Shapley's result object: ``interpret()`` where the class has it,
    else ``attribute(..., return_stats=True)`` (the verb before issue 17)."""
    if hasattr(ns, "interpret"):
        return ns.interpret(inputs, **kwargs)
    out = ns.attribute(inputs, return_stats=True, **kwargs)
    return out[-1]


def _limit(inputs, labels, limit: Optional[int]):
    if limit is None:
        return inputs, labels
    return inputs[:limit], None if labels is None else labels[:limit]


# --------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------


def cmd_shapley(args) -> dict:
    from . import NeuronShapley

    device = parse_device(args.device)
    prepare_out(args.out, args.overwrite)
    model = build_model(args.model, args.weights, device)
    layers = [resolve_layer(model, name) for name in args.layer]
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
    model = build_model(args.model, args.weights, device)
    layer = resolve_layer(model, args.layer)
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
