"""Faithfulness of Neuron Shapley against the cheap rankings, on real trained
classifiers.

For each classifier, every conv filter is a player. The rankings are
computed on 400 training digits and the filters are removed (mean removal)
from the network evaluated on the 359 held-out test digits; the test
accuracy after removing the top k filters (k = 0..20) is reported for

* Neuron Shapley with ``metric="accuracy"`` and with ``metric="loss"``,
  each given the same wall time (``--seconds``, stopped by ``callback=``);
* Captum's ``LayerConductance`` (summed over space, averaged over examples);
* Grad-CAM's channel weights (``LayerGradientXActivation`` gradients,
  averaged over space and examples);
* the L2 norm of each filter's weights;
* random filters (mean of 20 draws).

Classifiers: the shipped digits CNN (``digits_classifier``, conv1-conv3,
80 filters) and a small residual network (a stem convolution and three
torchvision ``BasicBlock`` s of 16 channels, 112 filters) trained here on
the training digits (seeded, a few seconds); and, when ``ccexam`` is
installed, a real pretrained network nobody here wrote: its MNIST CNN
(``zoo.mnist_cnn``, conv1 and conv2, 96 filters) on the same digits laid out
as MNIST digits (``zoo.digits_to_mnist``). The area under each curve is
the mean test accuracy over k = 1..20 (lower: the ranking found filters the
accuracy depends on). Writes the plot to ``--plot`` and prints one JSON
line. ``--quick`` is a smoke version (the digits CNN only).

    python benchmarks/bench_neuron_shapley_ablation.py [--quick] [--plot PATH]
        [--seconds S] [--models digits_classifier,digits_resnet,ccexam_mnist_cnn]
"""

import argparse
import json
import time
import warnings

import torch
from torch import nn

from captum_inverseset import NeuronShapley
from captum_inverseset.ablation import (
    ablation_curve,
    conductance_channel_scores,
    filter_norm_scores,
    gradcam_channel_scores,
)
from captum_inverseset.zoo import (
    DigitsDataset,
    digits_classifier,
    digits_to_mnist,
    load_digits_dataset,
    mnist_cnn,
    mnist_cnn_available,
)


class DigitsResNet(nn.Module):
    """A stem convolution and three residual blocks on 8x8 digits."""

    def __init__(self, width: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[BasicBlock(width, width) for _ in range(3)])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes)
        )

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def fit(model: nn.Module, x, y, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    """Adam on the cross-entropy, batches of 64 in a seeded order; the model
    in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        model.train()
        for start in range(0, x.shape[0], 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def train_resnet(data, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = DigitsResNet()
    return fit(model, data.train_inputs, data.train_labels, epochs, 3e-3, seed)


def shapley_scores(model, convs, x, y, metric, seconds):
    start = time.perf_counter()

    def stop(stats):
        return time.perf_counter() - start > seconds

    result = NeuronShapley(model, convs).interpret(
        x, target=y, metric=metric, n_permutations=10**6, callback=stop, seed=0
    )
    return result.values.float(), dict(
        permutations=result.n_permutations,
        evaluations=result.n_evaluations,
        seconds=time.perf_counter() - start,
        engine=result.engine,
    )


def per_layer(fn, convs):
    return torch.cat([fn(conv) for conv in convs])


def compare(name, model, convs, data, seconds, ks, n_rank):
    x_rank, y_rank = data.train_inputs[:n_rank], data.train_labels[:n_rank]
    x_test, y_test = data.test_inputs, data.test_labels
    scores, timing = {}, {}
    for metric in ("accuracy", "loss"):
        values, info = shapley_scores(model, convs, x_rank, y_rank, metric, seconds)
        scores[f"shapley_{metric}"] = values
        timing[f"shapley_{metric}"] = info
    start = time.perf_counter()
    scores["conductance"] = per_layer(
        lambda c: conductance_channel_scores(model, c, x_rank, y_rank, n_steps=20),
        convs,
    )
    timing["conductance"] = dict(seconds=time.perf_counter() - start)
    start = time.perf_counter()
    scores["gradcam"] = per_layer(
        lambda c: gradcam_channel_scores(model, c, x_rank, y_rank), convs
    )
    timing["gradcam"] = dict(seconds=time.perf_counter() - start)
    scores["filter_norm"] = filter_norm_scores(convs)
    curve = ablation_curve(
        model, convs, x_test, scores, target=y_test, ks=ks, n_random=20, seed=0
    )
    k_pos = [i for i, k in enumerate(ks) if k > 0]
    auc = {n: float(curve.curve(n)[k_pos].mean()) for n in [*curve.names, "random"]}
    best = min(auc, key=auc.get)
    return curve, dict(
        players=int(scores["filter_norm"].numel()),
        test_accuracy=float(curve.curve("random")[0]),
        ks=list(ks),
        curves={
            n: [round(v, 4) for v in curve.curve(n).tolist()]
            for n in [*curve.names, "random"]
        },  # fmt: skip
        auc_mean_accuracy_k1_to_max=auc,
        best_ranking=best,
        shapley_beats_conductance_and_random={
            m: auc[m] < auc["conductance"] and auc[m] < auc["random"]
            for m in ("shapley_accuracy", "shapley_loss")
        },
        timing=timing,
    )


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False
    )
    for ax, (name, curve) in zip(axes[0], curves.items()):
        curve.plot(plt_fig_axis=(fig, ax), title=name)
        ax.set_ylabel("test accuracy")
        ax.set_xlabel("filters removed (top k of each ranking)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--seconds", type=float, default=None, help="per Shapley estimate (60)"
    )
    parser.add_argument("--plot", default=None, help="write the curves to a PNG")
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated subset of digits_classifier, digits_resnet, "
        "ccexam_mnist_cnn (default: all; --quick: digits_classifier)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    quick = args.quick
    seconds = args.seconds or (2.0 if quick else 60.0)
    ks = (0, 2, 5) if quick else tuple(range(0, 21))
    data = load_digits_dataset()
    chosen = (
        args.models
        or (
            "digits_classifier"
            if quick
            else "digits_classifier,digits_resnet,ccexam_mnist_cnn"
        )
    ).split(",")
    models, datasets = {}, {}
    if "digits_classifier" in chosen:
        models["digits_classifier"] = digits_classifier().eval()
    if "digits_resnet" in chosen:
        models["digits_resnet"] = train_resnet(data, epochs=2 if quick else 15)
    for name in models:
        datasets[name] = data
    if "ccexam_mnist_cnn" in chosen and mnist_cnn_available():
        models["ccexam_mnist_cnn"] = mnist_cnn()
        datasets["ccexam_mnist_cnn"] = DigitsDataset(
            digits_to_mnist(data.train_inputs),
            data.train_labels,
            digits_to_mnist(data.test_inputs),
            data.test_labels,
        )
    figures = {"quick": quick, "shapley_seconds": seconds}
    curves = {}
    for name, model in models.items():
        for p in model.parameters():
            p.requires_grad_(False)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        curve, figures[name] = compare(
            name, model, convs, datasets[name], seconds, ks, 100 if quick else 400
        )
        curves[f"{name} ({figures[name]['players']} filters)"] = curve
    if args.plot:
        plot(curves, args.plot)
        figures["plot"] = args.plot
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
