"""Reproducible training of the shipped digits models.

Usage::

    python -m captum_inverseset.zoo.train [--out DIR] [--seed 0]

Trains the classifier and the VAE (generator = decoder, encoder = encoder mean)
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


def train_vae(seed: int = 0, epochs: int = 400, beta: float = 1.0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = load_digits_dataset()
    enc, dec = DigitsEncoder(), DigitsGenerator()
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(data.train_labels)
    x_all = data.train_inputs
    for _ in range(epochs):
        enc.train()
        dec.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            x = x_all[perm[i : i + 64]]
            mean, log_var = enc.encode(x)
            eps = torch.randn(mean.shape, generator=gen)
            z = mean + eps * torch.exp(0.5 * log_var)
            recon = dec(z)
            rec = F.binary_cross_entropy(recon, x, reduction="sum") / len(x)
            kl = -0.5 * torch.sum(1 + log_var - mean**2 - log_var.exp()) / len(x)
            loss = rec + beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return enc.eval(), dec.eval()


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
    args = parser.parse_args(argv)
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
        torch.save(model.state_dict(), path)
        sizes[name + "_bytes"] = os.path.getsize(path)
    figures.update(sizes)
    figures["classifier_train_seconds"] = round(t1 - t0, 1)
    figures["vae_train_seconds"] = round(t2 - t1, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
