"""Inverse-set sampling: incremental vs joint, and vs Lucent, in one run.

Setting: the shipped digits classifier, generator ``G`` and encoder ``E``; the
neuron is the ``fc1`` unit whose activation varies most over generator
samples, and the band is the 80%..95% quantiles of that activation over 512
prior samples (computed here, so it follows the shipped weights).

1. **Incremental vs joint** (``n`` samples): ours makes ``K`` samples at a time
   and stops each batch once it is inside the band; "joint" optimises all
   ``n`` together for the whole step budget (the problem without the two
   approximations); "joint_early" is all ``n`` together with our stopping
   rule. Reported: wall-clock seconds, fraction of feasible samples, mean
   pairwise distance in E-space, and the ratios ours / joint.
2. **Memory**: ours at ``n_small`` and ``n_large`` samples, each in a fresh
   process; peak resident memory (``ru_maxrss``) of the whole process and its
   growth during sampling.
3. **Lucent**: ``render_vis`` with ``objectives.channel`` on the neuron plus
   ``1e2 * objectives.diversity`` on ``conv3``, batch ``n``, through the same
   generator (codes as Lucent parameters), Adam lr 0.05, no transforms, for
   as many steps as our sampler spent per sample on average ("lucent"), and
   for 50 steps ("lucent_long", 10 with ``--quick``). Lucent hooks
   every module and never removes the hooks, so it runs on a model copy.
   Both results are evaluated the same way: fraction inside the band and
   E-space spread.

4. **Dataset baseline**: the same neuron and band, with the digits training
   set passed as ``data``: the spread of a random and of a farthest-point pick
   of ``n`` in-band training images (what one gets without any sampler),
   beside ours with and without ``data``.
5. **A real CNN** (when the PyPI package ``ccexam`` is installed: its
   pretrained MNIST CNN, a network nobody here wrote): the class-3 logit, band
   at the 40%..80% quantiles of that logit over the class-3 digits, through the
   shipped generator upsampled to 28 x 28, spread measured by the shipped
   encoder on the image pooled back to 8 x 8; data: scikit-learn's digits
   upsampled to 28 x 28. Same baselines.

6. **Rare bands through the real face DCGAN** (issue 15; when
   ``gan-face-generate`` and ``facenet-pytorch`` are installed): the neuron is
   the face logit of MTCNN's ONet (facenet-pytorch's pretrained face
   detector, ``dense6_1`` unit 1, on the DCGAN's faces resized to 48 x 48 with
   MTCNN's normalisation). A reference pool of prior draws is rejection
   sampling: its time divided by the number of its draws in a band is the
   rejection cost of an in-band sample, and its in-band draws are the
   rejection samples. Bands: the top 0.3% and 0.03% of the pool's face
   logits (0.03% only in full runs). Ours: ``n`` samples, ``batch_size=16``,
   otherwise defaults. Reported: seconds per in-band sample (ratio), fraction
   in band, spread in E (the default 4 x 4 pooled encoder) and in pixels.
7. **Without a generator** (ccexam's MNIST CNN): the class-3 logit, band at
   50%..60% of the maximum found by ``top_range`` (200 steps): ours with
   default settings against Lucent's ``render_vis`` with
   ``objectives.channel`` minus ``lambda * objectives.diversity`` on the last
   convolution, for several ``lambda``, 200 steps, batch ``n``; Lucent's best
   pixel spread beside ours, with the fraction of renders in the band.

Timings use one CPU thread and are medians of 3 runs (1 with ``--quick``)
after a warm-up run. Usage::

    python benchmarks/bench_inverse_set.py [--quick]

Prints one JSON line at the end.
"""

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

from captum_inverseset import NeuronInverseSet
from captum_inverseset._utils.distance import mean_pairwise_distance
from captum_inverseset.hooks import capture_layer
from captum_inverseset.zoo import digits_classifier, digits_encoder, digits_generator

K = 8
MAX_STEPS = 200


