import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from ._shapley_worker import run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")
def test_two_gloo_ranks_equal_single_process(tmp_path):
    # top_k on: the bandit decisions are made on the all-reduced statistics
    top_k = 2
    out = tmp_path / "out.json"
    port = _free_port()
    procs = []
    extra = [] if top_k is None else ["--top-k", str(top_k)]
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
                [sys.executable, "-m", "tests.layer._shapley_worker", str(out)] + extra,
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    got = json.loads(out.read_text())
    single = run(top_k=top_k)
    torch.testing.assert_close(
        torch.tensor(got["values"], dtype=torch.float64),
        single.values,
        atol=1e-12,
        rtol=0,
    )
    assert got["counts"] == single.counts.tolist()
    assert got["n_evaluations"] == single.n_evaluations
    assert got["n_permutations"] == single.n_permutations
