"""
Inverse set of a neuron: every kind of input that excites it to a level
=======================================================================

Activation maximisation shows one input that drives a neuron as high as
possible. The *inverse set* (Hada & Carreira-Perpinan) is the set of all
valid inputs whose activation lies in a band :math:`z_1 \\le f(x) \\le z_2`;
:class:`~captum_inverseset.NeuronInverseSet` draws a sample of it that is
spread out, so we see the different kinds of inputs the neuron accepts at that
level.

We use the shipped digits classifier, and the shipped generator ``G`` (so
samples look like digits) and encoder ``E`` (spread is measured in its
8-dimensional code, not in pixels). The neuron is the logit of one class.
"""

import copy

import matplotlib.pyplot as plt
import torch
from captum.attr import NeuronGradient

from captum_inverseset import NeuronConstraint, NeuronInverseSet
from captum_inverseset.hooks import capture_layer
from captum_inverseset.visualization import visualize_image_grid
from captum_inverseset.zoo import (
    digits_classifier,
    digits_encoder,
    digits_generator,
    load_digits_dataset,
)

torch.set_num_threads(1)
model = digits_classifier().eval()
generator, encoder = digits_generator().eval(), digits_encoder().eval()
_, _, test_x, test_y = load_digits_dataset()
digit = 3

with torch.no_grad():
    logits = model(test_x)
own = logits[test_y == digit, digit]

###############################################################################
# Two bands of the class neuron
# -----------------------------
# A *high* band, where typical test images of the class sit, and a *low*
# band, just above where images of other classes sit. Both come from the test
# set's logits, so they follow the shipped weights.

high = tuple(torch.quantile(own, torch.tensor([0.4, 0.8])).tolist())
others = logits[test_y != digit, digit]
low = tuple(torch.quantile(others, torch.tensor([0.97, 0.995])).tolist())
print(f"high band {high[0]:.2f}..{high[1]:.2f}, low band {low[0]:.2f}..{low[1]:.2f}")

sampler = NeuronInverseSet(model, model.fc2, generator=generator, encoder=encoder)
results = {
    name: sampler.sample(digit, band, n_samples=32, batch_size=8, seed=0)
    for name, band in (("high", high), ("low", low))
}
for name, res in results.items():
    print(f"{name}: {int(res.feasible.sum())}/{res.n_samples} samples in the band")
    assert res.feasible_fraction >= 0.8

fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, (name, res) in zip(axes, results.items()):
    res.plot(plt_fig_axis=(fig, ax), title=f"{name} band of logit {digit}")
plt.tight_layout()

###############################################################################
# Against simply picking dataset images
# -------------------------------------
# Passing ``data`` makes the in-band training images the first starting
# points, and the result says what picking them alone would give: the spread
# (in the encoder's space) of a random and of a farthest-point pick of as
# many in-band images as samples.

train_x = load_digits_dataset().train_inputs
with_data = sampler.sample(
    digit, high, n_samples=32, batch_size=8, seed=0, data=train_x
)
base = with_data.data_baseline
print(
    f"{base['n_in_band']} of {base['n_examined']} training images are in the band; "
    f"spread: random pick {base['random']['encodings']:.3f}, farthest-point pick "
    f"{base['farthest']['encodings']:.3f}, samples "
    f"{with_data.mean_pairwise_distance():.3f} "
    f"({with_data.feasible_fraction:.0%} in the band)"
)
assert with_data.mean_pairwise_distance() >= base["farthest"]["encodings"]

###############################################################################
# What the user should see: in the high band, samples the classifier calls
# a "3" (written in different ways); in the low band, mostly other digits
# that share some strokes with a 3. We check the first claim.

with torch.no_grad():
    predicted = model(results["high"].inputs).argmax(1)
share = float((predicted == digit).float().mean())
print(f"high band: {share:.0%} of samples classified as {digit}")
assert share >= 0.5

###############################################################################
# Beside the usual views
# ----------------------
# (a) the test images with the highest logit, (b) one activation-maximisation
# image made with Lucent's ``render_vis`` (on a copy of the model: Lucent
# leaves hooks on every module), and (c) Captum's ``NeuronGradient`` of the
# neuron at a few inverse-set samples: which pixels would move the logit.

order = logits[:, digit].argsort(descending=True)[:8]
top = test_x[order]

from lucent.optvis import objectives  # noqa: E402
from lucent.optvis import param as lucent_param  # noqa: E402
from lucent.optvis.render import render_vis  # noqa: E402

