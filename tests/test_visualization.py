"""Image grids: captions in their own band (never over the next row), sharp
nearest-neighbour upscaling; the demo's ablation paragraph reads the numbers."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from captum_inverseset.ablation import AblationCurveResult
from captum_inverseset.demo import describe_ablation
from captum_inverseset.visualization import visualize_image_grid


@pytest.mark.parametrize(
    "n, shape, fig_size, titles",
    [
        (36, (1, 8, 8), (4.5, 4.5), lambda i: str(i % 10)),
        (9, (1, 8, 8), (3.0, 3.0), lambda i: f"{i - 4.123:.2f}"),
        (5, (1, 8, 8), (3.0, 3.0), lambda i: f"q={i / 4:.2f}\n{i * 3.1:.2f}"),
        (25, (3, 16, 16), (5.0, 5.0), lambda i: "in"),
    ],
)
def test_captions_stay_inside_their_band(n, shape, fig_size, titles):
    # images in (0.05, 0.95): the grid's background (NaN, or 1.0 for RGB)
    # tells tile rows from the gaps and caption bands between them
    gen = torch.Generator().manual_seed(0)
    images = 0.05 + 0.9 * torch.rand(n, *shape, generator=gen)
    fig, ax = visualize_image_grid(
        images, titles=[titles(i) for i in range(n)], fig_size=fig_size
    )
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    grid = np.asarray(ax.get_images()[0].get_array(), dtype=float)
    grid = grid.reshape(grid.shape[0], grid.shape[1], -1)
    background = np.isnan(grid).all(-1) | (grid == 1.0).all(-1)
    tile_rows = np.where((~background).any(axis=1))[0]
    to_data = ax.transData.inverted()
    assert len(ax.texts) == n
    for t in ax.texts:
        box = t.get_window_extent(renderer)
        (_, top), (_, bottom) = to_data.transform([[box.x0, box.y1], [box.x1, box.y0]])
        centre = t.get_position()[1]
        tile_bottom = tile_rows[tile_rows <= centre].max() + 0.5
        below = tile_rows[tile_rows > centre]
        next_top = below.min() - 0.5 if below.size else grid.shape[0] - 0.5
        # not into its own tile above, not into the next row below
        assert top >= tile_bottom, (t.get_text(), top, tile_bottom)
        assert bottom <= next_top, (t.get_text(), bottom, next_top)
    plt.close(fig)


def test_small_images_are_upscaled_without_smoothing():
    images = torch.zeros(1, 1, 2, 2)
    images[0, 0, 0, 0] = 1.0
    fig, ax = visualize_image_grid(images, upscale=4)
    shown = np.asarray(ax.get_images()[0].get_array())
    assert shown.shape == (8, 8)
    assert np.all(shown[:4, :4] == 1.0) and np.all(shown[4:, :] == 0.0)
    assert ax.get_images()[0].get_interpolation() == "nearest"
    with pytest.raises(ValueError, match="upscale"):
        visualize_image_grid(images, upscale=0)


def _curve(shapley_at_8, conductance_at_8):
    ks = torch.tensor([0, 4, 8])
    curves = torch.tensor([[0.99, 0.95, shapley_at_8], [0.99, 0.96, conductance_at_8]])
    return AblationCurveResult(
        ks=ks,
        curves=curves,
        random_mean=torch.tensor([0.99, 0.98, 0.96]),
        random_std=torch.tensor([0.0, 0.01, 0.02]),
        names=["Neuron Shapley", "LayerConductance"],
        metric="accuracy",
        removal="mean",
    )


def test_ablation_paragraph_says_who_wins_either_way():
    shapley_wins = describe_ablation(_curve(0.80, 0.85), 8)
    assert "0.800 (Neuron Shapley) and 0.850 (LayerConductance)" in shapley_wins
    assert "Neuron Shapley's ranking hurts most at k=8" in shapley_wins
    assert "0.960 ± 0.020 for 8 random filters" in shapley_wins
    conductance_wins = describe_ablation(_curve(0.89, 0.838), 8)
    assert "LayerConductance's ranking hurts more than Neuron Shapley's" in (
        conductance_wins
    )
    assert "(0.838 against 0.890)" in conductance_wins
    assert "did not single out" in conductance_wins
    # over all k: mean of k = 4 and 8
    assert "lowest for LayerConductance (0.899" in conductance_wins
    near_random = describe_ablation(_curve(0.95, 0.85), 8)
    assert "Neuron Shapley is not clearly more harmful than random" in near_random


def test_ablation_paragraph_reads_the_shapley_uncertainty():
    from captum_inverseset import NeuronShapleyResult

    values = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.0])
    shapley = NeuronShapleyResult(
        values=values.double(),
        standard_errors=torch.full((9,), 0.001, dtype=torch.float64),
        n_permutations=30,
    )
    settled = describe_ablation(_curve(0.8, 0.85), 8, shapley=shapley)
    assert "median standard error of 0.001, smaller than the gap of 0.030" in settled
    assert "settled by the estimates" in settled
    shapley.standard_errors = torch.full((9,), 0.1, dtype=torch.float64)
    unsure = describe_ablation(_curve(0.8, 0.85), 8, shapley=shapley)
    assert "larger than the gap" in unsure and "still uncertain" in unsure
