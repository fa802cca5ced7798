"""Small models trained on scikit-learn's bundled 8x8 digits.

They ship with the package (weights in ``zoo/weights``, trained by
``python -m captum_inverseset.zoo.train``) so that tests, tutorials, the demo
and the benchmarks run with no download.

* :func:`digits_classifier`: a CNN, 1x8x8 image in [0, 1] -> 10 logits.
* :func:`digits_generator`: the decoder of a two-stage VAE, latent ``(8,)`` ~
  N(0, I) -> 1x8x8 image in [0, 1], with LeakyReLU hidden layers whose
  pre-activations (``prior_fc1``, ``prior_fc2``, ``fc1``, ``fc2``,
  ``deconv1``) define E-GBAS's generative boundaries.
* :func:`digits_encoder`: the two-stage VAE's encoder mean, 1x8x8 image ->
  ``(8,)`` in the generator's latent space; the low-dimensional encoding ``E``
  that inverse-set sampling measures spread in.
"""

import os
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "DigitsClassifier",
    "DigitsEncoder",
    "DigitsGenerator",
    "DigitsDataset",
    "LATENT_DIM",
    "digits_classifier",
    "digits_encoder",
    "digits_generator",
    "load_digits_dataset",
    "load_weights",
    "weights_path",
]

LATENT_DIM = 8
_WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


class DigitsDataset(NamedTuple):
    """The fixed train/test split of the digits (images in [0, 1])."""

    train_inputs: torch.Tensor  # (N_train, 1, 8, 8)
    train_labels: torch.Tensor  # (N_train,)
    test_inputs: torch.Tensor  # (N_test, 1, 8, 8)
    test_labels: torch.Tensor  # (N_test,)


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> DigitsDataset:
    r"""scikit-learn's ``load_digits()`` as tensors with a fixed stratified split.

    Args:
        test_fraction (float, optional): fraction of each class held out.
            Default: 0.2
        seed (int, optional): seed of the split. The shipped models were
            trained on the default split. Default: 0

    Returns:
        DigitsDataset: ``(train_inputs, train_labels, test_inputs, test_labels)``
        with inputs of shape ``(N, 1, 8, 8)`` scaled to [0, 1].
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    rng = np.random.RandomState(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))].tolist())
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_idx] = True
    xt = torch.from_numpy(x).unsqueeze(1)
    yt = torch.from_numpy(y)
    tm = torch.from_numpy(test_mask)
    return DigitsDataset(xt[~tm], yt[~tm], xt[tm], yt[tm])


class DigitsClassifier(nn.Module):
    """CNN for 1x8x8 digits: three conv layers (16, 32, 32 channels), two linear.

    Layers: ``conv1``/``relu1`` (16 channels), ``conv2``/``relu2`` (32),
    ``pool``, ``conv3``/``relu3`` (32), ``adaptive_pool``, ``flatten``,
    ``fc1``/``relu4`` (64 units), ``fc2`` (10 logits).

    Every nonlinearity is its own module (no in-place ops), so Captum's layer
    hooks can attach to any of them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.relu3 = nn.ReLU()
        # Identity on 8x8 inputs; lets padded/rescaled inputs (Lucent-style
        # transforms) through the same linear layers.
        self.adaptive_pool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.pool(self.relu2(self.conv2(x)))
        x = self.adaptive_pool(self.relu3(self.conv3(x)))
        x = self.relu4(self.fc1(self.flatten(x)))
        return self.fc2(x)


