"""NeuronShapley's default path against the sequential baseline, alone in a
fresh process.

``bench_neuron_shapley.py`` times every evaluation path one after the other
in one process, so the default (depth-first, incremental) path runs after
the breadth-first paths have allocated and freed tens of megabytes. glibc's
allocator then keeps freed memory instead of returning it to the system. A
process that runs only the default path never frees a block that large, so
glibc keeps giving memory back and taking it again, and each new page costs
a page fault. This script measures that case: a fresh process (this one)
that alternates the sequential weight-rewriting baseline and the default
path, nothing else, on all 80 conv channels of the digits classifier with
the 359 test digits, zero removal, the same permutations. It reports the
best rate of each, their ratio, and the minor page faults of each default
run (``resource.getrusage``; Linux and macOS).

Prints one JSON line. ``--quick`` is a smoke version.

    python benchmarks/bench_neuron_shapley_fresh_process.py [--quick]
"""

import argparse
import json
import os
import sys
import time
import warnings

import torch

from captum_inverseset import NeuronShapley
from captum_inverseset.zoo import digits_classifier, load_digits_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_neuron_shapley import sequential_weight_rewrite  # noqa: E402


def minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on this platform
        return -1
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="default 6")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    quick = args.quick
    repeats = args.repeats or (1 if quick else 6)
    n_perm = 2 if quick else 8
    model = digits_classifier().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    data = load_digits_dataset()
    n_eval = 100 if quick else data.test_inputs.shape[0]
    x, y = data.test_inputs[:n_eval], data.test_labels[:n_eval]
    convs = [model.conv1, model.conv2, model.conv3]
    seq_rates, rates, faults, incremental = [], [], [], []
    diff = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        seq_values, seq_evals = sequential_weight_rewrite(model, convs, x, y, n_perm, 0)
        seq_rates.append(seq_evals / (time.perf_counter() - start))
        ns = NeuronShapley(model, convs)
        before = minor_faults()
        start = time.perf_counter()
        st = ns.interpret(x, target=y, removal="zero", n_permutations=n_perm, seed=0)
        elapsed = time.perf_counter() - start
        faults.append(minor_faults() - before)
        rates.append(st.n_evaluations / elapsed)
        incremental.append(bool(st.incremental))
        diff = max(diff, (st.values - seq_values).abs().max().item())
    figures = dict(
        quick=quick,
        threads=torch.get_num_threads(),
        players=80,
        eval_examples=n_eval,
        permutations=n_perm,
        repeats=repeats,
        sequential_evals_per_s=max(seq_rates),
        default_evals_per_s=max(rates),
        speedup=max(rates) / max(seq_rates),
        default_evals_per_s_each_run=rates,
        default_minor_page_faults_each_run=faults,
        incremental_path_ran=all(incremental),
        max_abs_diff_vs_sequential=diff,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
