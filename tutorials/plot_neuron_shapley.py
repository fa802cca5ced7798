"""
Neuron Shapley: which filters is the accuracy made of?
======================================================

:class:`~captum_inverseset.NeuronShapley` (Ghorbani & Zou, NeurIPS 2020)
treats the filters of a layer as players of a game whose value is a metric of
the whole network, here its accuracy on test digits, and scores each filter
by its Shapley value. We find the filters responsible for the accuracy and
for one class, check the ranking with ablation curves against Captum's
``LayerConductance``, Grad-CAM channel weights and random filters, and look
at what the top filters respond to with the inverse-set sampler.

We use the shipped digits classifier (``conv2`` has 32 filters).
"""

import matplotlib.pyplot as plt
import torch

from captum_inverseset import NeuronInverseSet, NeuronShapley
from captum_inverseset.ablation import (
    ablation_curve,
    conductance_channel_scores,
    gradcam_channel_scores,
)
from captum_inverseset.zoo import (
    digits_classifier,
    digits_encoder,
    digits_generator,
    load_digits_dataset,
)

model = digits_classifier().eval()
data = load_digits_dataset()
x, y = data.test_inputs[:120], data.test_labels[:120]

###############################################################################
# Shapley values of the filters for the accuracy
# ----------------------------------------------
# Removed filters output their mean activation map (``removal="mean"``). We
# sample 12 permutations. ``attribute`` returns the values, as Captum's
# attributions do; ``interpret`` returns them with their statistics
# (standard errors, confidence bounds, evaluations). Efficiency: the values
# add up to the accuracy lost when every filter is removed.

ns = NeuronShapley(model, model.conv2)
stats = ns.interpret(x, target=y, metric="accuracy", n_permutations=12, seed=0)
values = stats.values.float()
print("engine:", stats.engine)
print(f"V(all) = {stats.value_full:.3f}, V(none) = {stats.value_empty:.3f}")
print(f"sum of values = {values.sum():.3f}, evaluations = {stats.n_evaluations}")
print("top filters:", stats.top_players(5))
assert abs(values.sum() - (stats.value_full - stats.value_empty)) < 1e-5
fig, ax = stats.plot(top=15, title="conv2 filters, accuracy")

###############################################################################
# Ablation curves
# ---------------
# Remove the k highest-ranked filters and measure the accuracy. The Shapley
# ranking should make it drop faster than random filters and than the
# rankings from per-example attributions (Conductance, Grad-CAM weights).

conductance = conductance_channel_scores(model, model.conv2, x, y, n_steps=10)
gradcam = gradcam_channel_scores(model, model.conv2, x, y)
curve = ablation_curve(
    model,
    model.conv2,
    x,
    {"shapley": values, "conductance": conductance, "grad-cam": gradcam},
    target=y,
    ks=(0, 4, 8, 12, 16),
    n_random=10,
)
for name in ("shapley", "conductance", "grad-cam", "random"):
    print(f"{name:12s}", [round(v, 3) for v in curve.curve(name).tolist()])
fig, ax = curve.plot(title="accuracy after removing the top-k conv2 filters")
shapley_curve = curve.curve("shapley")
assert (shapley_curve[1:] < curve.curve("random")[1:]).all()

###############################################################################
# Filters responsible for one class
# ---------------------------------
# ``metric="class_accuracy"`` restricts the value to the examples of one
# class. Removing the top filters for the digit 3 hurts the 3s much more than
# the other digits.

ns3 = NeuronShapley(model, model.conv2)
values3 = ns3.attribute(
    x, target=y, metric="class_accuracy", metric_class=3, n_permutations=8, seed=0
)
curve3 = ablation_curve(
    model, model.conv2, x, {"class 3 shapley": values3}, target=y,
    ks=(0, 6), metric="class_accuracy", metric_class=3, n_random=5,
)  # fmt: skip
overall = ablation_curve(
    model, model.conv2, x, {"class 3 shapley": values3}, target=y, ks=(0, 6),
    n_random=1,
)  # fmt: skip
drop_class = (curve3.curves[0, 0] - curve3.curves[0, 1]).item()
drop_all = (overall.curves[0, 0] - overall.curves[0, 1]).item()
print(f"accuracy drop on 3s: {drop_class:.3f}, on all digits: {drop_all:.3f}")
assert drop_class > drop_all

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
axes[0].bar(["3s", "all digits"], [drop_class, drop_all])
axes[0].set_ylabel("accuracy drop")
axes[0].set_title("removing the 6 top filters for class 3")
curve3.plot(plt_fig_axis=(fig, axes[1]), title="class-3 accuracy")
fig.tight_layout()

