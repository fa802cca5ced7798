import json
import os
import sys

import pytest
import torch

from captum_inverseset.cli import build_parser, main


def _run(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr()


def test_help_documents_every_subcommand_and_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "shapley", "inverse-set", "egbas"):
        assert cmd in out
    # --model runs user code: the help says so, as torch.hub's docs do
    assert "runs that code" in " ".join(out.split())
    with pytest.raises(SystemExit):
        main(["shapley", "--help"])
    assert "runs that code" in " ".join(capsys.readouterr().out.split())
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    for name, p in sub.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"


def test_bad_model_path_is_a_user_error(capsys):
    code, cap = _run(
        capsys, ["shapley", "--model", "no_such_pkg.mod:f", "--layer", "x", "--quiet"]
    )
    assert code == 2
    assert "cannot import module 'no_such_pkg.mod'" in cap.err
    assert "Traceback" not in cap.err


def test_model_without_colon(capsys):
    code, cap = _run(capsys, ["egbas", "--generator", "torch.nn", "--layer", "x"])
    assert code == 2 and "package.module:factory" in cap.err


def test_bad_layer_name_is_a_user_error(capsys):
    code, cap = _run(
        capsys,
        [
            "shapley",
            "--model",
            "captum_inverseset.zoo:digits_classifier",
            "--layer",
            "conv9",
            "--quiet",
        ],
    )
    assert code == 2
    assert "no layer named 'conv9'" in cap.err


def test_pickled_weights_file_is_refused(capsys, tmp_path):
    # capsys cannot see a subprocess's output: the side effect is the evidence
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    torch.save({"conv1.weight": Evil()}, bad)
    code, cap = _run(
        capsys,
        [
            "shapley",
            "--model",
            "captum_inverseset.zoo:digits_classifier",
            "--weights",
            str(bad),
            "--layer",
            "conv1",
        ],
    )
    assert code == 2
    assert "not a plain tensor checkpoint" in cap.err
    assert not marker.exists()
    # the payload is live: unpickling it without weights_only runs the command
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_weights_that_do_not_fit(capsys, tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"weight": torch.zeros(2, 2)}, path)
    code, cap = _run(
        capsys,
        [
            "shapley",
            "--model",
            "captum_inverseset.zoo:digits_classifier",
            "--weights",
            str(path),
            "--layer",
            "conv1",
        ],
    )
    assert code == 2 and "does not fit the model" in cap.err


def test_missing_weights_file(capsys):
    code, cap = _run(
        capsys,
        [
            "egbas",
            "--generator",
            "captum_inverseset.zoo:digits_generator",
            "--weights",
            "/nonexistent.pt",
            "--layer",
            "fc1",
        ],
    )
    assert code == 2 and "no such file" in cap.err


def test_shapley_inverse_set_egbas_commands_write_png_and_json(capsys, tmp_path):
    import json

    zoo = "captum_inverseset.zoo"
    runs = {
        "shapley": [
            "shapley",
            "--model",
            f"{zoo}:digits_classifier",
            "--layer",
            "conv1",
            "--limit",
            "64",
            "--n-permutations",
            "2",
        ],
        "inverse_set": [
            "inverse-set",
            "--model",
            f"{zoo}:digits_classifier",
            "--layer",
            "fc2",
            "--neuron",
            "3",
            "--range",
            "5",
            "15",
            "--generator",
            f"{zoo}:digits_generator",
            "--encoder",
            f"{zoo}:digits_encoder",
            "--n-samples",
            "8",
            "--batch-size",
            "4",
        ],
        "egbas": [
            "egbas",
            "--generator",
            f"{zoo}:digits_generator",
            "--layer",
            "fc1",
            "--n-samples",
            "8",
        ],
    }
    for name, argv in runs.items():
        out = tmp_path / name
        code = main([*argv, "--out", str(out), "--quiet", "--device", "cpu"])
        cap = capsys.readouterr()
        assert code == 0, cap.err
        payload = json.loads((out / f"{name}.json").read_text())
        assert (out / f"{name}.png").stat().st_size > 1000
        assert json.loads(cap.out.strip().splitlines()[-1])
        if name == "shapley":
            assert len(payload["values"][0]) == 16
        if name == "inverse_set":
            assert payload["n_samples"] == 8
        if name == "egbas":
            assert payload["in_region_fraction"] == 1.0


