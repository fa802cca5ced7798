"""Plots in the style of ``captum.attr.visualization``.

Functions take an optional ``plt_fig_axis=(fig, ax)`` to draw into an existing
axis and return ``(fig, ax)``, like ``visualize_image_attr``.
"""

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["to_hwc", "visualize_image_grid"]


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor -> ``(H, W, C)`` array (``(H, W)`` for 1 channel)."""
    arr = image.detach().cpu().float()
    if arr.dim() == 3:
        arr = arr.permute(1, 2, 0)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    return arr.numpy()


def figure_axis(plt_fig_axis: Optional[tuple], fig_size: Tuple[float, float]):
    """The ``(fig, ax)`` a plot method draws into: the caller's, or a new one
    of size ``fig_size``."""
    if plt_fig_axis is not None:
        return plt_fig_axis
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=fig_size)


def visualize_image_grid(
    images: torch.Tensor,
    titles: Optional[Sequence[str]] = None,
    ncols: Optional[int] = None,
    cmap: str = "gray",
    vmin: Optional[float] = 0.0,
    vmax: Optional[float] = 1.0,
    title: Optional[str] = None,
    plt_fig_axis: Optional[Tuple] = None,
    fig_size: Tuple[float, float] = (6, 6),
):
    r"""Draw a batch of images ``(N, C, H, W)`` as one tiled grid.

    Args:
        images (Tensor): ``(N, C, H, W)`` (or ``(N, H, W)``) images.
        titles (sequence of str, optional): one caption per image, drawn
            under its tile. Default: None
        ncols (int, optional): tiles per row. Default: ``ceil(sqrt(N))``
        cmap (str, optional): colormap for one-channel images. Default: "gray"
        vmin, vmax (float, optional): colour range. Default: 0.0, 1.0
        title (str, optional): axis title. Default: None
        plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
            Default: None (a new figure)
        fig_size (tuple, optional): size of a new figure. Default: (6, 6)

    Returns:
        ``(fig, ax)``
    """
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("images is empty")
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    pad = 1
    grid = np.full(
        (nrows * (h + pad) - pad, ncols * (w + pad) - pad, c),
        np.nan if c == 1 else 1.0,
        dtype=np.float32,
    )
    arr = images.detach().cpu().float().permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[
            r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w
        ] = arr[i]
    fig, ax = figure_axis(plt_fig_axis, fig_size)
    shown = grid[..., 0] if c == 1 else np.clip(grid, 0, 1)
    ax.imshow(shown, cmap=cmap if c == 1 else None, vmin=vmin, vmax=vmax)
    if titles is not None:
        for i, t in enumerate(titles[:n]):
            r, col = divmod(i, ncols)
            ax.text(
                col * (w + pad) + w / 2,
                r * (h + pad) + h - 0.5,
                str(t),
                ha="center",
                va="top",
                fontsize=7,
                color="tab:red",
            )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig, ax
