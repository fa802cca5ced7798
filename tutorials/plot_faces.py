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
2. **Inverse sets** (Hada & Carreira-Perpinan) of a real face detector's
   neurons through the face DCGAN, and of their intersection: which faces
   make MTCNN's ONet (``facenet-pytorch``, pretrained) call them a face with
   a high logit, and which of those also have the nose to the right?

This page needs ``pip install --no-deps gan-face-generate==1.1.1
facenet-pytorch==2.6.0`` (the weights ship inside those wheels; the
Makefile's bootstrap installs them); without them the steps are skipped.
"""

import matplotlib.pyplot as plt
import torch
from captum.attr import LayerActivation

from captum_inverseset import EGBAS, NeuronConstraint, NeuronInverseSet
from captum_inverseset.visualization import visualize_image_grid
from captum_inverseset.zoo import (
    face_dcgan,
    face_dcgan_available,
    face_detector,
    face_detector_available,
)

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
# Inverse sets of a face detector's neurons, and their intersection
# -----------------------------------------------------------------
# The network is MTCNN's ONet (:func:`~captum_inverseset.zoo.face_detector`,
# the pretrained weights of ``facenet-pytorch``), a face detector nobody here
# trained, looking at the DCGAN's faces. Two of its neurons: the face logit
# (``dense6_1``, unit 1) and one landmark output (``dense6_3``, unit 2: the
# nose's x coordinate in the detector's crop, larger when the nose is to the
# right). The bands come from 512 prior faces, read with Captum's
# ``LayerActivation``: the face logit in its top 5%, the nose x in its top
# decile. The samples are latents; the constraints are on ``ONet(G(z))``.

if generator is not None and face_detector_available():
    detector = face_detector()
    face_logit, landmarks = detector.onet.dense6_1, detector.onet.dense6_3
    prior = generator.random_codes(512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        faces = torch.cat([generator(z) for z in prior.split(128)])
    face = LayerActivation(detector, face_logit).attribute(faces)[:, 1]
    nose_x = LayerActivation(detector, landmarks).attribute(faces)[:, 2]
    band_face = (float(face.quantile(0.95)), None)
    band_nose = (float(nose_x.quantile(0.9)), None)
    both = (face >= band_face[0]) & (nose_x >= band_nose[0])
    print(
        f"face logit >= {band_face[0]:.2f}: {int((face >= band_face[0]).sum())} of"
        f" 512 prior faces; also nose x >= {band_nose[0]:.3f}: {int(both.sum())}"
    )
    sampler = NeuronInverseSet(detector, face_logit, generator=generator)
    alone = sampler.sample(1, band_face, n_samples=8, batch_size=8)
    joint = sampler.sample(
        1,
        band_face,
        n_samples=8,
        batch_size=8,
        additional_constraints=[NeuronConstraint(landmarks, 2, band_nose)],
    )
    print(
        f"face logit alone: {alone.feasible_fraction:.0%} in band; with the nose "
        f"band: {joint.feasible_fraction:.0%} in both bands"
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    panels = [
        (alone.inputs, "inverse set: ONet face logit in its top 5%"),
        (joint.inputs, "inverse set: face logit and nose x (top decile)"),
        (faces[both][:8], "prior faces in both bands (rejection)"),
    ]
    for ax, (images, title) in zip(axes, panels):
        visualize_image_grid(images, ncols=4, plt_fig_axis=(fig, ax))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()

###############################################################################
# The intersection is rare under the prior (the count above: a handful of
# 512 faces), yet every inverse-set sample lies in both bands, found in a
# few tens of gradient steps through ``ONet(G(z))``; the rejection samples
# beside them are the few prior faces that happen to. With the nose band
# the heads turn to one side, as in the rejection samples: that is what the
# landmark unit reads. The inverse-set faces spread further than prior faces
# do (very bright and very dark lighting): the sampler pushes the samples
# apart within the prior's bulk, and the detector still calls them faces.