def setup():
    torch.manual_seed(0)
    model, gen, enc = digits_classifier(), digits_generator(), digits_encoder()
    for m in (model, gen, enc):
        m.eval()
    codes = torch.randn(512, gen.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture_layer(model.fc1) as cap:
        model(gen(codes))
    acts = cap.output
    unit = int(acts.std(0).argmax())
    lo, hi = torch.quantile(acts[:, unit], torch.tensor([0.8, 0.95])).tolist()
    return model, gen, enc, unit, (lo, hi)


def evaluate(model, enc, unit, band, images):
    with torch.no_grad():
        with capture_layer(model.fc1) as cap:
            model(images)
        a = cap.output[:, unit]
        e = enc(images)
    inside = (a >= band[0]) & (a <= band[1])
    return float(inside.float().mean()), mean_pairwise_distance(e)


def run_sampler(model, gen, enc, unit, band, n, batch_size, min_steps, repeats):
    sampler = NeuronInverseSet(model, model.fc1, generator=gen, encoder=enc)
    times = []
    for _ in range(repeats):  # same seed: same samples, only the time varies
        start = time.perf_counter()
        res = sampler.sample(
            unit,
            band,
            n_samples=n,
            batch_size=batch_size,
            seed=0,
            max_steps=MAX_STEPS,
            min_steps=min_steps,
        )
        times.append(time.perf_counter() - start)
    elapsed = statistics.median(times)
    inside, spread = evaluate(model, enc, unit, band, res.inputs)
    # Sample-steps: each batch's steps times its size.
    sample_steps = int(res.steps.sum())
    return {
        "seconds": round(elapsed, 3),
        "feasible": round(res.feasible_fraction, 4),
        "inside_band": round(inside, 4),
        "spread_E": round(spread, 4),
        "spread_E_feasible": round(
            res.mean_pairwise_distance("encodings", feasible_only=True), 4
        ),
        "mean_steps_per_sample": round(sample_steps / n, 2),
    }


def run_lucent(model, gen, enc, unit, band, n, steps):
    from lucent.optvis import objectives
    from lucent.optvis.render import render_vis

    work = copy.deepcopy(model)  # render_vis leaves hooks on every module
    for p in work.parameters():
        p.requires_grad_(False)
    codes = torch.randn(n, gen.latent_dim, generator=torch.Generator().manual_seed(0))
    codes.requires_grad_(True)
    gen_frozen = copy.deepcopy(gen)
    for p in gen_frozen.parameters():
        p.requires_grad_(False)

    def param_f():
        return [codes], lambda: gen_frozen(codes)

    objective = objectives.channel("fc1", unit) - 1e2 * objectives.diversity("conv3")
    start = time.perf_counter()
    render_vis(
        work,
        objective,
        param_f=param_f,
        transforms=[],
        thresholds=(steps,),
        preprocess=False,
        progress=False,
        show_image=False,
        fixed_image_size=8,
    )
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        images = gen_frozen(codes)
    inside, spread = evaluate(model, enc, unit, band, images)
    return {
        "seconds": round(elapsed, 3),
        "inside_band": round(inside, 4),
        "spread_E": round(spread, 4),
        "steps": steps,
    }


def memory_child(n):
    """Run in a fresh process: peak RSS before and after sampling ``n``."""
    torch.set_num_threads(1)
    model, gen, enc, unit, band = setup()
    sampler = NeuronInverseSet(model, model.fc1, generator=gen, encoder=enc)
    sampler.sample(unit, band, n_samples=8, batch_size=K, seed=1, max_steps=5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    res = sampler.sample(
        unit, band, n_samples=n, batch_size=K, seed=0, max_steps=MAX_STEPS
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "peak_rss_mb": round(after / 1024, 1),
                "growth_mb": round((after - before) / 1024, 2),
                "seconds": round(elapsed, 2),
                "feasible": round(res.feasible_fraction, 4),
            }
        )
    )


