"""NeuronShapley against the paper's sequential evaluation and Captum.

On the shipped digits classifier (players: conv channels), in one process:

1. **throughput**: coalition evaluations per second of NeuronShapley (batched
   coalitions through hooks; with the torch.fx first-layer prefix cache; with
   the segment cache: split at every player layer, each segment run once per
   distinct upstream mask; and, the default, the segment cache with
   incremental linear fronts: the layer after each player layer updated by
   one channel's contribution per removed player) against a
   sequential baseline that, like the paper's code, rewrites the weights of
   the removed filters and runs one full forward pass per coalition; the same
   permutations are walked by both (zero removal, so weight rewriting is
   exact), and the values are checked to agree. Measured with the default
   number of torch threads and with one thread.
2. **vs Captum**: ``captum.attr.ShapleyValueSampling`` on a wrapper whose
   input is the neuron mask (one forward pass per coalition), at the same
   number of permutations: wall time and RMSE against a long reference run.
3. **bandit**: plain truncated Monte Carlo against the ``top_k=10`` bandit
   (delta 0.05 and 0.2), seeds 0, 1 and 2, on all conv channels (80
   players, 8000 permutations at most) and on ``conv3`` (32 players, 2000):
   the evaluations after which the top-10 recall against a long untruncated
   reference (30000 and 10000 permutations, cached in ``benchmarks/.cache``)
   stays at 90% or more to the end of the run; the evaluations after which
   the run's own empirical Bernstein bounds certify an epsilon-approximate
   top 10 (epsilon 0.01); the mean recall at equal evaluation budgets.
4. **scaling**: time per permutation for 16, 64 and 256 players (hidden units
   of a wider MLP on the digits).

Prints one JSON line at the end. ``--quick`` is a smoke version (< 60 s).
``--device cuda`` runs every section on a GPU (the one-thread rows are then
skipped and a row on all 1797 digits is added); ``--sections`` picks some of
``throughput,captum,bandit,scaling``.

    python benchmarks/bench_neuron_shapley.py [--quick] [--device cuda]
"""

import argparse
import hashlib
import json
import math
import os
import time
import warnings

import torch
from captum.attr import ShapleyValueSampling
from torch import nn

from captum_inverseset import NeuronShapley
from captum_inverseset._core.layer.neuron_shapley.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from captum_inverseset._core.layer.neuron_shapley.run_state import permutation_seed
from captum_inverseset.hooks import replace_layer_output
from captum_inverseset.zoo import digits_classifier, load_digits_dataset

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@torch.no_grad()
def sequential_weight_rewrite(model, convs, x, y, n_permutations, seed):
    """The paper's scheme: zero the removed filter's weights, one forward each.

    Walks the same permutations as NeuronShapley (same per-permutation seeds)
    and returns (values, evaluations).
    """
    sizes = [c.out_channels for c in convs]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    n_players = offsets[-1]
    saved = [(c.weight.clone(), c.bias.clone()) for c in convs]

    def accuracy():
        return (model(x).argmax(1) == y).double().mean().item()

    sums = torch.zeros(n_players, dtype=torch.float64)
    evaluations = 0
    try:
        for index in range(n_permutations):
            gen = torch.Generator().manual_seed(permutation_seed(seed, index))
            perm = torch.randperm(n_players, generator=gen)
            previous = accuracy()
            evaluations += 1
            for player in perm.tolist():
                layer = max(i for i in range(len(convs)) if offsets[i] <= player)
                unit = player - offsets[layer]
                convs[layer].weight[unit] = 0
                convs[layer].bias[unit] = 0
                current = accuracy()
                evaluations += 1
                sums[player] += previous - current
                previous = current
            for conv, (w, b) in zip(convs, saved):
                conv.weight.copy_(w)
                conv.bias.copy_(b)
    finally:
        for conv, (w, b) in zip(convs, saved):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    return sums / n_permutations, evaluations


class MaskGame(nn.Module):
    """Input: neuron masks ``(k, P)``; output: the metric of each coalition.

    One forward pass of the classifier per mask row, the way a user would wrap
    the game for Captum's input-attribution methods.
    """

    def __init__(self, model, layer, x, y, fill):
        super().__init__()
        self.model, self.layer, self.x, self.y, self.fill = model, layer, x, y, fill

    @torch.no_grad()
    def forward(self, masks):
        values = []
        for mask in masks:
            m = mask.reshape(1, -1, 1, 1)

            def ablate(out, m=m):
                return out * m + self.fill * (1 - m)

            with replace_layer_output(self.layer, ablate):
                out = self.model(self.x)
            # the same metric as NeuronShapley's "loss": -cross-entropy
            values.append(-torch.nn.functional.cross_entropy(out, self.y))
        return torch.stack(values)


