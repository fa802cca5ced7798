"""The top-k bandit at 4800 players, over a run long enough to settle them.

A multilayer perceptron on the sklearn digits (64 pixels -> 4800 ReLU
units -> 10 classes, trained here in a few seconds, seed 0); every hidden
unit is a player (``Linear(64, 4800)``), the loss on 60 held-out digits is
the metric, walks truncate at 5% of ``V(N) - V(empty)``, ``top_k=100`` with
every default of the bandit (a union bound over the players, at least 10
evaluated contributions before a player is settled).

For ``--permutations`` permutations it records, after every round:

* the bandit's evaluations and settled players (``--seeds`` seeds);
* plain truncated Monte Carlo's evaluations at the same permutations (seed
  0, the first bandit seed's permutations),

and prints the bandit's evaluations over plain truncated Monte Carlo's at
each round. With ``--reference N`` a plain run of ``N`` permutations (its own
seed) gives the reference top 100, and the **unsafe drops** are counted:
players a bandit run settled *out of* its top 100 that the reference puts in
its top 100.

Prints one JSON line; the evaluation counts do not depend on the machine's
load. ``--quick`` is a smoke version (8 permutations, no reference).

    python benchmarks/bench_neuron_shapley_bandit_scale.py [--quick]
        [--permutations 400] [--seeds 3] [--reference 4000]
"""

import argparse
import json
import os
import sys
import time
import warnings

import torch
from torch import nn

from captum_inverseset import NeuronShapley
from captum_inverseset.zoo import load_digits_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_neuron_shapley_ablation import fit  # noqa: E402

WIDTH = 4800
TOP_K = 100


def wide_mlp(data, epochs: int = 30) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
    fit(model, data.train_inputs.flatten(1), data.train_labels, epochs, 1e-3)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def five_percent_tolerance(ns, x, y) -> float:
    """The truncation tolerance of the bandit benchmarks: 5% of
    |V(N) - V(empty)| of the loss game."""
    ends = ns.interpret(x, target=y, metric="loss", n_permutations=1, seed=0)
    return 0.05 * abs(ends.value_full - ends.value_empty)


def run(ns, x, kw, n_perm, seed, top_k=None):
    """The result, (permutations, evaluations) after every round, seconds."""
    rounds = []
    start = time.perf_counter()

    def record(stats):
        rounds.append((stats.n_permutations, stats.n_evaluations))

    res = ns.interpret(
        x, n_permutations=n_perm, seed=seed, top_k=top_k, callback=record, **kw
    )
    return res, rounds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--permutations", type=int, default=None, help="(400)")
    parser.add_argument("--seeds", type=int, default=None, help="bandit seeds (3)")
    parser.add_argument(
        "--reference", type=int, default=0, help="reference permutations (0: off)"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    n_perm = args.permutations or (8 if args.quick else 400)
    n_seeds = args.seeds or (1 if args.quick else 3)
    data = load_digits_dataset()
    model = wide_mlp(data, epochs=2 if args.quick else 30)
    x_test, y_test = data.test_inputs.flatten(1), data.test_labels
    accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    x, y = x_test[:60], y_test[:60]
    ns = NeuronShapley(model, model[0])
    tolerance = five_percent_tolerance(ns, x, y)
    kw = dict(target=y, metric="loss", truncation_tolerance=tolerance)
    plain, plain_rounds, plain_s = run(ns, x, kw, n_perm, seed=0)
    plain_at = dict(plain_rounds)
    out = dict(
        benchmark="neuron_shapley_bandit_scale",
        quick=args.quick,
        players=WIDTH,
        top_k=TOP_K,
        test_accuracy=round(accuracy, 4),
        engine=plain.engine,
        permutations=n_perm,
        truncation_tolerance=tolerance,
        plain_tmc=dict(evaluations=plain.n_evaluations, seconds=round(plain_s, 1)),
    )
    bandits = []
    for seed in range(n_seeds):
        res, rounds, seconds = run(ns, x, kw, n_perm, seed=seed, top_k=TOP_K)
        ratio_at = []
        for n, evals in rounds:
            if seed == 0 and n in plain_at:
                ratio_at.append([n, round(evals / plain_at[n], 4)])
        bandits.append((seed, res))
        row = dict(
            seed=seed,
            permutations=res.n_permutations,
            evaluations=res.n_evaluations,
            settled=int(res.settled.sum()),
            top_k_settled=res.top_k_settled,
            seconds=round(seconds, 1),
        )
        if seed == 0:
            row["evaluations_over_plain_by_permutations"] = ratio_at
            row["evaluations_over_plain"] = round(
                res.n_evaluations / plain_at[res.n_permutations], 4
            )
        out.setdefault("bandit", []).append(row)
    if args.reference:
        ref, _, ref_s = run(ns, x, kw, args.reference, seed=10**6)
        ref_top = set(torch.argsort(ref.values, descending=True)[:TOP_K].tolist())
        drops = {}
        for seed, res in bandits:
            top = set(torch.argsort(res.values, descending=True)[:TOP_K].tolist())
            settled = torch.nonzero(res.settled).flatten().tolist()
            settled_out = {i for i in settled if i not in top}
            drops[str(seed)] = sorted(settled_out & ref_top)
        out["reference"] = dict(
            permutations=args.reference,
            seconds=round(ref_s, 1),
            seeds_with_unsafe_drops=sum(bool(d) for d in drops.values()),
            unsafe_drops=drops,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