def run_memory(n):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def dataset_baseline(sampler, unit, band, n, data, n_quick=None):
    """Ours without and with ``data`` beside picks of in-band data."""
    out = {}
    for name, kw in (("ours", {}), ("ours_data", {"data": data})):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sampler.sample(unit, band, n_samples=n, batch_size=K, seed=0, **kw)
        out[name] = {
            "seconds": round(time.perf_counter() - start, 3),
            "inside_band": round(res.feasible_fraction, 4),
            "spread_E": round(res.mean_pairwise_distance(), 4),
            "spread_inputs": round(res.mean_pairwise_distance("inputs"), 4),
            "starts": res.starts,
        }
        if res.data_baseline:
            b = res.data_baseline
            out["data_in_band"] = b["n_in_band"]
            out["data_examined"] = b["n_examined"]
            for pick in ("random", "farthest"):
                if pick in b:
                    out[f"data_{pick}"] = {
                        "spread_E": round(b[pick]["encodings"], 4),
                        "spread_inputs": round(b[pick]["inputs"], 4),
                    }
    far = out.get("data_farthest", {}).get("spread_E")
    if far:
        out["spread_ratio_ours_vs_farthest_data"] = round(
            out["ours"]["spread_E"] / far, 3
        )
        out["spread_ratio_ours_data_vs_farthest_data"] = round(
            out["ours_data"]["spread_E"] / far, 3
        )
    return out


def real_cnn_setup():
    """ccexam's pretrained MNIST CNN behind the shipped digits models, or None."""
    import torch.nn.functional as F
    from torch import nn

    from captum_inverseset.param import GeneratorParameterization
    from captum_inverseset.zoo import (
        load_digits_dataset,
        mnist_cnn,
        mnist_cnn_available,
    )

    if not mnist_cnn_available():
        return None

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=28, mode="bilinear", align_corners=False)

    class Pooled(nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, x):
            return self.enc(F.adaptive_avg_pool2d(x, 8))

    model = mnist_cnn()
    train_x, train_y, test_x, test_y = load_digits_dataset()
    x28 = Up()(torch.cat([train_x, test_x]))
    y = torch.cat([train_y, test_y])
    with torch.no_grad():
        logits = model(x28)
    own = logits[y == 3, 3]
    band = tuple(torch.quantile(own, torch.tensor([0.4, 0.8])).tolist())
    gen = GeneratorParameterization(digits_generator().eval(), (8,), postprocess=Up())
    sampler = NeuronInverseSet(
        model,
        model.net.classifier[2],
        generator=gen,
        encoder=Pooled(digits_encoder().eval()),
    )
    return sampler, band, x28


def face_setup():
    """The face DCGAN and ONet's face logit, or None when not installed."""
    from captum_inverseset.zoo import (
        face_dcgan,
        face_dcgan_available,
        face_detector,
        face_detector_available,
    )

    if not (face_dcgan_available() and face_detector_available()):
        return None
    return face_dcgan().eval(), face_detector()


