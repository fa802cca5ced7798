"""``captum-inverseset demo``: every method on the shipped digits models.

Trains nothing and downloads nothing: it loads the shipped classifier,
generator and encoder, runs Neuron Shapley (with an ablation check against
Captum's ``LayerConductance``), the neuron profile, inverse-set sampling and
E-GBAS against epsilon-ball sampling, and writes a self-contained HTML report
with the figures and a ``results.json`` with the numbers. The report reads
its own numbers and says in words what the ablation shows, whichever way it
comes out.
"""

import time
from typing import Any, Dict, Optional

import torch

from .report import Report

__all__ = ["describe_ablation", "run_demo"]


def _fig_of(plotted):
    return plotted[0] if isinstance(plotted, tuple) else plotted


def _shapley_result(ns, inputs, **kwargs):
    """Neuron Shapley's result object: ``interpret()`` where the class has it,
    else ``attribute(..., return_stats=True)`` (the verb before issue 17)."""
    if hasattr(ns, "interpret"):
        return ns.interpret(inputs, **kwargs)
    return ns.attribute(inputs, return_stats=True, **kwargs)[-1]


def _spread(result) -> float:
    """``mean_pairwise_distance`` of a result, a method or (before issue 16)
    a property."""
    value = result.mean_pairwise_distance
    return float(value() if callable(value) else value)


def _join(items):
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_ablation(curve, k: int, shapley=None, layer: str = "conv3") -> str:
    r"""What an ablation curve shows, in sentences, from its numbers.

    Compares the metric after removing the top ``k`` units of every ranking
    with the other rankings and with random removal, names the ranking that
    hurts most (at ``k`` and on average over every ``k``), and, when the
    Neuron Shapley result is given, says whether its estimates separate the
    top ``k`` (the median standard error of the top ``k`` against the gap
    between the ``k``-th and ``(k+1)``-th value).

    Args:
        curve (AblationCurveResult): the curves; ``ks`` starts at 0.
        k (int): the number of removed units the sentences are about.
        shapley (NeuronShapleyResult, optional): the values the
            ``"Neuron Shapley"`` ranking came from. Default: None
        layer (str, optional): the layer's name in the text. Default: "conv3"

    Returns:
        str: a paragraph.
    """
    ks = [int(v) for v in curve.ks.tolist()]
    i = ks.index(k)
    metric = curve.metric or "the metric"
    full = float(curve.curves[0][ks.index(0)]) if 0 in ks else None
    after = {name: float(curve.curve(name)[i]) for name in curve.names}
    rand, rstd = float(curve.random_mean[i]), float(curve.random_std[i])
    ranked = sorted(after, key=after.get)  # most harmful removal first
    worst = ranked[0]
    text = [
        f"Removing the {k} {layer} filters that each ranking puts first leaves a "
        f"test {metric} of "
        + _join(f"{after[n]:.3f} ({n})" for n in ranked)
        + f", against {rand:.3f} ± {rstd:.3f} for {k} random filters"
        + (f" (full network {full:.3f})." if full is not None else ".")
    ]
    ns = "Neuron Shapley"
    if ns in after:
        if worst == ns:
            others = [n for n in ranked if n != ns]
            text.append(
                f"Neuron Shapley's ranking hurts most at k={k}: the filters it "
                f"ranks highest matter more to the {metric} than those of "
                f"{_join(others)}, as the method intends."
            )
        else:
            text.append(
                f"At k={k}, {worst}'s ranking hurts more than Neuron Shapley's "
                f"({after[worst]:.3f} against {after[ns]:.3f}): here Neuron "
                "Shapley did not single out the filters the "
                f"{metric} depends on most."
            )
    later = [j for j, v in enumerate(ks) if v > 0]
    if later and full is not None:
        mean_after = {n: float(curve.curve(n)[later].mean()) for n in list(curve.names)}
        best_overall = min(mean_after, key=mean_after.get)
        text.append(
            f"Over every k from {ks[later[0]]} to {ks[later[-1]]}, the mean "
            f"{metric} after removal is lowest for {best_overall} "
            f"({mean_after[best_overall]:.3f}; "
            + _join(f"{n} {v:.3f}" for n, v in mean_after.items() if n != best_overall)
            + ")."
        )
    beaten = [n for n in ranked if after[n] < rand - rstd]
    not_beaten = [n for n in ranked if n not in beaten]
    if not_beaten:
        text.append(
            f"{_join(not_beaten)} {'is' if len(not_beaten) == 1 else 'are'} not "
            f"clearly more harmful than random removal at k={k} (within one "
            "standard deviation of it or above)."
        )
    else:
        text.append(f"Every ranking is more harmful than random removal at k={k}.")
    if shapley is not None and shapley.standard_errors is not None:
        values = shapley.values.double()
        order = torch.argsort(values, descending=True)
        if values.numel() > k:
            gap = float(values[order[k - 1]] - values[order[k]])
            se = float(shapley.standard_errors.double()[order[:k]].median())
            settled = se < gap
            text.append(
                f"The Shapley estimates ({shapley.n_permutations} permutations) of "
                f"the top {k} have a median standard error of {se:.3f}, "
                f"{'smaller' if settled else 'larger'} than the gap of {gap:.3f} "
                f"between the {k}th and {k + 1}th value, so which filters are in "
                f"the top {k} is "
                + (
                    "settled by the estimates."
                    if settled
                    else "still uncertain; more permutations would sharpen it."
                )
            )
    return " ".join(text)


