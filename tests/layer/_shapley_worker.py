"""Child process for the checkpoint and distributed NeuronShapley tests.

Usage: python -m tests.layer._shapley_worker OUT [--checkpoint PATH] [--slow]
(and RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment for a
torch.distributed run on gloo).
"""

import argparse
import json
import os
import time

import torch

from captum_inverseset import NeuronShapley

from ._shapley_models import make_mlp

N_PERMUTATIONS = 120


def run(checkpoint=None, slow=False, distributed=False, top_k=None):
    model = make_mlp(hidden=6, seed=4)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 3, generator=g)

    def metric(out, target):
        if slow:
            time.sleep(0.004)
        return -torch.nn.functional.cross_entropy(out, target)

    ns = NeuronShapley(model, model.relu)
    _, stats = ns.attribute(
        x,
        target=model(x).argmax(1),
        metric=metric,
        n_permutations=N_PERMUTATIONS,
        truncation_tolerance=0.05,
        top_k=top_k,
        seed=11,
        coalitions_per_batch=1,
        permutations_per_round=4,
        checkpoint=checkpoint,
        checkpoint_every=4,
        distributed=distributed,
        return_stats=True,
    )
    return stats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--top-k", type=int, default=None)
    args = parser.parse_args()
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    try:
        stats = run(args.checkpoint, args.slow, distributed, args.top_k)
        rank = int(os.environ.get("RANK", "0"))
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
