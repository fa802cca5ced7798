"""
Your own model: torchvision networks and your own generator
===========================================================

The methods take any ``nn.Module`` and any layer inside it, the same way
Captum's ``LayerGradCam`` or ``LayerConductance`` do. This tutorial runs them
on torchvision's ResNet-18 and GoogLeNet.

This documentation is built offline, so the networks here have random weights
(``weights=None``) and the pictures mean nothing; the calls are the ones you
would make on a trained network. Where weights can be downloaded, one line
switches to the pretrained model::

    from torchvision.models import ResNet18_Weights, resnet18
    model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).eval()

and for GoogLeNet (the InceptionV1 of the Lucid/Lucent literature)::

    from torchvision.models import GoogLeNet_Weights, googlenet
    model = googlenet(weights=GoogLeNet_Weights.IMAGENET1K_V1).eval()

Pretrained torchvision models expect normalised inputs; wrap the model so our
samplers can work in [0, 1] image space::

    model = torch.nn.Sequential(torchvision.transforms.Normalize(mean, std), model)

(the command line does this with ``--normalize MEAN STD``). Layers are given
as modules, as to Captum, or by their dotted names in the model
(``"layer1.0.conv1"``).
"""

import matplotlib.pyplot as plt
import torch
import torchvision
from captum.attr import LayerGradCam

from captum_inverseset import (
    NetworkDissection,
    NeuronActivationMaximization,
    NeuronInverseSet,
    NeuronProfile,
    NeuronShapley,
)
from captum_inverseset.hooks import count_hooks
from captum_inverseset.param import GeneratorParameterization, standard_transforms
from captum_inverseset.visualization import visualize_image_grid

torch.set_num_threads(1)
torch.manual_seed(0)

###############################################################################
# ResNet-18: Neuron Shapley beside Grad-CAM
# ------------------------------------------
# Layers are given as modules, exactly as to Captum. Here the players are the
# 64 channels of ``layer1.0.conv1``. With random weights there are no true
# labels, so the value of a coalition is the loss against the full network's
# own predictions (``target=None``).

model = torchvision.models.resnet18(weights=None).eval()
images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
hooks_before = count_hooks(model)

gradcam = LayerGradCam(model, model.layer1[0].conv1).attribute(images, target=0)
shapley = NeuronShapley(model, model.layer1[0].conv1)
values = shapley.attribute(images, metric="loss", n_permutations=2, seed=0)
print("Grad-CAM map:", tuple(gradcam.shape), " Shapley values:", tuple(values.shape))
assert values.shape == (64,)
assert torch.isfinite(values).all()

fig, ax = shapley.last_result.plot()

###############################################################################
# Several layers form one player set: the paper explains all filters of a
# network at once. Pass a list of modules; the result is one tensor per layer.

multi = NeuronShapley(model, [model.layer3[1].conv2, model.layer4[1].conv2])
per_layer = multi.attribute(images[:4], metric="loss", n_permutations=1, seed=0)
print([tuple(v.shape) for v in per_layer])
assert [v.shape[0] for v in per_layer] == [256, 512]

###############################################################################
# ResNet-18: the inverse set of a channel
# ---------------------------------------
# Without a generator the sampler optimises images directly through Lucent's
# FFT + colour-decorrelated parameterization, with Lucent's jitter / scale /
# rotate transforms for robustness. ``activation_range=("top", 0.5)`` first
# finds how high the neuron can go and then samples the band from half of that
# maximum upwards.

sampler = NeuronInverseSet(model, model.layer3[0].conv2)
result = sampler.sample(
    (5, 1, 1),  # channel 5 at spatial position (1, 1), a Captum selector
    activation_range=("top", 0.5),
    n_samples=8,
    batch_size=4,
    input_shape=(3, 32, 32),
    seed=0,
)
print(f"band {result.activation_range}, feasible {result.feasible_fraction:.2f}")
assert result.inputs.shape == (8, 3, 32, 32)
assert 0.0 <= float(result.inputs.min()) and float(result.inputs.max()) <= 1.0
fig, ax = result.plot(title="ResNet-18 layer3.0.conv2, channel 5")

###############################################################################
# GoogLeNet
# ---------
# The same sampler on an Inception block. ``aux_logits=False`` and
# ``init_weights=False`` only skip the auxiliary heads and the slow
# initialisation of the random network.

