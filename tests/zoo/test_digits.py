import os

import pytest
import torch

from captum_inverseset.zoo import (
    LATENT_DIM,
    digits_classifier,
    digits_encoder,
    digits_generator,
    load_digits_dataset,
    load_weights,
    weights_path,
)


def test_split_is_fixed_and_stratified(digits_data):
    again = load_digits_dataset()
    assert torch.equal(digits_data.test_labels, again.test_labels)
    counts = torch.bincount(digits_data.test_labels, minlength=10)
    assert counts.min() >= 30 and len(digits_data.test_labels) == 359
    assert digits_data.train_inputs.min() >= 0 and digits_data.train_inputs.max() <= 1


def test_classifier_test_accuracy_at_least_97_percent(digits_data):
    model = digits_classifier()
    with torch.no_grad():
        pred = model(digits_data.test_inputs).argmax(1)
    acc = (pred == digits_data.test_labels).float().mean().item()
    assert acc >= 0.97, acc


def test_generator_quality():
    clf, gen = digits_classifier(), digits_generator()
    z = torch.randn(500, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = clf(gen(z)).softmax(1)
    confident = (probs.max(1).values >= 0.9).float().mean().item()
    assert confident >= 0.8, confident
    assert len(probs.argmax(1).unique()) == 10


def test_encoder_shape_and_generator_range():
    enc, gen = digits_encoder(), digits_generator()
    with torch.no_grad():
        x = gen(torch.randn(4, LATENT_DIM))
        assert x.shape == (4, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
        assert enc(x).shape == (4, LATENT_DIM)


def test_weights_small_and_loaded_without_unpickling(tmp_path):
    total = sum(
        os.path.getsize(weights_path(n))
        for n in ("digits_classifier", "digits_generator", "digits_encoder")
    )
    assert total < 5 * 1024 * 1024

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_weights(digits_classifier(pretrained=False), bad)


def test_pretrained_false_gives_fresh_weights():
    a = digits_classifier(pretrained=False).conv1.weight
    b = digits_classifier().conv1.weight
    assert not torch.equal(a, b)


def test_shipped_weights_have_no_subnormal_floats():
    # Subnormal operands (and tiny weights whose products with activations
    # are subnormal) make CPU matmuls several times slower.
    from captum_inverseset.zoo.train import FLUSH_BELOW

    for name in ("digits_classifier", "digits_generator", "digits_encoder"):
        state = torch.load(weights_path(name), weights_only=True)
        for key, value in state.items():
            if value.is_floating_point():
                tiny = (value != 0) & (value.abs() < FLUSH_BELOW)
                assert not tiny.any(), (name, key)
