"""
Faces: E-GBAS and inverse sets on a pretrained face DCGAN
=========================================================

The pretrained face DCGAN of the PyPI package ``gan-face-generate``
(:func:`~captum_inverseset.zoo.face_dcgan`: a latent ``z`` in
:math:`\\mathbb{R}^{100}` to a 64x64 face) is a generator nobody here trained.
We ask it two questions:

1. **E-GBAS** (Jeon, Jeong & Choi, AAAI 2020), in the style of the paper's
   figures: which faces does a layer consider "the same" as a query face?
   At the first block (``main.1``, 512x4x4 = 8192 units) and the second
   (``main.4``, 256x8x8 = 16384 units).
2. **Inverse sets** (Hada & Carreira-Perpinan) of two of the generator's own
   units, and of their intersection: which latents make both units fire in
   a band, and what do their faces share?

This page needs ``pip install --no-deps gan-face-generate==1.1.1`` (the
weights ship inside that wheel); without it every step below is skipped.

Why the generator's own units for the inverse set: no pretrained face or
image network ships weights in an installed package here (the face DCGAN's
package ships only its generator, not its discriminator), and a torchvision
model with random weights is not a real network. A GAN's hidden units are
real, trained units whose meaning is worth asking about (GAN Dissection, Bau
et al. 2019, finds units that draw windows, trees or doors); the inverse set
answers it with samples instead of top activations.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

from captum_inverseset import EGBAS, NeuronConstraint, NeuronInverseSet
from captum_inverseset.visualization import visualize_image_grid
from captum_inverseset.zoo import face_dcgan, face_dcgan_available

torch.set_num_threads(2)
generator = face_dcgan() if face_dcgan_available() else None
if generator is None:
    print("gan-face-generate is not installed: this tutorial is skipped.")
else:
    z0 = generator.random_codes(1, generator=torch.Generator().manual_seed(7))

###############################################################################
# E-GBAS at two layers
# --------------------
# For each layer: the supporting boundary set with the default, scale-free
# sparsity; the epsilon-ball radius that keeps 90% of its samples in the
# generative region (the baseline); E-GBAS with that radius as its step. As
# in the paper's figures: the query, the epsilon-ball samples and the E-GBAS
# samples, and, because samples of a generative region look alike at a
# glance, each E-GBAS sample's difference from the query.


def egbas_figure(layer: str, n_samples: int = 15):
    egbas = EGBAS(generator, layer)
    mask = egbas.supporting_boundaries(z0, seed=0)
    epsilon = egbas.calibrate_epsilon(z0, 0.9, mask=mask, n_samples=256, seed=1)
    # Passes of at most 4 candidates: for 15 samples, a tree of several
    # generations (the default passes, sized for speed, would give about two).
    ours = egbas.sample(
        z0, n_samples, mask=mask, step_size=epsilon, seed=0, batch_size=4
    )
    ball = egbas.epsilon_sample(z0, n_samples, epsilon=epsilon, mask=mask, seed=0)
    print(
        f"{layer}: {int(mask.sum())} of {mask.numel()} boundaries; epsilon "
        f"{epsilon:.3f} keeps {ball.acceptance_rate:.0%} in the region; E-GBAS "
        f"{ours.acceptance_rate:.0%} in the region, tree depth {ours.tree_depth}, "
        "latent spread "
        f"{ours.mean_pairwise_distance() / ball.mean_pairwise_distance():.2f}x, "
        "output spread "
        f"{ours.mean_pairwise_distance('outputs') / ball.mean_pairwise_distance('outputs'):.2f}x "  # noqa: E501
        "the epsilon ball's"
    )
    fig, axes = plt.subplots(
        1, 4, figsize=(14, 4), gridspec_kw={"width_ratios": [1, 2.2, 2.2, 2.2]}
    )
    visualize_image_grid(ours.query_output[None], plt_fig_axis=(fig, axes[0]))
    axes[0].set_title(f"query ({layer})")
    ball.plot(title="epsilon-ball", plt_fig_axis=(fig, axes[1]))
    ours.plot(title="E-GBAS", plt_fig_axis=(fig, axes[2]))
    ours.plot(kind="difference", title="E-GBAS", plt_fig_axis=(fig, axes[3]))
    axes[3].title.set_fontsize(8)
    fig.tight_layout()
    return ours, ball


if generator is not None:
    results = {layer: egbas_figure(layer) for layer in ("main.1", "main.4")}

###############################################################################
# Both regions are small, so the samples look alike at a glance: the
# difference views show what each layer leaves free (red brighter than the
# query, blue darker, the mean over the colour channels). Here both layers let
# the hair and the shading around the hairline and cheeks change while the
# face's layout stays; the printed ratios say how much further than the ball
# the tree reaches.
#
# Inverse sets of two units and of their intersection
# ---------------------------------------------------
# The "network" is the face DCGAN's first two blocks, up to the second
# block's BatchNorm (``main.4``), whose channels we treat as neurons: a
# channel's activation summed over its 8x8 positions. The samples are
# latents, drawn from the generator's prior :math:`\mathcal{N}(0, I)` and
# kept in its bulk (``code_bound="auto"``); their faces are ``G(z)``.


class LatentPrior(nn.Module):
    """Latents as the inputs: the identity, with the prior the sampler
    starts from (``random_codes``) and bounds codes by (``prior_std``)."""

    latent_dim = 100
    code_shape = (100,)
    prior_std = 1.0

    def forward(self, z):
        return z

    def random_codes(self, n, generator=None, device=None):
        return torch.randn((n, 100), generator=generator).to(device or "cpu")


if generator is not None:
    blocks = nn.Sequential(nn.Unflatten(1, (100, 1, 1)), *generator.main[:5]).eval()
    layer = blocks[5]  # generator.main[4], the second block's BatchNorm
    prior = torch.randn(2000, 100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        per_channel = blocks(prior).sum(dim=(2, 3))  # (2000, 256)
    # Two channels that vary most over the prior, each in its top decile.
    unit_a, unit_b = per_channel.std(dim=0).topk(2).indices.tolist()
    band_a = (float(per_channel[:, unit_a].quantile(0.9)), None)
    band_b = (float(per_channel[:, unit_b].quantile(0.9)), None)
    both = (per_channel[:, unit_a] >= band_a[0]) & (per_channel[:, unit_b] >= band_b[0])
    print(
        f"units {unit_a} and {unit_b}: {int(both.sum())} of 2000 prior samples "
        "are in both top deciles"
    )
    sampler = NeuronInverseSet(blocks, layer, generator=LatentPrior())
    alone = sampler.sample((unit_a, slice(None), slice(None)), band_a, n_samples=8)
    joint = sampler.sample(
        (unit_a, slice(None), slice(None)),
        band_a,
        n_samples=8,
        additional_constraints=[
            NeuronConstraint(layer, (unit_b, slice(None), slice(None)), band_b)
        ],
    )
    print(
        f"unit {unit_a} alone: {alone.feasible_fraction:.0%} in band; both units: "
        f"{joint.feasible_fraction:.0%} in both bands"
    )
    with torch.no_grad():
        faces = [generator(r.inputs) for r in (alone, joint)]
        faces.append(generator(prior[both][:8]))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    titles = [
        f"inverse set: unit {unit_a} in its top decile",
        f"inverse set: units {unit_a} and {unit_b}",
        "prior samples in both bands (rejection)",
    ]
    for ax, images, title in zip(axes, faces, titles):
        visualize_image_grid(images, ncols=4, plt_fig_axis=(fig, ax))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()

###############################################################################
# The intersection is rare under the prior (the count above), yet every
# inverse-set sample lies in both bands; the rejection samples beside them
# are the few prior draws that happen to. Adding the second unit's band
# moves the samples towards darker faces, as the rejection samples are:
# that is what the two units respond to together. The inverse-set samples
# spread further than prior samples do (the sampler pushes them apart,
# within the prior's bulk), hence their stronger colours.
