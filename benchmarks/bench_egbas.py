"""E-GBAS against epsilon-ball sampling, on the shipped digits generator and
on the pretrained face DCGAN (when ``gan-face-generate`` is installed).

Digits, for each layer (``fc1``, ``fc2``, ``deconv1``) and query ``z0``:

1. the supporting boundary set ``M`` with the defaults;
2. ``epsilon`` tuned by bisection so that 90% of the epsilon-ball samples
   around ``z0`` are in the region (on a 2000-sample tuning set);
3. E-GBAS (``step_size = epsilon``: a tree edge is at most the baseline's
   radius) and the baseline each draw ``n_samples`` latents, timed in
   alternation, ``--repeats`` times each, the fastest run kept.

Speed is in-region samples per second (every E-GBAS sample is in the region;
the baseline's count is its accepted ones), wall clock and CPU time of the
process. Spread is the mean pairwise distance of the latents and of the
outputs; also the tree's depth, its passes and the fraction of candidates
accepted.

Faces (64 samples per layer, ``main.1`` and ``main.4``): ``EGBAS.sample``
with every default (the mask optimisation included, timed apart), against
epsilon-ball samples at the radius keeping 90% in the region.

Prints one JSON line at the end. ``--quick`` is the CI smoke version.

    python benchmarks/bench_egbas.py [--quick] [--skip-faces] [--skip-digits]
"""

import argparse
import json
import statistics
import time
import warnings
from functools import partial

import torch

from captum_inverseset import EGBAS
from captum_inverseset.zoo import (
    LATENT_DIM,
    digits_generator,
    face_dcgan,
    face_dcgan_available,
)

DIGIT_LAYERS = ("fc1", "fc2", "deconv1")
FACE_LAYERS = ("main.1", "main.4")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def fastest(fns, repeats):
    """Run the callables in alternation ``repeats`` times; the last results
    and the fastest wall and CPU times of each."""
    outs = [None] * len(fns)
    walls = [float("inf")] * len(fns)
    cpus = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            outs[i], wall, cpu = timed(fn)
            walls[i], cpus[i] = min(walls[i], wall), min(cpus[i], cpu)
    return outs, walls, cpus


def compare(ours, base, ours_wall, base_wall, ours_cpu, base_cpu):
    inside = int(base.in_region.sum())
    return {
        "mask_size": ours.mask_size,
        "egbas_acceptance": ours.acceptance_rate,
        "egbas_complete": ours.complete,
        "eps_acceptance": base.acceptance_rate,
        "egbas_in_region_per_s": ours.n_samples / ours_wall,
        "eps_in_region_per_s": inside / base_wall,
        "speed_ratio": (ours.n_samples / ours_wall) / (inside / base_wall),
        "speed_ratio_cpu": (ours.n_samples / ours_cpu) / (inside / base_cpu),
        "latent_spread_ratio": ours.mean_pairwise_distance()
        / base.mean_pairwise_distance(),
        "output_spread_ratio": ours.mean_pairwise_distance("outputs")
        / base.mean_pairwise_distance("outputs"),
        "to_query_ratio": ours.mean_distance_to_query / base.mean_distance_to_query,
        "tree_depth": ours.tree_depth,
        "tree_passes": ours.n_passes,
        "proposal_acceptance": ours.proposal_acceptance_rate,
    }


def mean_rows(rows):
    out = {}
    for key in rows[0]:
        if isinstance(rows[0][key], bool):
            out[key] = all(r[key] for r in rows)
        else:
            out[key] = round(statistics.mean(float(r[key]) for r in rows), 4)
    out["speed_ratio_min_over_queries"] = round(min(r["speed_ratio"] for r in rows), 4)
    return out


