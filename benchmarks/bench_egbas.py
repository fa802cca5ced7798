"""E-GBAS against epsilon-ball sampling on the shipped digits generator.

For each layer (``fc1``, ``fc2``, ``deconv1``) and each query latent ``z0``:

1. the supporting boundary set ``M`` is found once with
   :meth:`EGBAS.supporting_boundaries` (timed);
2. ``epsilon`` is tuned by bisection so that epsilon-ball sampling around
   ``z0`` accepts 90% of its samples on ``M`` (measured on a large tuning
   sample, then re-measured on a fresh one);
3. E-GBAS (``step_size = epsilon``, i.e. a tree edge is at most the baseline's
   radius; ``--step-factor`` changes it) and the baseline each draw
   ``n_samples`` latents, and we compare acceptance, spread (mean pairwise
   latent distance, mean distance to ``z0``), output diversity (mean pairwise
   image distance) and samples per second.

Prints one JSON line at the end. ``--quick`` is a smoke version (< 60 s).

    python benchmarks/bench_egbas.py [--quick]
"""

import argparse
import json
import statistics
import time
import warnings

import torch

from captum_inverseset import EGBAS
from captum_inverseset.zoo import LATENT_DIM, digits_generator

LAYERS = ("fc1", "fc2", "deconv1")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--step-factor", type=float, default=1.0, help="step_size / epsilon"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    n_queries = 2 if args.quick else 6
    n_samples = 100
    tune_samples = 500 if args.quick else 2000
    tune_iterations = 10 if args.quick else 16
    mask_steps = 100 if args.quick else 200
    sparsity = 0.5

    generator = digits_generator().eval()
    queries = torch.randn(
        n_queries, LATENT_DIM, generator=torch.Generator().manual_seed(2020)
    )
    per_layer = {}
    for layer in LAYERS:
        egbas = EGBAS(generator, layer)
        rows = []
        for i, z0 in enumerate(queries):
            z0 = z0.unsqueeze(0)
            mask, mask_s = timed(
                egbas.supporting_boundaries,
                z0,
                sparsity=sparsity,
                n_steps=mask_steps,
                seed=i,
            )
            epsilon = egbas.calibrate_epsilon(
                z0,
                0.9,
                mask=mask,
                n_samples=tune_samples,
                iterations=tune_iterations,
                seed=10_000 + i,
            )
            base, base_s = timed(
                egbas.epsilon_sample,
                z0,
                n_samples=n_samples,
                epsilon=epsilon,
                mask=mask,
                seed=i,
            )
            ours, ours_s = timed(
                egbas.sample,
                z0,
                n_samples=n_samples,
                mask=mask,
                step_size=epsilon * args.step_factor,
                seed=i,
            )
            rows.append(
                {
                    "mask_size": ours.mask_size,
                    "mask_seconds": mask_s,
                    "epsilon": epsilon,
                    "egbas_acceptance": ours.acceptance_rate,
                    "egbas_complete": ours.complete,
                    "eps_acceptance": base.acceptance_rate,
                    "egbas_pairwise": ours.mean_pairwise_distance,
                    "eps_pairwise": base.mean_pairwise_distance,
                    "egbas_to_query": ours.mean_distance_to_query,
                    "eps_to_query": base.mean_distance_to_query,
                    "egbas_output_diversity": ours.output_diversity,
                    "eps_output_diversity": base.output_diversity,
                    "egbas_samples_per_s": ours.n_samples / ours_s,
                    "eps_samples_per_s": base.n_samples / base_s,
                    "eps_in_region_per_s": int(base.in_region.sum()) / base_s,
                    "egbas_proposal_acceptance": ours.proposal_acceptance_rate,
                }
            )
        mean = {k: statistics.mean(float(r[k]) for r in rows) for k in rows[0]}
        mean["layer_size"] = int(mask.numel())
        mean["egbas_all_complete"] = all(r["egbas_complete"] for r in rows)
        mean["spread_ratio"] = mean["egbas_pairwise"] / mean["eps_pairwise"]
        mean["to_query_ratio"] = mean["egbas_to_query"] / mean["eps_to_query"]
        mean["output_diversity_ratio"] = (
            mean["egbas_output_diversity"] / mean["eps_output_diversity"]
        )
        mean["speed_ratio"] = mean["egbas_samples_per_s"] / mean["eps_samples_per_s"]
        mean["spread_ratio_min_over_queries"] = min(
            r["egbas_pairwise"] / r["eps_pairwise"] for r in rows
        )
        per_layer[layer] = {k: round(v, 4) for k, v in mean.items()}
        print(layer, json.dumps(per_layer[layer]), flush=True)

    figures = {
        "benchmark": "egbas_vs_epsilon",
        "quick": args.quick,
        "threads": args.threads,
        "n_queries": n_queries,
        "n_samples": n_samples,
        "sparsity": sparsity,
        "mask_steps": mask_steps,
        "step_size_rule": f"{args.step_factor:g} * epsilon",
        "target_eps_acceptance": 0.9,
        "layers": per_layer,
        "egbas_acceptance_all_layers": min(
            v["egbas_acceptance"] for v in per_layer.values()
        ),
        "spread_ratio_min_layer": min(v["spread_ratio"] for v in per_layer.values()),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