work = copy.deepcopy(model)
torch.manual_seed(0)
params, image_f = lucent_param.image(8, channels=1, decorrelate=False, fft=False)
render_vis(
    work,
    objectives.channel("fc2", digit),
    param_f=lambda: (params, image_f),
    transforms=[],
    thresholds=(200,),
    preprocess=False,
    progress=False,
    show_image=False,
    fixed_image_size=8,
)
lucent_image = image_f().detach().cpu()
with torch.no_grad():
    lucent_logit = float(model(lucent_image)[0, digit])
print(f"Lucent's image: logit {lucent_logit:.1f} (above the high band: one point)")

samples = results["high"].inputs[:4]
grads = NeuronGradient(model, model.fc2).attribute(samples, digit)

fig, axes = plt.subplots(1, 4, figsize=(14, 4))
visualize_image_grid(top, plt_fig_axis=(fig, axes[0]), title="top test images")
visualize_image_grid(lucent_image, plt_fig_axis=(fig, axes[1]), title="Lucent")
visualize_image_grid(
    samples, ncols=2, plt_fig_axis=(fig, axes[2]), title="inverse-set samples"
)
g = grads / grads.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
visualize_image_grid(
    g,
    ncols=2,
    cmap="coolwarm",
    vmin=-1.0,
    vmax=1.0,
    plt_fig_axis=(fig, axes[3]),
    title="NeuronGradient",
)
plt.tight_layout()
assert grads.shape == samples.shape and grads.abs().sum() > 0

###############################################################################
# The neuron profile beside the samples
# -------------------------------------
# :class:`~captum_inverseset.NeuronProfile` streams a dataset through the
# model once: histogram, top/bottom examples, examples at quantiles and the
# mean activation per class. Its quantiles give a band in one call (here the
# top 5% of training activations), and
# :class:`~captum_inverseset.NeuronActivationMaximization` gives the single
# maximising input with Lucent's parameterization and objectives, through our
# own hooks (nothing is left on the model, unlike ``render_vis`` above).

from captum_inverseset import NeuronActivationMaximization, NeuronProfile  # noqa: E402
from captum_inverseset.param import PixelImageParameterization  # noqa: E402

train_x, train_y, _, _ = load_digits_dataset()
profile = NeuronProfile(model, model.fc2).attribute(train_x, digit, labels=train_y)
profile.plot()
top_band = profile.activation_range(0.95, 1.0)
print(f"top 5% band of logit {digit}: {top_band[0]:.2f}..{top_band[1]:.2f}")
assert int(profile.class_means.argmax()) == digit

maximised = NeuronActivationMaximization(model, model.fc2).attribute(
    PixelImageParameterization((1, 8, 8)), neuron_selector=digit, seed=0
)
best_example = float(profile.top_activations[0])
print(
    f"activation maximisation: {float(maximised.final_objective.max()):.1f} "
    f"vs best training image {best_example:.1f}"
)
assert float(maximised.final_objective.max()) > best_example
in_top = sampler.sample(digit, top_band, n_samples=16, batch_size=8, seed=1)
assert in_top.feasible_fraction >= 0.5
maximised.plot()
in_top.plot(title="inverse set, top-5% band")

###############################################################################
# Intersection of two inverse sets
# --------------------------------
# Inputs on which two class neurons are *both* in a band (the paper's example:
# "monastery" and "toilet seat" both in [50, 60]). Here: digits 3 and 5, with
# a band where a generator sample rarely puts both logits.

with torch.no_grad(), capture_layer(model.fc2) as cap:
    codes = torch.randn(2048, 8, generator=torch.Generator().manual_seed(0))
    model(generator(codes))
both = torch.minimum(cap.output[:, 3], cap.output[:, 5])
band = tuple(torch.quantile(both, torch.tensor([0.95, 0.995])).tolist())
five = NeuronConstraint(model.fc2, 5, band)
inter = sampler.sample(
    3, band, n_samples=24, batch_size=8, seed=0, additional_constraints=[five]
)
with torch.no_grad():
    check = model(inter.inputs)[inter.feasible]
ok = ((check[:, [3, 5]] >= band[0]) & (check[:, [3, 5]] <= band[1])).all()
print(f"both logits in {band[0]:.2f}..{band[1]:.2f}: {int(inter.feasible.sum())}/24")
assert bool(ok) and inter.feasible_fraction >= 0.5
inter.plot(title="logits 3 and 5 both in the band")
plt.show()