class DigitsGenerator(nn.Module):
    """Two-stage VAE decoder: latent ``u`` ``(8,)`` ~ N(0, I) -> 1x8x8 in [0, 1].

    A first-stage VAE (trained with an added adversarial term for sharper
    digits) decodes its latent ``z`` through ``fc1`` (64 units), ``fc2``
    (32x4x4) and ``deconv1`` (16x8x8). Its aggregate posterior is not
    N(0, I), so prior samples of ``z`` fall between digits; a second-stage
    VAE on ``z`` (Dai & Wipf, 2019) learns the map ``u -> z``, the MLP
    ``prior_fc1 -> prior_fc2 -> prior_out`` in front.

    Every linear/conv layer outputs pre-activations (the LeakyReLUs are the
    separate modules ``prior_act1``, ``prior_act2``, ``act1``..``act3``),
    which is what E-GBAS needs for its generative boundaries.
    """

    def __init__(self, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.prior_fc1 = nn.Linear(latent_dim, 128)
        self.prior_act1 = nn.LeakyReLU(0.2)
        self.prior_fc2 = nn.Linear(128, 128)
        self.prior_act2 = nn.LeakyReLU(0.2)
        self.prior_out = nn.Linear(128, latent_dim)
        self.fc1 = nn.Linear(latent_dim, 64)
        self.act1 = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(64, 32 * 4 * 4)
        self.act2 = nn.LeakyReLU(0.2)
        self.unflatten = nn.Unflatten(1, (32, 4, 4))
        self.deconv1 = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.act3 = nn.LeakyReLU(0.2)
        self.conv_out = nn.Conv2d(16, 1, 3, padding=1)
        self.out = nn.Sigmoid()

    def to_first_stage(self, u: torch.Tensor) -> torch.Tensor:
        """Second-stage decoder: N(0, I) latent ``u`` -> first-stage latent ``z``."""
        h = self.prior_act1(self.prior_fc1(u))
        return self.prior_out(self.prior_act2(self.prior_fc2(h)))

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        """First-stage decoder: latent ``z`` -> image."""
        h = self.act1(self.fc1(z))
        h = self.unflatten(self.act2(self.fc2(h)))
        h = self.act3(self.deconv1(h))
        return self.out(self.conv_out(h))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.decode_first_stage(self.to_first_stage(u))


class DigitsEncoder(nn.Module):
    """Two-stage VAE encoder: 1x8x8 image -> latent mean ``u`` ``(8,)``.

    ``forward`` returns the mean of ``u``, the same space the generator
    samples from (so ``G(E(x))`` approximately reconstructs ``x``); it is the
    low-dimensional encoding ``E`` used for inverse-set spread.
    :meth:`encode_first_stage` returns the first stage's ``(mean, log_variance)``
    of ``z``; :meth:`encode` returns ``(mean, log_variance)`` of ``u``.
    """

    def __init__(self, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.act1 = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
        self.act2 = nn.LeakyReLU(0.2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 4 * 4, 64)
        self.act3 = nn.LeakyReLU(0.2)
        self.mean = nn.Linear(64, latent_dim)
        self.log_variance = nn.Linear(64, latent_dim)
        self.post_fc1 = nn.Linear(latent_dim, 128)
        self.post_act1 = nn.LeakyReLU(0.2)
        self.post_fc2 = nn.Linear(128, 128)
        self.post_act2 = nn.LeakyReLU(0.2)
        self.post_out = nn.Linear(128, 2 * latent_dim)

    def encode_first_stage(self, x: torch.Tensor):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        h = self.act3(self.fc(self.flatten(h)))
        return self.mean(h), self.log_variance(h)

    def encode_second_stage(self, z: torch.Tensor):
        h = self.post_act2(self.post_fc2(self.post_act1(self.post_fc1(z))))
        out = self.post_out(h)
        return out[:, : self.latent_dim], out[:, self.latent_dim :]

    def encode(self, x: torch.Tensor):
        return self.encode_second_stage(self.encode_first_stage(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]


def weights_path(name: str) -> str:
    """Path of a shipped weight file (``"digits_classifier"`` etc.)."""
    return os.path.join(_WEIGHTS_DIR, f"{name}.pt")


def load_weights(
    model: nn.Module,
    path: Union[str, os.PathLike],
    map_location: Optional[Union[str, torch.device]] = "cpu",
) -> nn.Module:
    """Load a state dict saved with ``torch.save`` without unpickling code.

    Uses ``torch.load(..., weights_only=True)``: a file that holds anything but
    tensors and plain containers is refused.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state)
    return model


def _build(model: nn.Module, name: str, pretrained: bool) -> nn.Module:
    if pretrained:
        path = weights_path(name)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"shipped weights {path} are missing; run "
                "`python -m captum_inverseset.zoo.train` to recreate them"
            )
        load_weights(model, path)
    return model.eval()


def digits_classifier(pretrained: bool = True) -> DigitsClassifier:
    """The shipped digits CNN (eval mode). ``pretrained=False``: random init."""
    return _build(DigitsClassifier(), "digits_classifier", pretrained)


def digits_generator(pretrained: bool = True) -> DigitsGenerator:
    """The shipped two-stage VAE decoder, ``(8,)`` ~ N(0, I) -> 1x8x8 in [0, 1]."""
    return _build(DigitsGenerator(), "digits_generator", pretrained)


def digits_encoder(pretrained: bool = True) -> DigitsEncoder:
    """The shipped two-stage VAE encoder mean, 1x8x8 image -> ``(8,)`` latent."""
    return _build(DigitsEncoder(), "digits_encoder", pretrained)
