"""Progress bars in Captum's style (``show_progress=``)."""

from typing import Optional

from tqdm.auto import tqdm


class _NullProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(total: Optional[int], show_progress: bool, desc: str):
    """A ``tqdm`` bar when ``show_progress`` is True, else a silent stand-in.

    Use as a context manager so the bar is closed also on exceptions.
    """
    if show_progress:
        return tqdm(total=total, desc=desc, leave=False)
    return _NullProgress()
