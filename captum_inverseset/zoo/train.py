"""Reproducible training of the shipped digits models.

Usage::

    python -m captum_inverseset.zoo.train [--out DIR] [--seed 0]

Trains the classifier and the two-stage VAE (generator = decoder, encoder =
encoder mean; see :func:`train_vae`)
on the fixed split of :func:`load_digits_dataset`, prints a JSON line of the
figures (test accuracy, generator quality, sizes, times) and writes
``digits_classifier.pt``, ``digits_generator.pt`` and ``digits_encoder.pt``.
"""

import argparse
import json
import os
import time
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .digits import (
    LATENT_DIM,
    DigitsClassifier,
    DigitsEncoder,
    DigitsGenerator,
    load_digits_dataset,
)


def _shift_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (zero padded)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[:, :, dy : dy + 8, dx : dx + 8]


def train_classifier(seed: int = 0, epochs: int = 80) -> DigitsClassifier:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = load_digits_dataset()
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(data.train_labels)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            idx = perm[i : i + 64]
            x = data.train_inputs[idx]
            if torch.rand((), generator=gen) < 0.5:
                x = _shift_augment(x, gen)
            loss = F.cross_entropy(model(x), data.train_labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def _vae_step_loss(enc, dec, x, gen):
    """First-stage VAE loss (BCE reconstruction + KL) of a batch."""
    mean, log_var = enc.encode_first_stage(x)
    eps = torch.randn(mean.shape, generator=gen)
    z = mean + eps * torch.exp(0.5 * log_var)
    rec = F.binary_cross_entropy(dec.decode_first_stage(z), x, reduction="sum")
    kl = -0.5 * torch.sum(1 + log_var - mean**2 - log_var.exp())
    return (rec + kl) / len(x)


def train_vae(
    seed: int = 0,
    epochs: int = 400,
    adversarial_epochs: int = 150,
    adversarial_weight: float = 3.0,
    second_stage_steps: int = 4000,
):
    """Two-stage VAE: stage 1 (+ adversarial fine-tuning), then stage 2 on z.

    1. A VAE on the images (latent ``z``), ``epochs`` epochs.
    2. ``adversarial_epochs`` more epochs of the VAE loss plus
       ``adversarial_weight`` times a non-saturating GAN loss on decoded prior
       samples against a small conv discriminator (sharper digits).
    3. A second VAE on the first stage's posterior means (Dai & Wipf, 2019),
       Gaussian likelihood with a learned variance, whose decoder maps
       ``u ~ N(0, I)`` to ``z``: prior samples then land where the data's
       latents are instead of between digits.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = load_digits_dataset()
    enc, dec = DigitsEncoder(), DigitsGenerator()
    stage1 = [
        p
        for n, p in list(enc.named_parameters()) + list(dec.named_parameters())
        if not n.startswith(("post_", "prior_"))
    ]
    opt = torch.optim.Adam(stage1, lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(data.train_labels)
    x_all = data.train_inputs
    for _ in range(epochs):
        enc.train()
        dec.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            loss = _vae_step_loss(enc, dec, x_all[perm[i : i + 64]], gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()

    disc = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 1),
    )
    opt_g = torch.optim.Adam(stage1, lr=5e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=5e-4, betas=(0.5, 0.999))
    for _ in range(adversarial_epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            x = x_all[perm[i : i + 64]]
            b = len(x)
            fake = dec.decode_first_stage(torch.randn(b, enc.latent_dim, generator=gen))
            d_loss = F.binary_cross_entropy_with_logits(
                disc(x), torch.ones(b, 1)
            ) + F.binary_cross_entropy_with_logits(
                disc(fake.detach()), torch.zeros(b, 1)
            )
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            adv = F.binary_cross_entropy_with_logits(disc(fake), torch.ones(b, 1))
            g_loss = _vae_step_loss(enc, dec, x, gen) + adversarial_weight * adv
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
    enc.eval()
    dec.eval()

    with torch.no_grad():
        z_data = enc.encode_first_stage(x_all)[0]
    stage2 = [
        p
        for n_, p in list(enc.named_parameters()) + list(dec.named_parameters())
        if n_.startswith(("post_", "prior_"))
    ]
    log_gamma = nn.Parameter(torch.tensor(-2.0))
    opt2 = torch.optim.Adam(stage2 + [log_gamma], lr=1e-3)
    d = enc.latent_dim
    for _ in range(second_stage_steps):
        z = z_data[torch.randint(n, (256,), generator=gen)]
        mean, log_var = enc.encode_second_stage(z)
        u = mean + torch.randn(mean.shape, generator=gen) * torch.exp(0.5 * log_var)
        recon = dec.to_first_stage(u)
        nll = ((recon - z) ** 2).sum(1) / (2 * log_gamma.exp()) + d * log_gamma / 2
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1)
        loss = (nll + kl).mean()
        opt2.zero_grad()
        loss.backward()
        opt2.step()
    return enc.eval(), dec.eval()


# Weights below this magnitude are set to 0 in the shipped files.
FLUSH_BELOW = 1e-12


def flush_subnormals(
    state: Dict[str, torch.Tensor], threshold: float = FLUSH_BELOW
) -> Dict[str, torch.Tensor]:
    """Set the floats that weight decay drove towards 0 (|x| < ``threshold``)
    to exactly 0.

    Subnormal weights (|x| < 1.2e-38), and tiny normal ones whose products
    with activations are subnormal, make CPUs compute many times slower (the
    shipped classifier's ``fc1`` had 8318 weights below 1e-30 and ran 3.5x
    slower than with the same number of random weights). With activations
    of order 1 to 100, the outputs change by less than 1e-9.
    """
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            value = torch.where(value.abs() < threshold, torch.zeros_like(value), value)
        out[key] = value
    return out


@torch.no_grad()
def evaluate(
    classifier: DigitsClassifier, generator: DigitsGenerator, seed: int = 0
) -> Dict[str, float]:
    data = load_digits_dataset()
    acc = (classifier(data.test_inputs).argmax(1) == data.test_labels).float().mean()
    z = torch.randn(500, LATENT_DIM, generator=torch.Generator().manual_seed(seed))
    probs = classifier(generator(z)).softmax(1)
    confident = (probs.max(1).values >= 0.9).float().mean()
    classes = torch.bincount(probs.argmax(1), minlength=10)
    return {
        "test_accuracy": float(acc),
        "generator_confident_fraction": float(confident),
        "generator_classes_covered": int((classes > 0).sum()),
    }


def main(argv=None) -> None:
    here = os.path.join(os.path.dirname(__file__), "weights")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=here, help="output folder for .pt files")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 makes runs bit-reproducible across machines)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    clf = train_classifier(args.seed)
    t1 = time.time()
    enc, dec = train_vae(args.seed)
    t2 = time.time()
    figures = evaluate(clf, dec, args.seed)
    sizes = {}
    for name, model in [
        ("digits_classifier", clf),
        ("digits_generator", dec),
        ("digits_encoder", enc),
    ]:
        path = os.path.join(args.out, f"{name}.pt")
        torch.save(flush_subnormals(model.state_dict()), path)
        sizes[name + "_bytes"] = os.path.getsize(path)
    figures.update(sizes)
    figures["classifier_train_seconds"] = round(t1 - t0, 1)
    figures["vae_train_seconds"] = round(t2 - t1, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