def _faces_section(report, device, seed, quick, show_progress) -> None:
    """The face-DCGAN section (:mod:`captum_inverseset.demo_faces`): E-GBAS
    and inverse sets on the real pretrained face generator when
    ``gan-face-generate`` is installed, else a note saying how to install it."""
    from .demo_faces import add_faces_section

    add_faces_section(
        report, device=device, seed=seed, quick=quick, show_progress=show_progress
    )


def run_demo(
    out_dir: str = "report",
    device: Optional[torch.device] = None,
    seed: int = 0,
    quick: bool = False,
    show_progress: bool = True,
) -> Dict[str, Any]:
    """Run the demo and write ``out_dir/index.html`` and ``results.json``.

    Args:
        out_dir (str, optional): output folder. Default: "report"
        device (torch.device, optional): where the models run. Default: CPU
        seed (int, optional): seed of every random step. Default: 0
        quick (bool, optional): smaller budgets (smoke test). Default: False
        show_progress (bool, optional): progress bars. Default: True

    Returns:
        dict: the figures written to ``results.json`` plus ``"html"``, the
        path of the report page.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from . import EGBAS, NeuronInverseSet, NeuronProfile, NeuronShapley
    from .visualization import visualize_image_grid
    from .zoo import (
        LATENT_DIM,
        digits_classifier,
        digits_encoder,
        digits_generator,
        load_digits_dataset,
    )

    device = device or torch.device("cpu")
    t_start = time.time()
    report = Report(out_dir, "captum_inverseset demo: the shipped digits models")
    model = digits_classifier().to(device)
    generator = digits_generator().to(device)
    encoder = digits_encoder().to(device)
    data = load_digits_dataset()
    x_test = data.test_inputs.to(device)
    y_test = data.test_labels.to(device)

    # -- the models ---------------------------------------------------------
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        z = torch.randn(500, LATENT_DIM, generator=torch.Generator().manual_seed(seed))
        fake = generator(z.to(device))
        probs = model(fake).softmax(1)
        confident = (probs.max(1).values >= 0.9).float().mean().item()
    sec = report.section(
        "Shipped models",
        "A CNN trained on scikit-learn's 8x8 digits and a two-stage VAE "
        "generator; the classifier's label is written under each generated digit.",
    )
    top_p, top_c = probs[:24].max(1)
    fig, _ = visualize_image_grid(
        fake[:24].cpu(),
        titles=[f"{int(c)} ({float(p):.2f})" for c, p in zip(top_c, top_p)],
        ncols=6,
        cmap="gray_r",
        upscale=8,
        title="24 random generator samples",
        fig_size=(7.5, 6.0),
    )
    report.add_figure(
        sec,
        fig,
        "generator_samples",
        "24 random samples of the generator (8x8 pixels each, enlarged 8x "
        "without smoothing, dark ink on white as the digits dataset is drawn). "
        "Under each: the classifier's label and its softmax confidence.",
    )
    models = {
        "classifier_test_accuracy": accuracy,
        "generator_confident_fraction": confident,
    }
    report.add_table(sec, models)
    report.add_results("models", models)

    # -- Neuron Shapley ----------------------------------------------------
    layers = [model.conv1, model.conv2, model.conv3]
    n_perm = 6 if quick else 40
    ns = NeuronShapley(model, layers)
    t0 = time.time()
    result = _shapley_result(
        ns,
        x_test,
        target=y_test,
        metric="accuracy",
        n_permutations=n_perm,
        seed=seed,
        show_progress=show_progress,
    )
    shapley_seconds = time.time() - t0
    sec = report.section(
        "Neuron Shapley: which conv filters carry the accuracy",
        f"Shapley values of all {result.values.numel()} filters of conv1-conv3 "
        f"for test accuracy, {n_perm} truncated Monte Carlo permutations, "
        "removed filters set to their mean activation.",
    )
    report.add_figure(
        sec,
        _fig_of(result.plot()),
        "shapley_values",
        "Shapley values with standard errors (largest first).",
    )
    top = result.top_players(5)
    shapley_figs = {
        "players": int(result.values.numel()),
        "permutations": n_perm,
        "seconds": round(shapley_seconds, 2),
        "top5": ", ".join(f"{name}[{idx}]" for name, idx in top),
        "sum_of_values": float(result.values.sum()),
    }
    from .ablation import (
        ablation_curve,
        conductance_channel_scores,
        gradcam_channel_scores,
    )

    conv3 = _shapley_result(
        NeuronShapley(model, model.conv3),
        x_test,
        target=y_test,
        n_permutations=6 if quick else 30,
        seed=seed,
        show_progress=show_progress,
    )
    scores = {
        "Neuron Shapley": conv3.values.to(device),
        "LayerConductance": conductance_channel_scores(
            model, model.conv3, x_test, y_test
        ),
        "LayerGradCam weights": gradcam_channel_scores(
            model, model.conv3, x_test, y_test
        ),
    }
    ks = (0, 1, 2, 4, 8, 12)
    curve = ablation_curve(
        model, model.conv3, x_test, scores, target=y_test, ks=ks, seed=seed
    )
    report.add_figure(
        sec,
        _fig_of(curve.plot(title="conv3 ablation")),
        "ablation_curve",
        "Test accuracy as the top-k conv3 filters are removed: ranked by "
        "Neuron Shapley, Captum LayerConductance, Grad-CAM channel weights, "
        "and random (mean +- std over draws).",
    )
    finding = describe_ablation(curve, 8, shapley=conv3)
    report.add_text(sec, finding)
    for name in curve.names:
        shapley_figs[f"acc_after_top8_removed[{name}]"] = float(
            curve.curve(name)[list(curve.ks).index(8)]
        )
    shapley_figs["acc_after_8_random_removed"] = float(
        curve.random_mean[list(curve.ks).index(8)]
    )
    report.add_table(sec, shapley_figs)
    report.add_results("neuron_shapley", {**shapley_figs, "ablation": finding})

    # -- Neuron profile + inverse set ----------------------------------------
    neuron = 3
    profile = NeuronProfile(model, model.fc2).interpret(
        data.train_inputs.to(device), neuron, target=data.train_labels.to(device)
    )
    band = profile.activation_range(0.9, 1.0)
    sec = report.section(
        f"Inverse set of the class-{neuron} logit",
        f"Inputs whose class-{neuron} logit lies in [{band[0]:.2f}, {band[1]:.2f}] "
        "(the top 10% of its activations over the training set), sampled "
        "through the generator with spread measured by the encoder.",
    )
    report.add_figure(
        sec,
        _fig_of(profile.plot()),
        "profile",
        "Profile of the neuron over the training set: histogram, mean per "
        "class, the examples with the highest and lowest logit and examples "
        "at quantiles, each captioned with its activation.",
    )
    sampler = NeuronInverseSet(model, model.fc2, generator=generator, encoder=encoder)
    n_samples = 16 if quick else 48
    t0 = time.time()
    inv = sampler.sample(
        neuron,
        activation_range=band,
        n_samples=n_samples,
        batch_size=8,
        seed=seed,
        show_progress=show_progress,
    )
    inv_seconds = time.time() - t0
    report.add_figure(
        sec,
        _fig_of(inv.plot(title="inverse-set samples")),
        "inverse_set",
        "Samples with their activation (x = never reached the band).",
    )
    with torch.no_grad():
        predicted = model(inv.inputs.to(device)).argmax(1)
    inv_figs = {
        "activation_range": [round(band[0], 3), round(band[1], 3)],
        "n_samples": int(inv.inputs.shape[0]),
        "feasible_fraction": float(inv.feasible.float().mean()),
        "predicted_as_class_fraction": float((predicted == neuron).float().mean()),
        "seconds": round(inv_seconds, 2),
    }
    report.add_table(sec, {k: v for k, v in inv_figs.items()})
    report.add_results("inverse_set", inv_figs)

    # -- E-GBAS --------------------------------------------------------------
    egbas = EGBAS(generator, generator.fc2)
    with torch.no_grad():
        z0 = encoder(x_test[:1])
    n_eg = 24 if quick else 64
    t0 = time.time()
    mask = egbas.supporting_boundaries(z0, seed=seed)
    # The baseline's radius is set so that 90% of its samples stay in the
    # region; the tree's step is that radius (as in benchmarks/bench_egbas.py).
    epsilon = egbas.calibrate_epsilon(z0, 0.9, mask=mask, seed=seed)
    res = egbas.sample(
        z0,
        n_samples=n_eg,
        mask=mask,
        step_size=epsilon,
        seed=seed,
        show_progress=show_progress,
    )
    eg_seconds = time.time() - t0
    base = egbas.epsilon_sample(
        z0, n_samples=n_eg, epsilon=epsilon, mask=mask, seed=seed
    )
    sec = report.section(
        "E-GBAS: the generative region of a query at layer fc2",
        "Latents with the query's sign pattern on the supporting boundaries "
        "(Bernoulli-mask optimisation), explored with a rapidly-exploring "
        "random tree, against epsilon-ball samples whose radius keeps 90% of "
        "them in the region.",
    )
    report.add_figure(
        sec, _fig_of(res.plot(title="E-GBAS samples")), "egbas", "E-GBAS samples."
    )
    report.add_figure(
        sec,
        _fig_of(base.plot(title="epsilon-ball samples")),
        "epsilon",
        "Epsilon-ball samples (some fall outside the region).",
    )
    eg_figs = {
        "epsilon": round(epsilon, 4),
        "mask_size": int(res.mask.sum()),
        "layer_units": int(res.mask.numel()),
        "egbas_in_region": float(res.in_region.float().mean()),
        "epsilon_in_region": float(base.in_region.float().mean()),
        "egbas_spread": _spread(res),
        "epsilon_spread": _spread(base),
        "seconds": round(eg_seconds, 2),
    }
    report.add_table(sec, eg_figs)
    report.add_results("egbas", eg_figs)

    # -- a real pretrained face generator (when installed) --------------------
    _faces_section(report, device, seed, quick, show_progress)

    total = time.time() - t_start
    report.add_results("total_seconds", round(total, 1))
    html_path = report.write(
        footer=f"Generated by captum-inverseset demo (seed {seed}) in {total:.0f} s "
        f"on {device}."
    )
    out = dict(report.results)
    out["html"] = html_path
    return out
