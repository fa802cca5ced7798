"""Activation maximisation: ours vs Lucent's ``render_vis``, same run.

Both optimise the same Lucent objective (a channel of a conv layer) with the
same Fourier image parameterization, Adam learning rate and number of steps,
without random transforms, on the CPU. Lucent's ``render_vis`` hooks every
module and never removes the hooks, so it runs on a throwaway copy of the
model. "lucent_frozen" is ``render_vis`` with the copy's parameters frozen
(``render_vis`` itself computes weight gradients unless the caller freezes
them; ours freezes them during the call). Reported per case: milliseconds per
step (median over repeats), the final objective (mean channel activation of
the final image, evaluated the same way for both) and the hooks left on the
model.

    python benchmarks/bench_activation_maximization.py [--quick]

Prints one JSON line at the end.
"""

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch
import torchvision
from lucent.optvis import param as lucent_param
from lucent.optvis.render import render_vis

from captum_inverseset._core.neuron.neuron_activation_maximization import (
    NeuronActivationMaximization,
)
from captum_inverseset.hooks import capture_layer, count_hooks
from captum_inverseset.objectives import channel, module_names
from captum_inverseset.param import FFTImageParameterization
from captum_inverseset.zoo import digits_classifier


def channel_mean(model, layer_name, unit, images):
    layer = module_names(model)[layer_name]
    with torch.no_grad(), capture_layer(layer) as cap:
        model(images)
    return float(cap.output[:, unit].mean())


def run_ours(model, layer_name, unit, shape, steps, lr, seed, use_selector):
    layer = module_names(model)[layer_name]
    am = NeuronActivationMaximization(model, layer)
    kw = dict(n_steps=steps, lr=lr, seed=seed)
    if use_selector:
        kw["neuron_selector"] = lambda out: out[:, unit].mean((1, 2))
    else:
        kw["objective"] = channel(layer_name, unit)
    param = FFTImageParameterization(shape)
    start = time.perf_counter()
    result = am.interpret(parameterization=param, **kw)
    elapsed = time.perf_counter() - start
    return elapsed / steps, result.inputs, count_hooks(model)


def run_lucent(model, layer_name, unit, shape, steps, lr, seed, frozen=False):
    throwaway = copy.deepcopy(model).eval()
    if frozen:
        # render_vis backpropagates into the weights unless the caller freezes
        # them; ours freezes them for the duration of the call
        throwaway.requires_grad_(False)
    c, h, w = shape
    torch.manual_seed(seed)

    def param_f():
        # channels=None gives Lucent's colour decorrelation for RGB, as ours
        return lucent_param.image(w, h=h, channels=None if c == 3 else c)

    start = time.perf_counter()
    images = render_vis(
        throwaway,
        channel(layer_name, unit),
        param_f=param_f,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        transforms=[],
        thresholds=(steps,),
        preprocess=False,
        progress=False,
        show_image=False,
        fixed_image_size=h,
    )
    elapsed = time.perf_counter() - start
    final = torch.from_numpy(np.ascontiguousarray(images[-1])).permute(0, 3, 1, 2)
    return elapsed / steps, final, count_hooks(throwaway)


def bench_case(name, model, layer_name, unit, shape, steps, lr, repeats):
    model.eval()
    keys = ("ours", "ours_selector", "lucent", "lucent_frozen")
    figures = {k: [] for k in keys}
    finals = {k: [] for k in keys}
    hooks = {}
    for r in range(repeats):
        for key in keys:
            if key.startswith("lucent"):
                frozen = key == "lucent_frozen"
                t, img, n_hooks = run_lucent(
                    model, layer_name, unit, shape, steps, lr, r, frozen
                )
            else:
                t, img, n_hooks = run_ours(
                    model,
                    layer_name,
                    unit,
                    shape,
                    steps,
                    lr,
                    r,
                    key == "ours_selector",
                )
            figures[key].append(t * 1000)
            finals[key].append(channel_mean(model, layer_name, unit, img))
            hooks[key] = n_hooks
    out = {"steps": steps, "repeats": repeats}
    for key in figures:
        out[f"{key}_ms_per_step"] = round(statistics.median(figures[key]), 3)
        out[f"{key}_final_activation"] = round(statistics.mean(finals[key]), 4)
        out[f"{key}_hooks_left"] = hooks[key]
    out["lucent_over_ours_time"] = round(
        out["lucent_ms_per_step"] / out["ours_ms_per_step"], 3
    )
    out["lucent_over_ours_selector_time"] = round(
        out["lucent_ms_per_step"] / out["ours_selector_ms_per_step"], 3
    )
    out["lucent_frozen_over_ours_time"] = round(
        out["lucent_frozen_ms_per_step"] / out["ours_ms_per_step"], 3
    )
    out["ours_over_lucent_final"] = round(
        out["ours_final_activation"] / out["lucent_final_activation"], 3
    )
    print(name, json.dumps(out), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    steps, repeats = (64, 2) if args.quick else (256, 3)
    results["digits_conv3_ch5"] = bench_case(
        "digits", digits_classifier(), "conv3", 5, (1, 8, 8), steps, 0.05, repeats
    )
    if not args.quick:
        resnet = torchvision.models.resnet18(weights=None)
        results["resnet18_layer2_0_conv1_ch7"] = bench_case(
            "resnet18", resnet, "layer2_0_conv1", 7, (3, 64, 64), 64, 0.05, 2
        )
    print(
        json.dumps(
            {
                "benchmark": "activation_maximization",
                "quick": args.quick,
                "threads": args.threads,
                "device": "cpu",
                "cases": results,
            }
        )
    )


if __name__ == "__main__":
    main()
