"""Does the top-k bandit ever settle a player that belongs in the top k?

For each setting, one long plain truncated Monte Carlo run (``10 x`` the
bandit's permutations, its own seed) gives the reference top k. Then, for
each of ``--seeds`` seeds (``--resnet-seeds`` on the residual network),
NeuronShapley with ``top_k=k`` runs the bandit's
permutations with

* the default rule (a union bound over the players, the metric's known range
  where it has one, at least ``bandit_min_samples=10`` evaluated
  contributions before a player is settled), and
* the old rule of the paper's code (``bandit_union_bound=False,
  bandit_min_samples=0, bandit_value_range="observed"``),

and counts the **unsafe drops**: players the run settled *out of* its top k
that the long reference puts in its top k. It also reports the evaluations of
each rule over those of plain truncated Monte Carlo at the same permutations
(the bandit's saving), on the first ``--plain-seeds`` seeds.

Settings (every conv filter a player, loss metric on 60 held-out digits,
truncation at 5% of V(N) - V(empty), the issue's failure case):

* ``digits_classifier``: the shipped digits CNN, 80 filters, top 10, 40
  seeds of 100 permutations;
* ``digits_resnet``: the residual digits network of
  ``bench_neuron_shapley_ablation.py`` (a stem and three BasicBlocks), 112
  filters, top 10, 40 seeds of 30 permutations (the graph engine is slower
  per evaluation on this tiny network).

``--resnet18-digits S`` adds the same check at the paper's scale on a
trained network: ``torchvision.models.resnet18(weights=None,
num_classes=10)`` trained here on the digits (bilinearly upsampled to
3x32x32; 8 epochs), all 4800 conv filters as players, loss on 30 held-out
digits, ``top_k=100``, ``S`` seeds of ``--resnet18-digits-permutations``
(40) for each rule against a 10x longer reference.
``--resnet18-digits-curve N`` runs the bandit and plain truncated Monte
Carlo for ``N`` permutations each on the same network and reports their
evaluations every 40 permutations.

``--resnet18 N`` adds the evaluation counts at the paper's scale: every conv
filter of ``torchvision.models.resnet18(weights=None)`` (4800 players), loss
against its own predictions on 16 random 3x32x32 inputs, ``top_k=100``
against plain truncated Monte Carlo, ``N`` permutations each (no reference:
a 10x longer run is hours on a CPU).

Prints one JSON line; the evaluation counts do not depend on the machine's
load. ``--quick`` is a smoke version (the digits CNN only, one seed).

    python benchmarks/bench_neuron_shapley_bandit_safety.py [--quick] [--seeds 40]
        [--permutations 100] [--resnet-seeds 40] [--resnet-permutations 30]
        [--resnet18 24] [--resnet18-digits 8]
        [--resnet18-digits-curve 200] [--skip-digits]
"""

import argparse
import json
import os
import sys
import warnings

import torch
from torch import nn

from captum_inverseset import NeuronShapley
from captum_inverseset.zoo import digits_classifier, load_digits_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_neuron_shapley_ablation import fit, train_resnet  # noqa: E402
from bench_neuron_shapley_bandit_scale import five_percent_tolerance, run  # noqa: E402

OLD_RULE = dict(
    bandit_union_bound=False, bandit_min_samples=0, bandit_value_range="observed"
)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def setting(name, model, x, y, k, n_perm, seeds, plain_seeds):
    log(name, "reference", 10 * n_perm, "permutations")
    players = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ns = NeuronShapley(model, players)
    tolerance = five_percent_tolerance(ns, x, y)
    kw = dict(truncation_tolerance=tolerance, target=y, metric="loss")
    reference = ns.interpret(x, n_permutations=10 * n_perm, seed=10**6, **kw)
    ref_top = set(torch.argsort(reference.values, descending=True)[:k].tolist())

    def unsafe(res):
        top = set(torch.argsort(res.values, descending=True)[:k].tolist())
        dropped = {
            int(i) for i in torch.nonzero(res.settled).flatten() if int(i) not in top
        }
        return sorted(dropped & ref_top)

    out = dict(
        players=int(reference.values.numel()),
        top_k=k,
        bandit_permutations=n_perm,
        reference_permutations=10 * n_perm,
        truncation_tolerance=tolerance,
        seeds=len(seeds),
    )
    for rule, extra in (("default", {}), ("old_rule", OLD_RULE)):
        drops, evals, settled = [], [], []
        for seed in seeds:
            res = ns.interpret(
                x, n_permutations=n_perm, seed=seed, top_k=k, **kw, **extra
            )
            drops.append(unsafe(res))
            evals.append(res.n_evaluations)
            settled.append(int(res.settled.sum()))
            log(name, rule, "seed", seed, drops[-1], evals[-1], settled[-1])
        out[rule] = dict(
            seeds_with_unsafe_drops=sum(bool(d) for d in drops),
            unsafe_drops={str(s): d for s, d in zip(seeds, drops) if d},
            mean_settled_players=sum(settled) / len(settled),
            evaluations=evals,
        )
    plain = [
        ns.interpret(x, n_permutations=n_perm, seed=seed, **kw).n_evaluations
        for seed in seeds[:plain_seeds]
    ]
    for rule in ("default", "old_rule"):
        ours = out[rule]["evaluations"][:plain_seeds]
        out[rule]["evaluations_over_plain_tmc"] = round(sum(ours) / sum(plain), 4)
    out["plain_tmc_evaluations"] = plain
    return out


