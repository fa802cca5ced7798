"""Renamed arguments and moved verbs keep working, with a warning.

The public API follows Captum's vocabulary (``target``,
``attribute_to_neuron_input`` on neuron methods, ``attribute_to_layer_input``
on layer methods, ``activation_range`` for a band). Older spellings that were
documented stay accepted for a while: :func:`renamed_kwargs` maps them to the
new name and issues a ``FutureWarning`` that names both.
"""

import functools
import warnings
from typing import Callable, Dict

__all__ = ["deprecated_alias", "renamed_kwargs", "warn_deprecated"]


def warn_deprecated(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, FutureWarning, stacklevel=stacklevel)


def renamed_kwargs(**renames: str) -> Callable:
    """Decorator: ``@renamed_kwargs(labels="target")`` accepts ``labels=`` as
    a deprecated spelling of ``target=`` (passing both is a ``TypeError``)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__name__}() got both {old!r} and {new!r}; "
                            f"{old!r} is the old name of {new!r}"
                        )
                    warn_deprecated(
                        f"{fn.__name__}(): {old}= is deprecated, use {new}=",
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        wrapper.renamed_kwargs: Dict[str, str] = dict(renames)  # type: ignore
        return wrapper

    return decorate


def deprecated_alias(new_name: str) -> Callable:
    """Decorator for a method kept under an old name: calls ``new_name`` on
    the instance after a ``FutureWarning``."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            warn_deprecated(
                f"{type(self).__name__}.{fn.__name__}() is deprecated, use "
                f".{new_name}()"
            )
            return getattr(self, new_name)(*args, **kwargs)

        return wrapper

    return decorate