def test_demo_quick_writes_self_contained_report(tmp_path, capsys):
    import json

    code = main(["demo", "--quick", "--quiet", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    html = (tmp_path / "index.html").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert html.count("data:image/png;base64,") >= 6
    assert "http://" not in html and "https://" not in html
    for key in ("models", "neuron_shapley", "inverse_set", "egbas"):
        assert key in results
    assert results["egbas"]["egbas_in_region"] == 1.0
    assert results["inverse_set"]["feasible_fraction"] > 0.5
    # the report says in words what the ablation shows, from its numbers
    finding = results["neuron_shapley"]["ablation"]
    assert 'class="finding"' in html and "Removing the 8 conv3 filters" in finding
    shapley = results["neuron_shapley"]["acc_after_top8_removed[Neuron Shapley]"]
    assert f"{shapley:.3f} (Neuron Shapley)" in finding


def _write_module(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(body)


def test_model_factory_is_found_in_the_working_directory(tmp_path, monkeypatch, capsys):
    # a console script does not put the working directory on sys.path
    name = "cli_user_models_cwd"
    _write_module(
        tmp_path,
        name,
        "from captum_inverseset.zoo import digits_classifier\n"
        "def factory():\n    return digits_classifier()\n",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))]
    )
    monkeypatch.delitem(sys.modules, name, raising=False)
    argv = ["shapley", "--model", f"{name}:factory", "--layer", "conv1"]
    argv += ["--limit", "16", "--n-permutations", "1", "--quiet", "--out", "o"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "shapley.json").exists()


