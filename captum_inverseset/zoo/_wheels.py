"""Files inside installed PyPI packages that ship pretrained weights."""

import importlib.util
import os


def package_installed(package: str) -> bool:
    """Whether the import package ``package`` is installed."""
    return importlib.util.find_spec(package) is not None


def package_file(package: str, what: str, install: str, *parts: str) -> str:
    """Path of ``parts`` inside the installed package ``package``.

    Raises:
        ModuleNotFoundError: the package is missing; the message says that
            ``what`` comes from it and gives the ``install`` command.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{what}: not installed; it ships in a PyPI wheel: {install}"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)
