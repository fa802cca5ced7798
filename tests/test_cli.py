import os

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
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

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
    assert "pwned" not in cap.out


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
