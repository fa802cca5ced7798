import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from ._shapley_worker import run, run_residual

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(out, extra):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            PYTHONPATH=REPO,
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.layer._shapley_worker", str(out), *extra],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    return json.loads(out.read_text())


def _assert_same(got, single):
    torch.testing.assert_close(
        torch.tensor(got["values"], dtype=torch.float64),
        single.values,
        atol=1e-12,
        rtol=0,
    )
    assert got["counts"] == single.counts.tolist()
    assert got["n_evaluations"] == single.n_evaluations
    assert got["n_permutations"] == single.n_permutations


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")
def test_two_gloo_ranks_equal_single_process(tmp_path):
    # top_k on: the bandit decisions are made on the all-reduced statistics
    got = _two_ranks(tmp_path / "out.json", ["--top-k", "2"])
    _assert_same(got, run(top_k=2))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")
def test_two_gloo_ranks_on_a_residual_net_with_data_subsets(tmp_path):
    """The paper's protocol across ranks: every conv filter of a residual
    network on the graph engine, each permutation on its own random subset
    of the examples (drawn from the permutation's seed, whichever rank walks
    it), the bandit on the all-reduced statistics: equal to one process."""
    got = _two_ranks(tmp_path / "out.json", ["--residual", "--top-k", "3"])
    single = run_residual(top_k=3)
    assert single.engine == "graph" and single.values.numel() == 20
    _assert_same(got, single)
