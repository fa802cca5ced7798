"""``captum-inverseset demo``: every method on the shipped digits models.

Trains nothing and downloads nothing: it loads the shipped classifier,
generator and encoder, runs Neuron Shapley (with an ablation check against
Captum's ``LayerConductance``), the neuron profile, inverse-set sampling and
E-GBAS against epsilon-ball sampling, and writes a self-contained HTML report
with the figures and a ``results.json`` with the numbers.
"""

import time
from typing import Any, Dict, Optional

import torch

from .report import Report

__all__ = ["run_demo"]


def _fig_of(plotted):
    return plotted[0] if isinstance(plotted, tuple) else plotted


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
    fig, _ = visualize_image_grid(
        fake[:36].cpu(),
        titles=[str(int(c)) for c in probs[:36].argmax(1)],
        title="36 random generator samples",
        fig_size=(4.5, 4.5),
    )
    report.add_figure(sec, fig, "generator_samples", "Random generator samples.")
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
    ns.attribute(
        x_test,
        target=y_test,
        metric="accuracy",
        n_permutations=n_perm,
        seed=seed,
        show_progress=show_progress,
    )
    shapley_seconds = time.time() - t0
    result = ns.last_result
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

    conv3_values = NeuronShapley(model, model.conv3).attribute(
        x_test,
        target=y_test,
        n_permutations=6 if quick else 30,
        seed=seed,
        show_progress=show_progress,
    )
    scores = {
        "Neuron Shapley": conv3_values,
        "LayerConductance": conductance_channel_scores(
            model, model.conv3, x_test, y_test
        ),
        "LayerGradCam weights": gradcam_channel_scores(
            model, model.conv3, x_test, y_test
        ),
    }
    curve = ablation_curve(
        model,
        model.conv3,
        x_test,
        scores,
        target=y_test,
        ks=(0, 1, 2, 4, 8, 12),
        seed=seed,
    )
    report.add_figure(
        sec,
        _fig_of(curve.plot(title="conv3 ablation")),
        "ablation_curve",
        "Test accuracy as the top-k conv3 filters are removed: ranked by "
        "Neuron Shapley, Captum LayerConductance, Grad-CAM channel weights, "
        "and random (mean +- std over draws).",
    )
    for name in curve.names:
        shapley_figs[f"acc_after_top8_removed[{name}]"] = float(
            curve.curve(name)[list(curve.ks).index(8)]
        )
    shapley_figs["acc_after_8_random_removed"] = float(
        curve.random_mean[list(curve.ks).index(8)]
    )
    report.add_table(sec, shapley_figs)
    report.add_results("neuron_shapley", shapley_figs)

    # -- Neuron profile + inverse set ----------------------------------------
    neuron = 3
    profile = NeuronProfile(model, model.fc2).interpret(
        data.train_inputs.to(device), neuron, labels=data.train_labels.to(device)
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
        "Profile of the neuron over the training set.",
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
        "egbas_spread": float(res.mean_pairwise_distance),
        "epsilon_spread": float(base.mean_pairwise_distance),
        "seconds": round(eg_seconds, 2),
    }
    report.add_table(sec, eg_figs)
    report.add_results("egbas", eg_figs)

    total = time.time() - t_start
    report.add_results("total_seconds", round(total, 1))
    html_path = report.write(
        footer=f"Generated by captum-inverseset demo (seed {seed}) in {total:.0f} s "
        f"on {device}."
    )
    out = dict(report.results)
    out["html"] = html_path
    return out
