import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from captum_inverseset import NeuronShapley

from ._shapley_models import make_mlp
from ._shapley_worker import N_PERMUTATIONS, run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _worker(out, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.layer._shapley_worker", str(out), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _resume_and_compare(tmp_path, ckpt, out):
    proc = _worker(out, "--checkpoint", str(ckpt))
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    resumed = json.loads(out.read_text())
    reference = run()  # uninterrupted, no checkpoint
    assert resumed["n_permutations"] == N_PERMUTATIONS
    torch.testing.assert_close(
        torch.tensor(resumed["values"], dtype=torch.float64),
        reference.values,
        atol=1e-12,
        rtol=0,
    )
    assert resumed["n_evaluations"] == reference.n_evaluations
    # the temporaries of the killed writer are gone
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_sigkill_and_resume_gives_uninterrupted_values(tmp_path):
    ckpt = tmp_path / "ns.ckpt"
    out = tmp_path / "out.json"
    proc = _worker(out, "--checkpoint", str(ckpt), "--slow")
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), proc.stderr.read().decode() if proc.poll() else "timeout"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(ckpt, weights_only=True)
    assert 0 < saved["n_permutations"] < N_PERMUTATIONS
    assert not out.exists()
    _resume_and_compare(tmp_path, ckpt, out)


@pytest.mark.parametrize("when", ["write", "rename"])
def test_sigkill_during_a_checkpoint_write_resumes_from_the_previous_one(
    tmp_path, when
):
    """Killed halfway through writing the temporary file, or after writing
    it and before the rename: the checkpoint on disk is still the previous
    save (4 permutations a save, killed in the third), the temporary is left
    behind, and the resumed run removes it and ends with the uninterrupted
    values."""
    ckpt = tmp_path / "ns.ckpt"
    out = tmp_path / "out.json"
    proc = _worker(
        out, "--checkpoint", str(ckpt), "--kill-at-save", "3", "--kill-when", when
    )
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["n_permutations"] == 8
    leftovers = [p for p in os.listdir(tmp_path) if ".tmp" in p]
    assert len(leftovers) == 1
    _resume_and_compare(tmp_path, ckpt, out)


def test_checkpoint_refuses_other_arguments_and_resumes_in_process(tmp_path):
    ckpt = str(tmp_path / "c.ckpt")
    model = make_mlp()
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    ns = NeuronShapley(model, model.relu)
    a = ns.attribute(
        x,
        n_permutations=8,
        checkpoint=ckpt,
        checkpoint_every=4,
        permutations_per_round=4,
        metric="loss",
    )
    # finished checkpoint: a rerun returns the same values without sampling
    st = ns.interpret(
        x,
        n_permutations=8,
        checkpoint=ckpt,
        checkpoint_every=4,
        permutations_per_round=4,
        metric="loss",
    )
    torch.testing.assert_close(a, st.values.float(), atol=0, rtol=0)
    assert st.n_forward_passes == 1  # only V(all), V(none)
    with pytest.raises(ValueError, match="different arguments.*seed"):
        ns.attribute(
            x,
            n_permutations=8,
            checkpoint=ckpt,
            seed=1,
            permutations_per_round=4,
            metric="loss",
        )
    with open(ckpt + "x", "wb") as fh:
        fh.write(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        ns.attribute(x, n_permutations=8, checkpoint=ckpt + "x")