def bench_digits(args):
    torch.set_num_threads(args.threads)
    n_queries = 2 if args.quick else 6
    generator = digits_generator().eval()
    queries = torch.randn(
        n_queries, LATENT_DIM, generator=torch.Generator().manual_seed(2020)
    )
    per_layer = {}
    for layer in DIGIT_LAYERS:
        egbas = EGBAS(generator, layer)
        rows = []
        for i, z0 in enumerate(queries):
            z0 = z0.unsqueeze(0)
            mask = egbas.supporting_boundaries(z0, seed=i)
            epsilon = egbas.calibrate_epsilon(
                z0, 0.9, mask=mask, n_samples=2000, iterations=16, seed=10_000 + i
            )
            (base, ours), walls, cpus = fastest(
                [
                    partial(
                        egbas.epsilon_sample,
                        z0,
                        args.n_samples,
                        epsilon=epsilon,
                        mask=mask,
                        seed=i,
                    ),
                    partial(
                        egbas.sample,
                        z0,
                        args.n_samples,
                        mask=mask,
                        step_size=epsilon,
                        seed=i,
                    ),
                ],
                args.repeats,
            )
            row = compare(ours, base, walls[1], walls[0], cpus[1], cpus[0])
            row["epsilon"] = epsilon
            rows.append(row)
        per_layer[layer] = mean_rows(rows)
        per_layer[layer]["layer_size"] = int(mask.numel())
        print(layer, json.dumps(per_layer[layer]), flush=True)
    return per_layer


def bench_faces(args):
    torch.set_num_threads(args.face_threads)
    generator = face_dcgan()
    n_samples = 16 if args.quick else 64
    n_queries = 1 if args.quick else 2
    layers = FACE_LAYERS[:1] if args.quick else FACE_LAYERS
    mask_kwargs = {"n_steps": 20} if args.quick else {}
    per_layer = {}
    for layer in layers:
        egbas = EGBAS(generator, layer)
        rows = []
        for i in range(n_queries):
            z0 = generator.random_codes(1, generator=torch.Generator().manual_seed(i))
            mask, mask_s, mask_cpu = timed(
                partial(egbas.supporting_boundaries, z0, seed=i, **mask_kwargs)
            )
            ours, tree_s, tree_cpu = timed(
                partial(egbas.sample, z0, n_samples, mask=mask, seed=i)
            )
            epsilon = egbas.calibrate_epsilon(
                z0, 0.9, mask=mask, n_samples=512, iterations=12, seed=10_000 + i
            )
            base, base_s, base_cpu = timed(
                partial(
                    egbas.epsilon_sample,
                    z0,
                    n_samples,
                    epsilon=epsilon,
                    mask=mask,
                    seed=i,
                )
            )
            row = compare(ours, base, tree_s, base_s, tree_cpu, base_cpu)
            row.update(
                epsilon=epsilon,
                step_size=ours.step_size,
                mask_seconds=mask_s,
                tree_seconds=tree_s,
                total_seconds=mask_s + tree_s,
                total_cpu_seconds=mask_cpu + tree_cpu,
                eps_seconds=base_s,
            )
            rows.append(row)
        per_layer[layer] = mean_rows(rows)
        per_layer[layer]["layer_size"] = int(mask.numel())
        per_layer[layer]["total_seconds_max"] = round(
            max(r["total_seconds"] for r in rows), 2
        )
        print(layer, json.dumps(per_layer[layer]), flush=True)
    return per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--threads", type=int, default=1, help="digits threads")
    parser.add_argument("--face-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--skip-faces", action="store_true")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    warnings.simplefilter("ignore")

    digits = {} if args.skip_digits else bench_digits(args)
    faces = None
    if not args.skip_faces and face_dcgan_available():
        faces = bench_faces(args)
    figures = {
        "benchmark": "egbas_vs_epsilon",
        "quick": args.quick,
        "threads": args.threads,
        "face_threads": args.face_threads,
        "n_samples": args.n_samples,
        "repeats": args.repeats,
        "step_size_rule": "epsilon (90% ball acceptance)",
        "digits": digits,
        "digits_speed_ratio_min_layer": min(
            (v["speed_ratio"] for v in digits.values()), default=None
        ),
        "digits_egbas_acceptance_min": min(
            (v["egbas_acceptance"] for v in digits.values()), default=None
        ),
        "faces": faces,
    }
    if faces:
        figures["faces_total_seconds_max"] = max(
            v["total_seconds_max"] for v in faces.values()
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