###############################################################################
# What the top filters respond to
# -------------------------------
# :class:`~captum_inverseset.NeuronInverseSet` samples digits from the
# shipped generator whose mean activation of a filter lies in a band (here,
# the band of the 80-95% quantiles over the test digits): a picture of what
# the filter responds to. We look at the two filters with the largest
# Shapley values for the accuracy.

with torch.no_grad():
    maps = model.relu2(model.conv2(model.relu1(model.conv1(x))))
sampler = NeuronInverseSet(
    model, model.relu2, generator=digits_generator(), encoder=digits_encoder()
)
top2 = torch.argsort(values, descending=True)[:2].tolist()
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, channel in zip(axes, top2):
    activation = maps[:, channel].mean((1, 2))
    band = tuple(torch.quantile(activation, torch.tensor([0.8, 0.95])).tolist())
    res = sampler.sample(
        lambda out, c=channel: out[:, c].mean((1, 2)),
        band,
        n_samples=16,
        batch_size=8,
        seed=0,
    )
    print(f"filter {channel}: {res.feasible_fraction:.0%} of samples in the band")
    assert res.feasible_fraction >= 0.8
    res.plot(plt_fig_axis=(fig, ax), title=f"inverse set of conv2 filter {channel}")
plt.tight_layout()

###############################################################################
# A torchvision ResNet beside Captum's LayerConductance
# -----------------------------------------------------
# The same calls on a residual network (``torchvision.models.resnet18``,
# random weights here, so the labels are its own predictions and the metric
# is the loss against them). The residual connections cross the player
# layers, so ``engine="auto"`` takes the graph engine: each part of the
# network runs once per distinct mask of the filters upstream of it, and a
# removal reruns only what is downstream of it. We score the 256 filters of
# ``layer3[1].conv2`` with Neuron Shapley and with Captum's
# ``LayerConductance``, and remove the top ones of each.

import torchvision  # noqa: E402

resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    predicted = resnet(images).argmax(1)
layer = resnet.layer3[1].conv2
result = NeuronShapley(resnet, layer).interpret(
    images, target=predicted, metric="loss", n_permutations=4, seed=0
)
print(f"engine: {result.engine}, evaluations: {result.n_evaluations}")
resnet_conductance = conductance_channel_scores(
    resnet, layer, images, predicted, n_steps=10
)
resnet_curve = ablation_curve(
    resnet, layer, images,
    {"shapley (loss)": result.values, "conductance": resnet_conductance},
    target=predicted, ks=(0, 8, 16, 32, 64), metric="loss", n_random=5,
)  # fmt: skip
for name in ("shapley (loss)", "conductance", "random"):
    print(f"{name:15s}", [round(v, 3) for v in resnet_curve.curve(name).tolist()])
fig, ax = resnet_curve.plot(title="resnet18 layer3[1].conv2: loss after removal")

###############################################################################
# For every conv filter of the network as one player set (4800 filters on
# ResNet-18), pass the list of layers; ``max_memory=`` bounds the activations
# a forward pass may hold (default: a quarter of the free memory), and
# ``examples_per_permutation=128`` evaluates each permutation on a fresh
# random subset of a larger data set, as the paper does::
#
#     convs = [m for m in resnet.modules() if isinstance(m, torch.nn.Conv2d)]
#     result = NeuronShapley(resnet, convs).interpret(
#         data, target=labels, metric="accuracy", n_permutations=200,
#         examples_per_permutation=128, top_k=100, checkpoint="ns.ckpt")

###############################################################################
# Larger runs
# -----------
# For thousands of filters, use the bandit (``top_k=20``) to stop sampling the
# filters whose membership of the top 20 is already certain, save the
# statistics with ``checkpoint="ns.ckpt"`` and spread the permutations over
# processes or machines with ``torch.distributed``: call the same
# ``attribute`` on every rank after ``dist.init_process_group("gloo")`` and
# launch with ``torchrun --nproc_per_node=4 shapley_run.py`` (see the
# Neuron Shapley page of the documentation).
