"""Plots in the style of ``captum.attr.visualization``.

Functions take an optional ``plt_fig_axis=(fig, ax)`` to draw into an existing
axis and return ``(fig, ax)``, like ``visualize_image_attr``.
"""

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["to_hwc", "visualize_image_grid"]

# Tiles are upscaled (nearest neighbour) to at least this many pixels per
# side, so that gaps and caption bands can be a fraction of a tile.
_MIN_TILE = 32
# Caption font sizes (points) are fitted to the band under each tile and
# clipped to this range.
_FONT_RANGE = (6.0, 12.0)


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


def _points_per_pixel(fig, ax, grid_w: int, grid_h: int) -> float:
    """Size of one grid pixel in points, as the axis shows it (equal aspect)."""
    box = ax.get_position()
    fig_w, fig_h = fig.get_size_inches()
    return min(box.width * fig_w * 72 / grid_w, box.height * fig_h * 72 / grid_h)


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
    upscale: Optional[int] = None,
    title_color: str = "black",
    fontsize: Optional[float] = None,
):
    r"""Draw a batch of images ``(N, C, H, W)`` as one tiled grid.

    Small images are enlarged by nearest-neighbour upscaling (each pixel
    stays a sharp square), and each caption gets its own band under its
    tile, in a font fitted to that band, so captions never overlap the next
    row of images.

    Args:
        images (Tensor): ``(N, C, H, W)`` (or ``(N, H, W)``) images.
        titles (sequence of str, optional): one caption per image, drawn
            under its tile. Default: None
        ncols (int, optional): tiles per row. Default: ``ceil(sqrt(N))``
        cmap (str, optional): colormap for one-channel images; ``"gray_r"``
            draws dark ink on a light background. Default: "gray"
        vmin, vmax (float, optional): colour range. Default: 0.0, 1.0
        title (str, optional): axis title. Default: None
        plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
            Default: None (a new figure)
        fig_size (tuple, optional): size of a new figure. Default: (6, 6)
        upscale (int, optional): integer nearest-neighbour enlargement of each
            image. Default: None (enough for tiles of at least 32 pixels)
        title_color (str, optional): caption colour. Default: "black"
        fontsize (float, optional): caption size in points. Default: None
            (fitted to the caption band and the tile width, 6 to 12 points)

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
    if upscale is None:
        upscale = max(1, math.ceil(_MIN_TILE / max(h, w)))
    elif isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1:
        raise ValueError(f"upscale must be a positive int, got {upscale!r}")
    arr = images.detach().cpu().float()
    if upscale > 1:
        arr = arr.repeat_interleave(upscale, 2).repeat_interleave(upscale, 3)
    th, tw = h * upscale, w * upscale
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    pad = max(1, th // 16)
    texts = None if titles is None else [str(t) for t in titles[:n]]
    lines = 0 if texts is None else max((t.count("\n") + 1 for t in texts), default=1)
    fig, ax = figure_axis(plt_fig_axis, fig_size)
    band = int(round(0.42 * th * lines))
    if texts is not None and fontsize is None:
        # Make the caption band tall enough for the smallest readable font at
        # the size the axis will show the grid (a taller grid is shown
        # smaller, so fit twice).
        for _ in range(2):
            ppp = _points_per_pixel(
                fig, ax, ncols * (tw + pad), nrows * (th + band + pad)
            )
            band = max(band, math.ceil(_FONT_RANGE[0] * lines / (0.75 * ppp)))
    row_h, col_w = th + band + pad, tw + pad
    grid = np.full(
        (nrows * row_h - pad, ncols * col_w - pad, c),
        np.nan if c == 1 else 1.0,
        dtype=np.float32,
    )
    arr = arr.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[r * row_h : r * row_h + th, col * col_w : col * col_w + tw] = arr[i]
    shown = grid[..., 0] if c == 1 else np.clip(grid, 0, 1)
    ax.imshow(
        shown,
        cmap=cmap if c == 1 else None,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    if texts is not None:
        size = fontsize
        if size is None:
            ppp = _points_per_pixel(fig, ax, grid.shape[1], grid.shape[0])
            longest = max(1, *(len(ln) for t in texts for ln in t.split("\n")))
            # the lines fill ~75% of the band's height; a line the tile width
            size = min(0.75 * band * ppp / lines, col_w * ppp / (0.6 * longest))
            size = float(np.clip(size, *_FONT_RANGE))
        for i, t in enumerate(texts):
            r, col = divmod(i, ncols)
            ax.text(
                col * col_w + tw / 2,
                r * row_h + th + band / 2,
                t,
                ha="center",
                va="center",
                fontsize=size,
                color=title_color,
                linespacing=1.0,
            )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return fig, ax
