import pytest

from captum_inverseset.zoo._wheels import package_file, package_installed


def test_missing_wheel_names_what_is_missing_and_the_install_command():
    assert not package_installed("no_such_weights_package")
    with pytest.raises(ModuleNotFoundError, match="the weights: .*pip install x==1"):
        package_file("no_such_weights_package", "the weights", "pip install x==1", "w")


def test_installed_package_file_is_inside_the_package():
    import os

    import torch

    assert package_installed("torch")
    path = package_file("torch", "torch", "pip install torch", "__init__.py")
    assert os.path.samefile(path, torch.__file__)
