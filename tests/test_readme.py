"""The README's quick start runs as written."""

import os
import re

import matplotlib

matplotlib.use("Agg")

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def test_quick_start_runs(monkeypatch):
    import matplotlib.pyplot as plt

    text = open(README, encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python block"
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["values"].shape == (32,)
    assert len(namespace["result"].top_players(5)) == 5
    assert namespace["samples"].inputs.shape[0] == 32
    assert bool(namespace["region"].in_region.all())
    assert namespace["resnet_values"].shape == (512,)
    plt.close("all")
