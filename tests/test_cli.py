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