def upsampled(x):
    """Digits as 3x32x32 images, the input size of the ResNet benchmarks."""
    x = nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1)


def train_resnet18(data, epochs: int = 8, seed: int = 0) -> nn.Module:
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x, y = upsampled(data.train_inputs), data.train_labels
    return fit(model, x, y, epochs, 1e-3, seed)


def evaluation_curve(model, x, y, k, n_perm, step=40):
    """Evaluations of the bandit (every default) and of plain truncated Monte
    Carlo after every ``step`` permutations of one run each (seed 0)."""
    ns = NeuronShapley(model, [m for m in model.modules() if isinstance(m, nn.Conv2d)])
    kw = dict(
        target=y, metric="loss", truncation_tolerance=five_percent_tolerance(ns, x, y)
    )
    out = {"permutations": list(range(step, n_perm + 1, step))}
    for name, top_k in (("bandit", k), ("plain_tmc", None)):
        res, rounds, _ = run(ns, x, kw, n_perm, seed=0, top_k=top_k)
        at = dict(rounds)
        at[res.n_permutations] = res.n_evaluations  # a run the bandit ended early
        out[name] = [at.get(n) for n in out["permutations"]]
        if top_k is not None:
            out["settled_at_end"] = int(res.settled.sum())
        log("curve", name, out[name])
    out["bandit_over_plain"] = [
        None if a is None or b is None else round(a / b, 4)
        for a, b in zip(out["bandit"], out["plain_tmc"])
    ]
    return out


def resnet18_counts(n_perm):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    ns = NeuronShapley(model, [m for m in model.modules() if isinstance(m, nn.Conv2d)])
    out = {"players": 4800, "permutations": n_perm}
    for name, extra in (("bandit_top100", dict(top_k=100)), ("plain_tmc", {})):
        r = ns.interpret(
            x, target=y, metric="loss", n_permutations=n_perm, seed=0, **extra
        )
        out[name] = dict(
            evaluations=r.n_evaluations,
            settled=None if r.settled is None else int(r.settled.sum()),
        )
    out["evaluations_bandit_over_plain"] = round(
        out["bandit_top100"]["evaluations"] / out["plain_tmc"]["evaluations"], 4
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="bandit seeds (40)")
    parser.add_argument("--permutations", type=int, default=None, help="(100)")
    parser.add_argument(
        "--resnet-seeds", type=int, default=40, help="seeds on the residual net"
    )
    parser.add_argument(
        "--resnet-permutations", type=int, default=30, help="on the residual net"
    )
    parser.add_argument("--plain-seeds", type=int, default=5)
    parser.add_argument(
        "--resnet18", type=int, default=0, help="permutations at 4800 players (0: off)"
    )
    parser.add_argument(
        "--resnet18-digits", type=int, default=0,
        help="seeds on a ResNet-18 trained on the digits (0: off)",
    )  # fmt: skip
    parser.add_argument("--resnet18-digits-permutations", type=int, default=40)
    parser.add_argument(
        "--resnet18-digits-curve", type=int, default=0,
        help="permutations of one bandit and one plain run on it (0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-digits", action="store_true",
        help="skip the digits CNN and the digits ResNet (with --resnet18-digits)",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    n_seeds = args.seeds or (1 if args.quick else 40)
    n_perm = args.permutations or (6 if args.quick else 100)
    seeds = list(range(n_seeds))
    plain_seeds = min(args.plain_seeds, n_seeds)
    data = load_digits_dataset()
    x, y = data.test_inputs[:60], data.test_labels[:60]
    models = {}
    if not args.skip_digits:
        models["digits_classifier"] = digits_classifier().eval()
    if not (args.quick or args.skip_digits):
        models["digits_resnet"] = train_resnet(data, epochs=15)
    figures = {"quick": args.quick}
    for name, model in models.items():
        for p in model.parameters():
            p.requires_grad_(False)
        if name == "digits_resnet":  # the graph engine: fewer, shorter runs
            figures[name] = setting(
                name, model, x, y, 10, args.resnet_permutations,
                list(range(args.resnet_seeds)), min(plain_seeds, args.resnet_seeds),
            )  # fmt: skip
        else:
            figures[name] = setting(name, model, x, y, 10, n_perm, seeds, plain_seeds)
    if args.resnet18_digits or args.resnet18_digits_curve:
        model = train_resnet18(data)
        for p in model.parameters():
            p.requires_grad_(False)
        xs = upsampled(data.test_inputs)
        with torch.no_grad():
            accuracy = (model(xs).argmax(1) == data.test_labels).float().mean()
        figures["resnet18_digits_test_accuracy"] = round(float(accuracy), 4)
        xs, ys = xs[:30], data.test_labels[:30]
    if args.resnet18_digits:
        n = args.resnet18_digits
        figures["resnet18_digits"] = setting(
            "resnet18_digits", model, xs, ys, 100,
            args.resnet18_digits_permutations, list(range(n)), min(2, n),
        )  # fmt: skip
    if args.resnet18_digits_curve:
        figures["resnet18_digits_curve"] = evaluation_curve(
            model, xs, ys, 100, args.resnet18_digits_curve
        )
    if args.resnet18:
        figures["resnet18"] = resnet18_counts(args.resnet18)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