net = torchvision.models.googlenet(
    weights=None, aux_logits=False, init_weights=False
).eval()
g_sampler = NeuronInverseSet(net, net.inception3a)
g_result = g_sampler.sample(
    (10, 2, 2),
    activation_range=("top", 0.5),
    n_samples=4,
    batch_size=4,
    input_shape=(3, 32, 32),
    seed=0,
)
assert g_result.inputs.shape == (4, 3, 32, 32)
print(f"GoogLeNet inception3a: feasible {g_result.feasible_fraction:.2f}")

###############################################################################
# Plugging in a generator
# -----------------------
# Any ``nn.Module`` mapping a latent code to an image is a generator: Lucent's
# ``upconvGAN("fc6")`` (it downloads its weights, so it is not run here), a
# BigGAN, or your own GAN. :class:`~captum_inverseset.param.GeneratorParameterization`
# adds the latent shape and prior and an optional post-processing (a resize
# to the classifier's input, a normalisation)::
#
#     from lucent.optvis.param.gan import upconvGAN
#     gan = upconvGAN("fc6").eval()
#     generator = GeneratorParameterization(
#         gan, latent_shape=(4096,), postprocess=torch.nn.Upsample(size=224))
#
# Here a small DCGAN-style network with random weights stands in for it.


class TinyDCGAN(torch.nn.Module):
    def __init__(self, latent_dim: int = 16):
        super().__init__()
        self.fc = torch.nn.Linear(latent_dim, 32 * 4 * 4)
        self.act = torch.nn.ReLU()
        self.up1 = torch.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.act1 = torch.nn.ReLU()
        self.up2 = torch.nn.ConvTranspose2d(16, 3, 4, stride=2, padding=1)

    def forward(self, z):
        h = self.act(self.fc(z)).view(-1, 32, 4, 4)
        return torch.sigmoid(self.up2(self.act1(self.up1(h))))


gan = GeneratorParameterization(
    TinyDCGAN().eval(),
    latent_shape=(16,),
    postprocess=torch.nn.Upsample(size=32, mode="bilinear"),
)
gan_sampler = NeuronInverseSet(model, model.layer3[0].conv2, generator=gan)
gan_result = gan_sampler.sample(
    (5, 1, 1), activation_range=("top", 0.5), n_samples=8, batch_size=4, seed=0
)
assert gan_result.codes.shape == (8, 16)
print(f"with a generator: feasible {gan_result.feasible_fraction:.2f}")
fig, ax = visualize_image_grid(gan_result.inputs, title="samples through the GAN")

###############################################################################
# Profile, activation maximisation and dissection by layer name
# -------------------------------------------------------------
# The report classes take the layer's dotted name as well. A channel is one
# value per image with slices (summed over space, Captum's convention).
# ``standard_transforms(32)`` jitters, scales and rotates the 32x32 images and
# crops them back to 32x32, so a model with a fixed-size head would work too.

channel = (5, slice(None), slice(None))
layer = "layer3.0.conv2"
profile = NeuronProfile(model, layer).interpret(images, channel, k=3)
print("top activations:", [round(a, 3) for a in profile.top_activations.tolist()])
am = NeuronActivationMaximization(model, layer).interpret(
    channel,
    input_shape=(3, 32, 32),
    n_inputs=2,
    n_steps=10,
    transforms=standard_transforms(32),
)
assert am.inputs.shape == (2, 3, 32, 32)
assert bool((am.final_objective > am.initial_objective).all())
bright = images.mean(1) > 0.5  # a toy "concept": bright pixels
dissection = NetworkDissection(model, "layer1.0.conv1").interpret(
    images, bright, concept_names=["bright"], quantile=0.99
)
units, iou = dissection.rank_units("bright", k=3)
print("units most aligned with bright pixels:", units.tolist())

###############################################################################
# Nothing is left on the model
# ----------------------------
# Every method removes its hooks and restores ``training`` and
# ``requires_grad``, also when it raises.

assert count_hooks(model) == hooks_before
assert not model.training
plt.show()

###############################################################################
# The command line does the same on any importable factory::
#
#     captum-inverseset shapley --model torchvision.models:resnet18 \
#         --weights resnet18.pt --layer layer1.0.conv1 --data images.pt \
#         --metric loss --n-permutations 20 --out shapley_out/
