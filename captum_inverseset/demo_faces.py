"""The demo's faces section: E-GBAS on the pretrained face DCGAN.

:func:`add_faces_section` adds it to the demo's
:class:`~captum_inverseset.report.Report` when ``gan-face-generate`` (the
generator's weights) is installed, and a note saying how to install it
otherwise.
"""

import time
from typing import Any, Dict, Optional

import torch
from torch import nn

__all__ = ["add_faces_section"]

_INSTALL = "pip install --no-deps gan-face-generate==1.1.1"


def _figure(result, baseline, layer: str):
    import matplotlib.pyplot as plt

    from .visualization import visualize_image_grid

    fig, axes = plt.subplots(
        1, 4, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 2, 2, 2]}
    )
    visualize_image_grid(result.query_output[None], plt_fig_axis=(fig, axes[0]))
    axes[0].set_title(f"query ({layer})")
    baseline.plot(title="epsilon-ball", plt_fig_axis=(fig, axes[1]))
    result.plot(title="E-GBAS", plt_fig_axis=(fig, axes[2]))
    result.plot(kind="difference", title="E-GBAS", plt_fig_axis=(fig, axes[3]))
    axes[3].title.set_fontsize(8)
    fig.tight_layout()
    return fig


def add_faces_section(
    report: Any,
    device: Optional[torch.device] = None,
    seed: int = 0,
    quick: bool = False,
    show_progress: bool = False,
    generator: Optional[nn.Module] = None,
) -> Optional[Dict[str, Any]]:
    r"""Add "E-GBAS on a pretrained face generator" to ``report``.

    For each layer (``main.1``; also ``main.4`` unless ``quick``): the
    supporting boundary set of one prior latent with the defaults, the
    epsilon-ball radius keeping 90% of its samples in the region, then E-GBAS
    (that radius as its step) and the epsilon-ball samples, drawn as the
    query, both sample grids and E-GBAS's difference from the query, with a
    table of acceptance, tree depth, spreads and seconds. The figures are also
    stored with ``report.add_results("faces", ...)``.

    Args:
        report (Report): the demo's report (``section``, ``add_figure``,
            ``add_table``, ``add_results``).
        device (torch.device, optional): where the generator runs.
            Default: CPU
        seed (int, optional): seed of the query and of every random step.
            Default: 0
        quick (bool, optional): one layer, 12 samples, 30 mask steps.
            Default: False
        show_progress (bool, optional): progress bars. Default: False
        generator (nn.Module, optional): a face DCGAN to use instead of the
            pretrained one (tests pass a small random one). Default: None

    Returns:
        dict or None: the figures, keyed by layer; None when the pretrained
        weights are not installed (the section then says how to get them).
    """
    from . import EGBAS
    from .zoo import face_dcgan, face_dcgan_available

    title = "E-GBAS on a pretrained face generator"
    if generator is None:
        if not face_dcgan_available():
            report.section(
                title,
                "Skipped: the face DCGAN's weights come from the PyPI package "
                f"gan-face-generate ({_INSTALL}).",
            )
            return None
        generator = face_dcgan()
    device = device or torch.device("cpu")
    generator = generator.to(device).eval()
    layers = ("main.1",) if quick else ("main.1", "main.4")
    n_samples = 12 if quick else 24
    mask_kwargs = {"n_steps": 30} if quick else {}
    sec = report.section(
        title,
        "The DCGAN of gan-face-generate (z in R^100 to a 64x64 face). For one "
        "query latent and each layer: E-GBAS samples of the query's generative "
        "region and epsilon-ball samples whose radius keeps 90% in the region; "
        "the last panel shows each E-GBAS sample minus the query (red brighter, "
        "blue darker), since samples of a region look alike at a glance.",
    )
    z0 = generator.random_codes(
        1, generator=torch.Generator().manual_seed(seed), device=device
    )
    figures: Dict[str, Any] = {}
    for layer in layers:
        egbas = EGBAS(generator, layer)
        start = time.perf_counter()
        mask = egbas.supporting_boundaries(
            z0, seed=seed, show_progress=show_progress, **mask_kwargs
        )
        epsilon = egbas.calibrate_epsilon(z0, 0.9, mask=mask, n_samples=256, seed=seed)
        result = egbas.sample(
            z0,
            n_samples,
            mask=mask,
            step_size=epsilon,
            seed=seed,
            show_progress=show_progress,
            batch_size=6,  # small passes: a deeper tree for a few samples
        )
        seconds = time.perf_counter() - start
        baseline = egbas.epsilon_sample(
            z0, n_samples, epsilon=epsilon, mask=mask, seed=seed
        )
        report.add_figure(
            sec,
            _figure(result, baseline, layer),
            f"faces_{layer.replace('.', '_')}",
            f"Layer {layer}: query, epsilon-ball samples, E-GBAS samples, "
            "E-GBAS minus the query.",
        )
        row = {
            "layer": layer,
            "mask_size": result.mask_size,
            "layer_units": int(mask.numel()),
            "epsilon": round(epsilon, 4),
            "egbas_in_region": result.acceptance_rate,
            "epsilon_in_region": baseline.acceptance_rate,
            "tree_depth": result.tree_depth,
            "latent_spread_ratio": round(
                result.mean_pairwise_distance() / baseline.mean_pairwise_distance(), 3
            ),
            "output_spread_ratio": round(
                result.mean_pairwise_distance("outputs")
                / baseline.mean_pairwise_distance("outputs"),
                3,
            ),
            "seconds": round(seconds, 2),
        }
        report.add_table(sec, row)
        figures[layer] = row
    report.add_results("faces", figures)
    return figures