def run_faces(quick):
    from captum_inverseset import PooledEncoder
    from captum_inverseset._utils.layer_eval import neuron_values

    setup = face_setup()
    if setup is None:
        return "gan-face-generate or facenet-pytorch not installed"
    gen_face, detector = setup
    layer, enc_face = detector.onet.dense6_1, PooledEncoder()
    n_ref = 2048 if quick else 20480
    g = torch.Generator().manual_seed(123)
    start = time.perf_counter()
    vals, encs, pixels = [], [], []
    for _ in range(n_ref // 256):
        with torch.no_grad():
            x = gen_face(torch.randn(256, gen_face.latent_dim, generator=g))
            vals.append(neuron_values(detector, x, [(layer, 1, False)])[:, 0])
            encs.append(enc_face(x))
            pixels.append(x.flatten(1))
    ref_seconds = time.perf_counter() - start
    vals, encs, pixels = torch.cat(vals), torch.cat(encs), torch.cat(pixels)
    sampler = NeuronInverseSet(detector, layer, generator=gen_face)
    out = {
        "neuron": "facenet_pytorch ONet dense6_1[1] (face logit)",
        "prior_draws": n_ref,
        "prior_draws_per_s": round(n_ref / ref_seconds, 1),
    }
    for share in (0.003,) if quick else (0.003, 0.0003):
        low = float(torch.quantile(vals, 1 - share))
        inside = vals >= low
        rejection = {
            "in_band": int(inside.sum()),
            "seconds_per_sample": round(ref_seconds / int(inside.sum()), 3),
            "spread_E": round(mean_pairwise_distance(encs[inside]), 4),
            "spread_inputs": round(mean_pairwise_distance(pixels[inside]), 3),
        }
        n = 8 if quick else 32
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sampler.sample(1, (low, None), n_samples=n, batch_size=16, seed=0)
        seconds = time.perf_counter() - start
        in_band = max(int(res.feasible.sum()), 1)
        ours = {
            "n": n,
            "seconds": round(seconds, 2),
            "seconds_per_sample": round(seconds / in_band, 3),
            "inside_band": round(res.feasible_fraction, 4),
            "spread_E": round(res.mean_pairwise_distance(), 4),
            "spread_inputs": round(res.mean_pairwise_distance("inputs"), 3),
            "mean_steps": round(float(res.steps.float().mean()), 1),
        }
        out[f"band_{share:g}"] = {
            "low": round(low, 4),
            "rejection": rejection,
            "ours": ours,
            "speed_ratio_ours_vs_rejection": round(
                rejection["seconds_per_sample"] / ours["seconds_per_sample"], 2
            ),
            "spread_E_ratio_ours_vs_rejection": round(
                ours["spread_E"] / rejection["spread_E"], 3
            ),
            "spread_inputs_ratio_ours_vs_rejection": round(
                ours["spread_inputs"] / rejection["spread_inputs"], 3
            ),
        }
    return out


def run_no_generator(quick):
    """Ours (defaults, no generator) against Lucent's diversity renders."""
    real = real_cnn_setup()
    if real is None:
        return "ccexam not installed"
    sampler = real[0]
    model, layer = sampler.forward_func, sampler.layer
    shape = (1, 28, 28)
    a0, _ = sampler.top_range(3, fraction=1e-9, input_shape=shape, n_steps=1)
    top, _ = sampler.top_range(3, fraction=1.0, input_shape=shape, n_steps=200)
    band = (0.5 * top, 0.6 * top)
    n = 8 if quick else 16
    plain = NeuronInverseSet(model, layer)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = plain.sample(3, band, n_samples=n, input_shape=shape, seed=0)
    ours = {
        "seconds": round(time.perf_counter() - start, 2),
        "inside_band": round(res.feasible_fraction, 4),
        "spread_inputs": round(res.mean_pairwise_distance("inputs"), 3),
    }
    renders = {}
    for weight in (1e1,) if quick else (1e0, 1e1, 1e2, 1e3):
        renders[f"{weight:g}"] = lucent_render(
            model, band, n, weight, 20 if quick else 200
        )
    best = max(renders.values(), key=lambda r: r["spread_inputs"])
    return {
        "neuron": "ccexam MNISTNet logit 3",
        "band": [round(band[0], 4), round(band[1], 4)],
        "max_found": round(top, 4),
        "ours": ours,
        "lucent": renders,
        "lucent_best_spread_inputs": best["spread_inputs"],
        "lucent_best_inside_band": best["inside_band"],
        "spread_inputs_ratio_ours_vs_lucent_best": round(
            ours["spread_inputs"] / best["spread_inputs"], 3
        ),
    }


def lucent_render(model, band, n, weight, steps):
    from lucent.optvis import objectives
    from lucent.optvis import param as lucent_param
    from lucent.optvis.render import render_vis

    work = copy.deepcopy(model)  # render_vis leaves hooks on every module
    for p in work.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    params, image_f = lucent_param.image(28, channels=1, batch=n)
    objective = objectives.channel("net_classifier_2", 3) - weight * (
        objectives.diversity("net_features_3")
    )
    start = time.perf_counter()
    render_vis(
        work,
        objective,
        param_f=lambda: (params, image_f),
        transforms=[],
        thresholds=(steps,),
        preprocess=False,
        progress=False,
        show_image=False,
        fixed_image_size=28,
    )
    images = image_f().detach()
    with torch.no_grad():
        logit = model(images)[:, 3]
    inside = (logit >= band[0]) & (logit <= band[1])
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "inside_band": round(float(inside.float().mean()), 4),
        "spread_inputs": round(mean_pairwise_distance(images), 3),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--memory-child", type=int, default=None, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    torch.set_num_threads(1)
    n = 16 if args.quick else 64
    n_small, n_large = (50, 200) if args.quick else (100, 1000)

    repeats = 1 if args.quick else 3
    model, gen, enc, unit, band = setup()
    # Warm-up (first-call allocations), not timed.
    run_sampler(model, gen, enc, unit, band, 8, K, min_steps=1, repeats=1)
    ours = run_sampler(model, gen, enc, unit, band, n, K, 1, repeats)
    joint = run_sampler(model, gen, enc, unit, band, n, n, MAX_STEPS, repeats)
    joint_early = run_sampler(model, gen, enc, unit, band, n, n, 1, repeats)
    lucent_steps = max(1, int(round(ours["mean_steps_per_sample"])))
    lucent = run_lucent(model, gen, enc, unit, band, n, lucent_steps)
    # Lucent again with a longer budget (its diversity term is a Python loop
    # over pairs, so the joint's 200 steps would take minutes).
    lucent_long = run_lucent(model, gen, enc, unit, band, n, 10 if args.quick else 50)
    mem_small, mem_large = run_memory(n_small), run_memory(n_large)
    from captum_inverseset.zoo import load_digits_dataset

    train_x = load_digits_dataset().train_inputs
    digits_sampler = NeuronInverseSet(model, model.fc1, generator=gen, encoder=enc)
    data = dataset_baseline(digits_sampler, unit, band, n, train_x)
    real = real_cnn_setup()
    real_cnn = None
    if real is not None:
        real_sampler, real_band, real_data = real
        real_cnn = dataset_baseline(real_sampler, 3, real_band, 32, real_data)
        real_cnn["band"] = [round(v, 4) for v in real_band]
    faces = run_faces(args.quick)
    no_generator = run_no_generator(args.quick)

    summary = {
        "benchmark": "inverse_set",
        "quick": args.quick,
        "neuron": f"digits_classifier.fc1[{unit}]",
        "band": [round(band[0], 4), round(band[1], 4)],
        "n": n,
        "K": K,
        "max_steps": MAX_STEPS,
        "ours": ours,
        "joint": joint,
        "joint_early": joint_early,
        "spread_ratio_ours_vs_joint": round(ours["spread_E"] / joint["spread_E"], 3),
        "speed_ratio_joint_vs_ours": round(joint["seconds"] / ours["seconds"], 2),
        "spread_ratio_ours_vs_joint_early": round(
            ours["spread_E"] / joint_early["spread_E"], 3
        ),
        "speed_ratio_joint_early_vs_ours": round(
            joint_early["seconds"] / ours["seconds"], 2
        ),
        "memory": {f"n={n_small}": mem_small, f"n={n_large}": mem_large},
        "peak_rss_ratio_large_vs_small": round(
            mem_large["peak_rss_mb"] / mem_small["peak_rss_mb"], 3
        ),
        "lucent": lucent,
        "lucent_long": lucent_long,
        "inside_band_ours_vs_lucent": [ours["inside_band"], lucent["inside_band"]],
        "spread_E_ours_vs_lucent": [ours["spread_E"], lucent["spread_E"]],
        "dataset_baseline": data,
        "real_cnn": real_cnn if real_cnn is not None else "ccexam not installed",
        "faces_rare_bands": faces,
        "no_generator_vs_lucent": no_generator,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