def test_out_folder_needs_overwrite_then_is_replaced(tmp_path, capsys):
    argv = ["egbas", "--generator", "captum_inverseset.zoo:digits_generator"]
    argv += ["--layer", "fc1", "--n-samples", "4", "--quiet", "--device", "cpu"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    first = (tmp_path / "egbas.json").stat().st_mtime_ns
    assert main([*argv, "--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "egbas.json").stat().st_mtime_ns == first
    assert main([*argv, "--seed", "1", "--overwrite"]) == 0
    assert (tmp_path / "egbas.json").stat().st_mtime_ns != first


def test_inverse_set_latent_dim_wraps_the_generator(tmp_path, capsys):
    # the generator has no latent_dim attribute: --latent-dim supplies it
    name = "cli_user_models_latent"
    _write_module(
        tmp_path,
        name,
        "import torch\n"
        "from captum_inverseset.zoo import digits_generator\n"
        "class Bare(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.inner = digits_generator()\n"
        "    def forward(self, z):\n"
        "        return self.inner(z)\n",
    )
    sys.path.insert(0, str(tmp_path))
    try:
        base = ["inverse-set", "--model", "captum_inverseset.zoo:digits_classifier"]
        base += ["--layer", "fc2", "--neuron", "3", "--range", "5", "15"]
        base += ["--generator", f"{name}:Bare", "--n-samples", "2"]
        base += ["--batch-size", "2", "--quiet", "--device", "cpu"]
        assert main([*base, "--out", str(tmp_path / "a")]) == 2
        assert "--latent-dim" in capsys.readouterr().err
        code = main([*base, "--latent-dim", "8", "--out", str(tmp_path / "b")])
        assert code == 0, capsys.readouterr().err
        assert (
            json.loads((tmp_path / "b" / "inverse_set.json").read_text())["n_samples"]
            == 2
        )
    finally:
        sys.path.remove(str(tmp_path))


def test_errors_of_the_package_and_of_the_users_model_keep_their_traceback(
    tmp_path, monkeypatch
):
    # a bug in our own code is not a user error: it propagates
    import captum_inverseset._cli_support as support

    def broken(*args, **kwargs):
        raise KeyError("bug")

    argv = ["egbas", "--generator", "captum_inverseset.zoo:digits_generator"]
    argv += ["--layer", "fc1", "--n-samples", "2", "--quiet", "--device", "cpu"]
    monkeypatch.setattr(support, "write_outputs", broken)
    with pytest.raises(KeyError, match="bug"):
        main([*argv, "--out", str(tmp_path / "a")])
    monkeypatch.undo()
    # a ValueError raised inside the user's model (after the probe on two
    # examples) is not relabelled as an option error, even when its message
    # starts like one of our argument names
    name = "cli_user_models_raising"
    _write_module(
        tmp_path,
        name,
        "import torch\n"
        "from captum_inverseset.zoo import digits_classifier\n"
        "class Picky(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = digits_classifier()\n"
        "        self.conv1 = self.net.conv1\n"
        "    def forward(self, x):\n"
        "        if x.shape[0] > 2:\n"
        "            raise ValueError('inputs: this model takes 2 at a time')\n"
        "        return self.net(x)\n",
    )
    sys.path.insert(0, str(tmp_path))
    try:
        argv = ["shapley", "--model", f"{name}:Picky", "--layer", "net.conv1"]
        argv += ["--limit", "16", "--n-permutations", "1", "--quiet"]
        with pytest.raises(ValueError, match="2 at a time"):
            main([*argv, "--out", str(tmp_path / "b"), "--device", "cpu"])
    finally:
        sys.path.remove(str(tmp_path))


def test_neuron_selectors_with_slices():
    from captum_inverseset._cli_support import CLIError, parse_selector

    full = slice(None)
    assert parse_selector("3") == 3
    assert parse_selector("3,1,1") == (3, 1, 1)
    assert parse_selector("5,:,:") == (5, full, full)
    assert parse_selector("5,0:2,1:") == (5, slice(0, 2), slice(1, None))
    assert parse_selector(":") == (full,)
    for bad in ("5,a", "1:2:0", "-1", "1:2:3:4"):
        with pytest.raises(CLIError, match="--neuron"):
            parse_selector(bad)


def _digits_file(tmp_path, n=40, masks=False):
    from captum_inverseset.zoo import load_digits_dataset

    data = load_digits_dataset()
    payload = {"inputs": data.test_inputs[:n], "labels": data.test_labels[:n]}
    if masks:
        ink = payload["inputs"][:, 0] > 0.5
        payload["masks"] = torch.stack([ink, ~ink], 1)
        payload["concept_names"] = ["ink", "background"]
    path = tmp_path / "data.pt"
    torch.save(payload, path)
    return str(path), payload


def test_profile_maximize_dissect_commands_equal_the_library(tmp_path, capsys):
    from captum_inverseset import (
        NetworkDissection,
        NeuronActivationMaximization,
        NeuronProfile,
    )
    from captum_inverseset.zoo import digits_classifier

    model = digits_classifier()
    data, payload = _digits_file(tmp_path, masks=True)
    zoo = ["--model", "captum_inverseset.zoo:digits_classifier"]
    common = ["--quiet", "--device", "cpu"]
    code = main(
        ["profile", *zoo, "--layer", "relu3", "--neuron", "5,:,:", "--data", data]
        + ["--k", "4", "--out", str(tmp_path / "p"), *common]
    )
    assert code == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "p" / "profile.json").read_text())
    full = slice(None)
    want = NeuronProfile(model, model.relu3).interpret(
        payload["inputs"], (5, full, full), target=payload["labels"], k=4
    )
    assert got["top_indices"] == want.top_indices.tolist()
    assert got["class_means"] == pytest.approx(want.class_means.tolist())
    assert (tmp_path / "p" / "profile.png").stat().st_size > 1000

    code = main(
        ["maximize", *zoo, "--layer", "fc2", "--neuron", "3", "--input-shape"]
        + ["1,8,8", "--n-steps", "20", "--n-inputs", "2", "--transforms"]
        + ["--out", str(tmp_path / "m"), *common]
    )
    assert code == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "m" / "maximize.json").read_text())
    from captum_inverseset.param import standard_transforms

    want = NeuronActivationMaximization(model, model.fc2).interpret(
        3,
        input_shape=(1, 8, 8),
        n_steps=20,
        n_inputs=2,
        transforms=standard_transforms(8),
    )
    assert got["final_objective"] == pytest.approx(want.final_objective.tolist())

    code = main(
        ["dissect", *zoo, "--layer", "relu2", "--data", data, "--quantile", "0.9"]
        + ["--top", "3", "--out", str(tmp_path / "d"), *common]
    )
    assert code == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "d" / "dissection.json").read_text())
    want = NetworkDissection(model, model.relu2).interpret(
        payload["inputs"], payload["masks"], ["ink", "background"], quantile=0.9
    )
    units, _ = want.rank_units("ink", 3)
    assert got["best_units"]["ink"]["units"] == units.tolist()


def test_normalize_puts_the_normalisation_in_front_of_the_model(tmp_path, capsys):
    from captum_inverseset import NeuronProfile
    from captum_inverseset.zoo import digits_classifier

    model = digits_classifier()
    data, payload = _digits_file(tmp_path)
    code = main(
        ["profile", "--model", "captum_inverseset.zoo:digits_classifier"]
        + ["--layer", "fc2", "--neuron", "3", "--data", data, "--k", "5"]
        + ["--normalize", "0.25", "0.5", "--quiet", "--out", str(tmp_path / "o")]
    )
    assert code == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "o" / "profile.json").read_text())
    # the data stay in [0, 1]; the model sees (x - 0.25) / 0.5
    with torch.no_grad():
        logits = model((payload["inputs"] - 0.25) / 0.5)[:, 3]
    assert got["top_activations"] == pytest.approx(
        torch.sort(logits, descending=True).values[:5].tolist(), rel=1e-5
    )
    plain = NeuronProfile(model, model.fc2).interpret(payload["inputs"], 3, k=5)
    assert got["top_activations"] != pytest.approx(plain.top_activations.tolist())