def rmse(a, b):
    return math.sqrt(((a.double() - b.double()) ** 2).mean().item())


def top_recall(values, reference, k=10):
    top = set(torch.argsort(values, descending=True)[:k].tolist())
    ref = set(torch.argsort(reference, descending=True)[:k].tolist())
    return len(top & ref) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument(
        "--sections",
        default="throughput,captum,bandit,scaling",
        help="comma-separated subset of throughput,captum,bandit,scaling",
    )
    parser.add_argument(
        "--permutations",
        type=int,
        default=None,
        help="permutations per throughput run (default 8, quick 2)",
    )
    parser.add_argument(
        "--fresh-reference",
        action="store_true",
        help="recompute the bandit section's references instead of reading "
        "benchmarks/.cache",
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    unknown = sections - {"throughput", "captum", "bandit", "scaling"}
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}")
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    quick = args.quick
    dev = torch.device(args.device)
    on_gpu = dev.type != "cpu"
    model = digits_classifier().to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    data = load_digits_dataset()
    data = data._replace(**{k: v.to(dev) for k, v in data._asdict().items()})
    figures = {"quick": quick, "threads": torch.get_num_threads(), "device": str(dev)}
    if on_gpu:
        figures["gpu"] = torch.cuda.get_device_name(dev)

    # 1. throughput: all conv channels (80 players), zero removal. The machine
    # is shared, so each method is timed `repeats` times, interleaved, and the
    # best rate is kept.
    n_eval = 100 if quick else data.test_inputs.shape[0]  # 359: the test set
    convs = [model.conv1, model.conv2, model.conv3]
    # Several permutations, so that the one-off setup (tracing, the prefix,
    # V(all) and V(none)) is amortised as in a real run; it is included.
    n_perm = args.permutations or (2 if quick else 8)
    repeats = 1 if quick else 2
    names = [
        "batched_hooks",
        "batched_prefix",
        "batched_segments",
        "batched_segments_incremental",
    ]
    # (name, engine): the default ("auto") is the incremental engine with at
    # least 96 examples per batch on a CPU, else the segment engine
    modes = [
        ("batched_hooks", "hooks"),
        ("batched_prefix", "prefix"),
        ("batched_segments", "segments"),
        ("batched_segments_incremental", "auto"),
    ]

    def throughput(layers, x, y):
        kw = dict(target=y, removal="zero", n_permutations=n_perm, seed=0)
        rates = dict.fromkeys(["sequential", *names], 0.0)
        passes = {}
        diff = 0.0
        used = False
        for _ in range(repeats):
            (seq_values, seq_evals), t = timed(
                lambda: sequential_weight_rewrite(model, layers, x, y, n_perm, 0)
            )
            rates["sequential"] = max(rates["sequential"], seq_evals / t)
            for name, engine in modes:
                ns = NeuronShapley(model, layers if len(layers) > 1 else layers[0])
                st, t = timed(
                    lambda ns=ns, engine=engine: ns.interpret(x, engine=engine, **kw)
                )
                assert engine == "auto" or st.engine == engine
                rates[name] = max(rates[name], st.n_evaluations / t)
                passes[name] = st.n_forward_passes
                diff = max(diff, (st.values - seq_values).abs().max().item())
                used = used or bool(st.incremental)
        out = {f"{k}_evals_per_s": v for k, v in rates.items()}
        for k in names:
            out[f"{k}_speedup"] = rates[k] / rates["sequential"]
        out["max_abs_diff_vs_sequential"] = diff
        # forward passes per run (the sequential baseline: one per evaluation)
        out["forward_passes"] = passes
        # False below 96 examples per batch: the default is then the segment
        # engine, and the last column repeats it.
        out["incremental_path_ran"] = used
        return out

    default_threads = torch.get_num_threads()
    thread_counts = [default_threads] + ([1] if default_threads > 1 else [])
    if on_gpu or "throughput" not in sections:
        thread_counts = thread_counts[:1] if "throughput" in sections else []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        suffix = "" if threads == default_threads else "_1_thread"
        x, y = data.test_inputs[:n_eval], data.test_labels[:n_eval]
        figures["throughput_all_conv" + suffix] = dict(
            players=80, eval_examples=x.shape[0], threads=threads,
            permutations=n_perm, **throughput(convs, x, y),
        )  # fmt: skip
        # conv3 only (32 players): the prefix cache skips conv1 and conv2
        figures["throughput_conv3" + suffix] = dict(
            players=32, eval_examples=x.shape[0], threads=threads,
            permutations=n_perm, **throughput([model.conv3], x, y),
        )  # fmt: skip
        # a small evaluation set, where the per-forward overhead dominates
        x, y = data.test_inputs[:32], data.test_labels[:32]
        figures["throughput_all_conv_32_examples" + suffix] = dict(
            players=80, eval_examples=32, threads=threads,
            permutations=n_perm, **throughput(convs, x, y),
        )  # fmt: skip
    if on_gpu and "throughput" in sections:
        # every digit (1797 examples): a batch size that keeps a GPU busy
        x = torch.cat([data.train_inputs, data.test_inputs])
        y = torch.cat([data.train_labels, data.test_labels])
        figures["throughput_all_conv_all_digits"] = dict(
            players=80, eval_examples=x.shape[0], permutations=n_perm,
            **throughput(convs, x, y),
        )  # fmt: skip
    torch.set_num_threads(default_threads)

    # 2. vs Captum ShapleyValueSampling on conv3 (32 players), mean removal,
    # metric: negative cross-entropy (continuous, so rankings are well posed)
    n_small = 60
    xs, ys = data.test_inputs[:n_small], data.test_labels[:n_small]
    ns = NeuronShapley(model, model.conv3)
    n_ref = 40 if quick else 400
    ref_time = None
    if "captum" in sections:
        reference, ref_time = timed(
            lambda: ns.attribute(
                xs, target=ys, metric="loss", n_permutations=n_ref, seed=1000
            )
        )
        n_cmp = 5 if quick else 25
        ours, ours_time = timed(
            lambda: ns.attribute(xs, target=ys, metric="loss", n_permutations=n_cmp)
        )
        with torch.no_grad():
            fill = model.relu3(model.conv3(model.pool(model.relu2(model.conv2(
                model.relu1(model.conv1(xs))))))).mean(0)  # fmt: skip
        game = MaskGame(model, model.conv3, xs, ys, fill)
        svs = ShapleyValueSampling(game)
        torch.manual_seed(0)
        captum_values, captum_time = timed(
            lambda: svs.attribute(
                torch.ones(1, 32, device=dev),
                baselines=torch.zeros(1, 32, device=dev),
                n_samples=n_cmp,
            )[0]
        )
        figures["vs_captum_svs"] = dict(
            players=32,
            eval_examples=n_small,
            metric="loss",
            permutations=n_cmp,
            reference_permutations=n_ref,
            ours_seconds=ours_time,
            captum_seconds=captum_time,
            speedup=captum_time / ours_time,
            ours_rmse=rmse(ours, reference),
            captum_rmse=rmse(captum_values, reference),
        )

    # 3. bandit vs plain truncated MC. Per round of each run: the top-10
    # recall against a long untruncated reference, and whether the run's own
    # confidence bounds already certify an epsilon-approximate top 10.
    if "bandit" in sections:
        seeds = (0,) if quick else (0, 1, 2)
        budgets = (1000, 4000, 16000, 64000, 256000)
        cert_eps = 0.01

        def reference(layers, n_long):
            """Untruncated ``n_long``-permutation run, cached on disk: keyed by
            the weights and the settings, written and read like NeuronShapley's
            checkpoints (atomically; plain tensors, ``weights_only``)."""
            h = hashlib.sha256()
            for name, t in model.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().numpy().tobytes())
            names = {id(m): n for n, m in model.named_modules()}
            chosen = [
                names[id(m)] for m in (layers if isinstance(layers, list) else [layers])
            ]
            h.update(repr((chosen, n_long, n_small, "loss", 1000)).encode())
            key = h.hexdigest()
            path = os.path.join(CACHE, f"shapley_reference_{key[:16]}.pt")
            if not args.fresh_reference:
                try:
                    cached = load_checkpoint(path, key)
                except ValueError:  # an older cache format: recompute
                    cached = None
                if cached is not None:
                    return cached, True
            ref_st = NeuronShapley(model, layers).interpret(
                xs, target=ys, metric="loss", n_permutations=n_long, seed=1000,
            )  # fmt: skip
            ref = dict(
                values=ref_st.values,
                standard_errors=ref_st.standard_errors,
                gap=torch.tensor(ref_st.value_full - ref_st.value_empty),
            )
            save_checkpoint(path, key, ref)
            return ref, False

        def curve_of(layers, ref, tolerance, cap, seed, **extra):
            curve = []
            ns_run = NeuronShapley(model, layers)

            def record(stats):
                certified = {
                    d: bool(stats.settled(10, d, cert_eps).all()) for d in (0.05, 0.2)
                }
                curve.append(
                    (stats.n_permutations, stats.n_evaluations,
                     top_recall(stats.means(), ref), certified)
                )  # fmt: skip

            ns_run.attribute(
                xs, target=ys, metric="loss", n_permutations=cap, seed=seed,
                truncation_tolerance=tolerance, callback=record, **extra,
            )  # fmt: skip
            return curve

        def holds_from(curve):
            # evaluations after which the recall stays >= 90% to the run's end
            for i, (_, evals, _, _) in enumerate(curve):
                if all(r >= 0.9 for _, _, r, _ in curve[i:]):
                    return evals
            return None

        def certified_at(curve, d):
            return next(((e, r) for _, e, r, c in curve if c[d]), (None, None))

        def certify_key(d):
            return f"evals_to_certify_delta_{str(d).replace('.', '_')}"

        def recall_at(curve, budget):
            seen = [r for _, evals, r, _ in curve if evals <= budget]
            return seen[-1] if seen else 0.0

        def ratio(a, b):
            both = [(x, y) for x, y in zip(a, b) if x and y]
            return sum(x for x, _ in both) / sum(y for _, y in both) if both else None

        def bandit_figures(layers, n_players, n_long, cap):
            ref_d, cached = reference(layers, n_long)
            ref = ref_d["values"]
            tolerance = 0.05 * abs(float(ref_d["gap"]))  # 5% of V(N) - V(empty)
            methods = {
                "plain_tmc": ({}, 0.05),
                "bandit": (dict(top_k=10), 0.05),
                # the confidence level of the paper's released code
                "bandit_delta_0_2": (dict(top_k=10, bandit_delta=0.2), 0.2),
            }
            order = torch.argsort(ref, descending=True)
            out = dict(
                players=n_players,
                metric="loss",
                eval_examples=n_small,
                reference_permutations=n_long,
                reference_from_cache=cached,
                truncation_tolerance=tolerance,
                permutation_cap=cap,
                certify_epsilon=cert_eps,
                seeds=list(seeds),
                reference_values_ranks_6_to_14=[
                    round(v, 4) for v in ref[order[5:14]].tolist()
                ],
                reference_se_ranks_6_to_14=[
                    round(v, 4) for v in ref_d["standard_errors"][order[5:14]].tolist()
                ],
            )
            for name, (extra, d) in methods.items():
                curves = [
                    curve_of(layers, ref, tolerance, cap, seed, **extra)
                    for seed in seeds
                ]
                # plain Monte Carlo is certified at both confidence levels
                deltas = (0.05, 0.2) if name == "plain_tmc" else (d,)
                certs = {dd: [certified_at(c, dd) for c in curves] for dd in deltas}
                out[name] = dict(
                    evals_to_recall90=[holds_from(c) for c in curves],
                    total_evals=[c[-1][1] for c in curves],
                    final_recall=[c[-1][2] for c in curves],
                    mean_recall_at_budget={
                        str(b): sum(recall_at(c, b) for c in curves) / len(curves)
                        for b in budgets
                    },
                    **{certify_key(dd): [e for e, _ in certs[dd]] for dd in deltas},
                    recall_when_certified=[r for _, r in certs[d]],
                )
            plain = out["plain_tmc"]
            for name in ("bandit", "bandit_delta_0_2"):
                # ratios of the sums over the seeds where both got there
                key = certify_key(methods[name][1])
                out[f"{name}_over_plain_recall90"] = ratio(
                    out[name]["evals_to_recall90"], plain["evals_to_recall90"]
                )
                out[f"{name}_over_plain_certify"] = ratio(out[name][key], plain[key])
            return out

        # The player set: every conv channel (80 players). Its top 10
        # ends in a plateau, so the recall needs thousands of permutations.
        all_convs = [model.conv1, model.conv2, model.conv3]
        figures["bandit_top10_all_conv"] = bandit_figures(
            all_convs, 80, 60 if quick else 30000, 40 if quick else 8000
        )
        # conv3 alone (32 players): 90% recall allows one miss, and the
        # reference has a clear step after rank 11.
        figures["bandit_top10"] = bandit_figures(
            model.conv3, 32, 60 if quick else 10000, 40 if quick else 2000
        )

    # 4. scaling with the number of players (hidden units of a wider MLP)
    if "scaling" in sections:
        scaling = {}
        flat = data.test_inputs[:n_small].flatten(1)
        for width in (16, 64, 256):
            torch.manual_seed(width)
            mlp = nn.Sequential(
                nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 64), nn.ReLU(),
                nn.Linear(64, 10),
            ).to(dev).eval()  # fmt: skip
            ns_w = NeuronShapley(mlp, mlp[1])
            st, t = timed(
                lambda ns_w=ns_w: ns_w.interpret(flat, n_permutations=2, seed=0)
            )
            scaling[str(width)] = dict(
                seconds_per_permutation=t / 2,
                evals_per_s=st.n_evaluations / t,
            )
        figures["scaling_players"] = scaling
    figures["reference_seconds"] = ref_time
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
