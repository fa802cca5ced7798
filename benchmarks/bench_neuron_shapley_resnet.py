"""NeuronShapley at the paper's scale: every conv filter of a torchvision
network as one player set (weights=None), in one process.

1. **throughput** (resnet18: 20 conv layers, 4800 filters; ``--full`` adds
   resnet50, 26560): coalition evaluations per second along the same
   consecutive coalitions of one permutation walk, accuracy against the
   network's own predictions on random 3x32x32 inputs, for

   * ``baseline``: one coalition per forward pass through hooks (the hook
     engine with one coalition per pass);
   * ``limit``: the exact-evaluation limit, one coalition at a time with the
     activations of the previous coalition cached at every node, only the
     nodes downstream of the changed player layer rerun (this script's
     :func:`limit_walk`);
   * ``ours``: :class:`NeuronShapley`'s default engine (``engine="auto"``,
     the graph engine on a residual network), with its default passes.

   The values of all three are compared on the coalitions they share.
2. **memory** (resnet18, all filters, 3x224x224, 64 examples; ``--quick``:
   112 px, 8 examples): each run in a fresh process, the largest growth of
   the resident memory (sampled every millisecond) while a chunk of
   coalitions is evaluated, with the default budget (a quarter of the
   available memory) and with ``max_memory`` of 1 GiB; the budget beside it.
3. **permutations**: the peak memory growth of a whole run of 1, 10 and 100
   permutations (a small residual network, 3 blocks of 8 channels, 48
   players), each in a fresh process: it must not grow with the number of
   permutations.

4. **bandit** (not in the default sections): a run of
   ``NeuronShapley(..., top_k=100)`` with every conv filter of
   ``--bandit-arch`` (default ``inception_v3``, weights=None, its auxiliary
   classifier left out) as players, BatchNorm statistics taken from the
   inputs (see :func:`calibrate_batchnorm`), loss against the network's own
   predictions on ``--bandit-examples`` random inputs of ``--bandit-size``
   pixels, truncation at 5% of V(N) - V(empty) (as in
   ``bench_neuron_shapley_bandit_safety.py``), one permutation per round,
   every default of the bandit, until the top 100 is settled or
   ``--bandit-seconds`` have passed; wall time, permutations, evaluations
   and settled players.

``--device cuda`` runs the throughput and bandit sections on a GPU (the
memory sections measure the CPU's resident memory and stay on the CPU).
Prints one JSON line. ``--quick`` is a smoke version (< 60 s).

    python benchmarks/bench_neuron_shapley_resnet.py [--quick] [--full]
        [--device cuda] [--sections throughput,memory,permutations,bandit]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import warnings

import torch
import torchvision
from torch import fx, nn

from captum_inverseset import NeuronShapley
from captum_inverseset._core.layer.neuron_shapley.game import ShapleyGame
from captum_inverseset._core.layer.neuron_shapley.metrics import resolve_metric
from captum_inverseset._core.layer.neuron_shapley.removal import resolve_removal
from captum_inverseset._utils.hooks import mask_units


def current_rss() -> int:
    """Resident memory of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


class PeakGrowth:
    """Largest resident memory above the level at entry while the block runs
    (sampled every millisecond by a thread)."""

    def __enter__(self):
        self.start = current_rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        self.growth = self.peak - self.start


