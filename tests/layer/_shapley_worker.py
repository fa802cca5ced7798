"""Child process for the checkpoint and distributed NeuronShapley tests.

Usage::

    python -m tests.layer._shapley_worker OUT [--checkpoint PATH] [--slow]
        [--top-k K] [--seed S] [--seed-per-rank] [--kill-at-save N --kill-when W]
        [--residual]

(and RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment for a
torch.distributed run on gloo). ``PATH`` may hold ``{rank}`` (a node-local
checkpoint per rank). ``--kill-at-save N`` makes the process SIGKILL itself
during its ``N``-th checkpoint save: ``--kill-when write`` halfway through
writing the temporary file, ``--kill-when rename`` after writing it, before
the rename. ``--residual`` runs :func:`run_residual` instead (a residual
CNN on the graph engine, every conv filter a player, each permutation on its
own random subset of the examples). A run that raises writes the error to
``OUT.rank<R>.err``.
"""

import argparse
import io
import json
import os
import signal
import time

import torch

from captum_inverseset import NeuronShapley

from ._shapley_models import make_mlp

N_PERMUTATIONS = 120


def run(checkpoint=None, slow=False, distributed=False, top_k=None, seed=11):
    model = make_mlp(hidden=6, seed=4)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 3, generator=g)

    def metric(out, target):
        if slow:
            time.sleep(0.004)
        return -torch.nn.functional.cross_entropy(out, target)

    ns = NeuronShapley(model, model.relu)
    return ns.interpret(
        x,
        target=model(x).argmax(1),
        metric=metric,
        n_permutations=N_PERMUTATIONS,
        truncation_tolerance=0.05,
        top_k=top_k,
        seed=seed,
        coalitions_per_batch=1,
        permutations_per_round=4,
        checkpoint=checkpoint,
        checkpoint_every=4,
        checkpoint_key="negative cross-entropy",
        distributed=distributed,
    )


def run_residual(distributed=False, top_k=None, seed=11):
    """Every conv filter of a small torchvision-style residual network (stem,
    two BasicBlocks, 20 players) on the graph engine, loss metric, each
    permutation on a fresh random subset of 8 of the 24 examples."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        BasicBlock(4, 4), BasicBlock(4, 4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()  # fmt: skip
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(24, 2, 6, 6, generator=torch.Generator().manual_seed(5))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return NeuronShapley(model, convs).interpret(
        x,
        target=model(x).argmax(1),
        metric="loss",
        n_permutations=12,
        examples_per_permutation=8,
        engine="graph",
        top_k=top_k,
        seed=seed,
        permutations_per_round=2,
        distributed=distributed,
    )


def _kill_during_save(at_save: int, when: str) -> None:
    """Patch the writer so that the ``at_save``-th checkpoint save kills this
    process with SIGKILL, mid-write or between the write and the rename."""
    saves = {"n": 0}
    real_save, real_replace = torch.save, os.replace

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if when == "write" and saves["n"] == at_save and hasattr(f, "write"):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            die()
        return real_save(obj, f, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if when == "rename" and saves["n"] == at_save:
            die()
        return real_replace(src, dst, *args, **kwargs)

    torch.save = save
    os.replace = replace


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--seed-per-rank", action="store_true")
    parser.add_argument("--kill-at-save", type=int, default=None)
    parser.add_argument("--kill-when", choices=["write", "rename"], default="rename")
    parser.add_argument("--residual", action="store_true")
    args = parser.parse_args()
    distributed = "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    if args.kill_at_save is not None:
        _kill_during_save(args.kill_at_save, args.kill_when)
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    checkpoint = args.checkpoint
    if checkpoint is not None:
        checkpoint = checkpoint.format(rank=rank)
    seed = args.seed + (rank if args.seed_per_rank else 0)
    try:
        try:
            if args.residual:
                stats = run_residual(distributed, args.top_k, seed)
            else:
                stats = run(checkpoint, args.slow, distributed, args.top_k, seed)
        except ValueError as err:
            with open(f"{args.out}.rank{rank}.err", "w") as fh:
                fh.write(str(err))
            raise
        if rank == 0:
            with open(args.out, "w") as fh:
                json.dump(
                    {
                        "values": stats.values.tolist(),
                        "counts": stats.counts.tolist(),
                        "n_evaluations": stats.n_evaluations,
                        "n_permutations": stats.n_permutations,
                    },
                    fh,
                )
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