def walk_masks(n_players: int, start: int, count: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    rank_of = torch.empty(n_players, dtype=torch.long)
    rank_of[torch.randperm(n_players, generator=gen)] = torch.arange(n_players)
    positions = torch.arange(start, min(n_players, start + count))
    return (rank_of.unsqueeze(0) >= positions.unsqueeze(1)).float()


@torch.no_grad()
def limit_walk(engine, inputs, masks):
    """One coalition at a time, rerunning only the nodes downstream of the
    player layers whose masks changed since the previous coalition (a player
    layer whose own mask alone changed is re-masked, not rerun); the outputs,
    one block per coalition."""
    game = engine.game
    env, prev, outs = {}, None, []
    n_layers = len(game.layers)
    for row in masks:
        if prev is None:
            changed = set(range(n_layers))
        else:
            diff = (row != prev).nonzero().flatten().tolist()
            changed = {
                max(i for i in range(n_layers) if game.offsets[i] <= d) for d in diff
            }
        placeholders = iter(inputs)
        for n in engine.nodes:
            if n.op == "placeholder":
                if prev is None:
                    env[n] = next(placeholders)
                continue
            if n.op == "output":
                outs.append(fx.node.map_arg(n.args[0], env.__getitem__))
                break
            if prev is not None and not (engine.key[n] & changed):
                continue
            layer = engine.player.get(n)
            keep = None
            if layer is not None:
                cols = slice(game.offsets[layer], game.offsets[layer + 1])
                keep = row[cols].unsqueeze(0)
                if prev is not None and not ((engine.key[n] - {layer}) & changed):
                    env[n] = mask_units(env[("raw", n)], keep, game.fills[layer])
                    continue
            args = fx.node.map_arg(n.args, env.__getitem__)
            kwargs = fx.node.map_arg(n.kwargs, env.__getitem__)
            out = engine._call(n, args, kwargs)
            if layer is not None:
                env[("raw", n)] = out
                out = mask_units(out, keep, game.fills[layer])
            env[n] = out
        prev = row
    return torch.cat(outs)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def make_model(arch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models, arch)(weights=None)
    return model.eval()


def throughput(arch, n_examples, size, chunk, n_baseline, repeats, device="cpu"):
    torch.manual_seed(0)
    model = make_model(arch).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x = torch.rand(
        n_examples, 3, size, size, generator=torch.Generator().manual_seed(0)
    ).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    batches = [((x,), y, None)]
    parts = (resolve_metric("accuracy"), resolve_removal("mean"))
    (ours, setup) = timed(lambda: ShapleyGame(model, convs, batches, *parts))
    hooks = ShapleyGame(model, convs, batches, *parts, engine="hooks", rows_per_pass=1)
    graph = ours.engine if ours.engine_name == "graph" else None
    if graph is None:
        graph = ShapleyGame(model, convs, batches, *parts, engine="graph").engine
    p = ours.n_players
    masks = walk_masks(p, p // 5, chunk)
    rows = masks[:n_baseline].to(device)
    rates = {"baseline": 0.0, "limit": 0.0, "ours": 0.0}
    diffs = {}
    for _ in range(repeats):
        base, t = timed(lambda: hooks.evaluate(masks[:n_baseline]))
        rates["baseline"] = max(rates["baseline"], n_baseline / t)
        limit_out, t = timed(lambda: limit_walk(graph, (x,), rows))
        rates["limit"] = max(rates["limit"], n_baseline / t)
        ours.start_walk()
        values, t = timed(lambda: ours.evaluate(masks))
        rates["ours"] = max(rates["ours"], masks.shape[0] / t)
    limit_values = ours.metric.parts(limit_out, y, n_baseline)
    limit_values = (limit_values[0] / limit_values[1]).cpu()
    diffs["ours_vs_baseline"] = (values[:n_baseline] - base).abs().max().item()
    diffs["limit_vs_baseline"] = (limit_values - base).abs().max().item()
    return dict(
        players=p,
        layers=len(convs),
        eval_examples=n_examples,
        input_size=size,
        engine=ours.engine_name,
        device=str(device),
        coalitions_timed={"ours": masks.shape[0], "baseline_and_limit": n_baseline},
        setup_seconds=setup,
        evals_per_s=rates,
        ours_over_limit=rates["ours"] / rates["limit"],
        ours_over_baseline=rates["ours"] / rates["baseline"],
        limit_over_baseline=rates["limit"] / rates["baseline"],
        max_abs_diff=diffs,
    )


@torch.no_grad()
def calibrate_batchnorm(model, x):
    """BatchNorm statistics of ``x``: with ``weights=None`` torchvision's
    inception_v3 has logits of order 1e11 on random inputs (every example
    one class, loss exactly 0, V(N) = V(empty)); normalised by the inputs'
    own statistics its outputs are a usable game."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the passes
        bn.train()
    for start in range(0, x.shape[0], 8):
        model(x[start : start + 8])
    model.eval()


def bandit_run(arch, size, n_examples, seconds, device="cpu", top_k=100,
               truncation=0.05):  # fmt: skip
    """Every conv filter of ``arch`` a player, the bandit for the top
    ``top_k`` with its defaults, until settled or ``seconds`` have passed."""
    torch.manual_seed(0)
    model = make_model(arch).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    convs = [  # the auxiliary classifier of inception_v3 runs only in training
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not name.startswith("AuxLogits")
    ]
    x = torch.rand(
        n_examples, 3, size, size, generator=torch.Generator().manual_seed(0)
    ).to(device)
    calibrate_batchnorm(model, x)
    with torch.no_grad():
        y = model(x).argmax(1)
    parts = (resolve_metric("loss"), resolve_removal("mean"))
    game = ShapleyGame(model, convs, [((x,), y, None)], *parts)
    p = game.n_players
    ends = game.evaluate(torch.stack([torch.ones(p), torch.zeros(p)]))
    tolerance = truncation * abs(float(ends[0] - ends[1]))
    del game
    start = time.perf_counter()

    def stop(stats):
        return time.perf_counter() - start > seconds

    result, wall = timed(
        lambda: NeuronShapley(model, convs).interpret(
            x, target=y, metric="loss", top_k=top_k, n_permutations=10**7,
            truncation_tolerance=tolerance, permutations_per_round=1,
            callback=stop, seed=0,
        )
    )  # fmt: skip
    return dict(
        arch=arch,
        device=str(device),
        players=int(result.values.numel()),
        layers=len(convs),
        eval_examples=n_examples,
        input_size=size,
        top_k=top_k,
        truncation_tolerance=tolerance,
        top_k_settled=result.top_k_settled,
        settled_players=int(result.settled.sum()),
        permutations=result.n_permutations,
        evaluations=result.n_evaluations,
        wall_seconds=wall,
        seconds_limit=seconds,
        engine=result.engine,
    )


def memory_child(size, n_examples, budget, count):
    """(in a fresh process) peak memory growth while ``count`` coalitions of
    a walk are evaluated on resnet18 with every conv filter as a player."""
    torch.manual_seed(0)
    model = make_model("resnet18")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    x = torch.rand(
        n_examples, 3, size, size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        y = model(x).argmax(1)
    parts = (resolve_metric("accuracy"), resolve_removal("mean"))
    game = ShapleyGame(model, convs, [((x,), y, None)], *parts, memory_budget=budget)
    masks = walk_masks(game.n_players, game.n_players // 5, count)
    with PeakGrowth() as memory:
        _, seconds = timed(lambda: game.evaluate(masks))
    return dict(
        budget=game.memory_budget,
        peak_growth=memory.growth,
        coalitions=count,
        seconds=seconds,
        engine=game.engine_name,
    )


class SmallResNet(nn.Module):
    def __init__(self, c=8, blocks=3, n_classes=10):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c, n_classes))  # fmt: skip

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def permutations_child(n_permutations):
    torch.manual_seed(0)
    model = SmallResNet().eval()
    convs = [m for m in model.blocks.modules() if isinstance(m, nn.Conv2d)]
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ns = NeuronShapley(model, convs)
    ns.interpret(x, n_permutations=1)  # warm-up: first-call allocations
    with PeakGrowth() as memory:
        result, seconds = timed(
            lambda: ns.interpret(x, n_permutations=n_permutations)
        )
    return dict(
        permutations=n_permutations,
        players=int(result.values.numel()),
        peak_growth=memory.growth,
        seconds=seconds,
        engine=result.engine,
    )


def in_child(*args):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *map(str, args)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--full", action="store_true", help="also resnet50")
    parser.add_argument("--sections", default="throughput,memory,permutations")
    parser.add_argument("--device", default="cpu", help="throughput and bandit")
    parser.add_argument("--bandit-arch", default="inception_v3")
    parser.add_argument("--bandit-size", type=int, default=299)
    parser.add_argument("--bandit-examples", type=int, default=32)
    parser.add_argument("--bandit-seconds", type=float, default=300.0)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child is not None:
        kind, *rest = args.child
        if kind == "memory":
            size, n, budget, count = (int(v) for v in rest)
            print(json.dumps(memory_child(size, n, budget or None, count)))
        else:
            print(json.dumps(permutations_child(int(rest[0]))))
        return
    quick = args.quick
    sections = set(args.sections.split(","))
    figures = {"quick": quick, "threads": torch.get_num_threads()}
    if "throughput" in sections:
        archs = ["resnet18"] + (["resnet50"] if args.full else [])
        for arch in archs:
            figures[f"throughput_{arch}"] = throughput(
                arch,
                n_examples=16,
                size=32,
                chunk=64 if quick else 512,
                n_baseline=8 if quick else 48,
                repeats=1 if quick else 2,
                device=args.device,
            )
    if "memory" in sections:
        size, n, count = (112, 8, 8) if quick else (224, 64, 32)
        figures["memory_resnet18"] = {
            "default_budget": in_child("memory", size, n, 0, count),
            "max_memory_1GiB": in_child("memory", size, n, 2**30, count),
            "input_size": size,
            "eval_examples": n,
        }
    if "permutations" in sections:
        counts = (1, 3) if quick else (1, 10, 100)
        runs = [in_child("permutations", k) for k in counts]
        figures["memory_vs_permutations"] = runs
    if "bandit" in sections:
        figures["bandit"] = bandit_run(
            args.bandit_arch, args.bandit_size, args.bandit_examples,
            args.bandit_seconds, args.device,
        )  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
