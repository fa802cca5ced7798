"""E-GBAS on the face DCGAN layout (small random DCGANs of the same
architecture), the difference view, calibration that says when it saturates,
and the demo's faces section."""

import json
import warnings

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from captum_inverseset import EGBAS, EGBASWarning
from captum_inverseset.demo_faces import add_faces_section
from captum_inverseset.report import Report
from captum_inverseset.zoo import FaceDCGANGenerator, face_dcgan_available


@pytest.fixture(scope="module")
def small_face():
    torch.manual_seed(0)
    return FaceDCGANGenerator(nz=16, ngf=4).eval()


def _z(seed=0, dim=16):
    return torch.randn(1, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", ["main.1", "main.4"])
def test_face_dcgan_layout_samples_stay_in_region(small_face, layer):
    egbas = EGBAS(small_face, layer)
    z0 = _z()
    result = egbas.sample(z0, 20, mask_kwargs={"n_steps": 30}, step_size=0.1)
    assert result.complete and result.outputs.shape == (20, 3, 64, 64)
    module = small_face.get_submodule(layer)
    captured = []
    handle = module.register_forward_hook(lambda m, a, o: captured.append(o))
    try:
        with torch.no_grad():
            small_face(result.latents)
            small_face(z0)
    finally:
        handle.remove()
    signs, ref = captured[0] > 0, captured[1] > 0
    same = (signs == ref) | ~result.mask
    assert same.flatten(1).all(dim=1).all()
    torch.testing.assert_close(result.outputs, small_face(result.latents))


def test_difference_view_shows_output_minus_query(small_face):
    egbas = EGBAS(small_face, "main.1")
    result = egbas.sample(_z(1), 6, mask_kwargs={"n_steps": 10}, step_size=0.2)
    fig, ax = result.plot(kind="difference", max_samples=4)
    image = ax.get_images()[0]
    data = image.get_array()
    # Four 64x64 tiles of the channel-mean difference, on a symmetric scale.
    expected = (result.outputs[:4] - result.query_output).mean(dim=1)
    # a 2 x 2 grid (the image-grid layout may add caption bands below)
    assert data.shape[1] == 2 * 64 + 4 and data.shape[0] >= 2 * 64 + 1
    torch.testing.assert_close(
        torch.as_tensor(data[:64, :64].filled(float("nan"))),
        expected[0].float(),
    )
    low, high = image.get_clim()
    assert low == -high == -float(expected.abs().max())
    assert image.get_cmap().name == "RdBu_r"
    with pytest.raises(ValueError, match="difference"):
        EGBAS(nn.Sequential(nn.Linear(2, 3)), "0").sample(
            torch.randn(1, 2), 3, mask=torch.ones(3, dtype=torch.bool)
        ).plot(kind="difference")
    plt.close(fig)


def test_sample_captions_mark_only_exceptions(small_face):
    egbas = EGBAS(small_face, "main.1")
    mask = torch.zeros(32, 4, 4, dtype=torch.bool)
    mask[0, :2] = True  # 8 boundaries
    base = egbas.epsilon_sample(_z(2), 9, epsilon=1.0, mask=mask)
    fig, ax = base.plot(max_samples=9)
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "query"
    assert texts[1:] == ["" if bool(f) else "out" for f in base.in_region]
    # Some samples in, some out: the check can fail either way.
    assert "out" in texts and "" in texts
    plt.close(fig)


def _toy():
    # h = z: the region of z0 = (1, 1) on both units is the positive quadrant.
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
        lin.bias.zero_()
    return nn.Sequential(lin, nn.ReLU()), lin


def test_calibrate_epsilon_warns_when_it_saturates():
    gen, lin = _toy()
    egbas = EGBAS(gen, lin)
    z0 = torch.tensor([[1.0, 1.0]])
    full = torch.ones(2, dtype=torch.bool)
    # A range entirely inside the region: every radius passes.
    with pytest.warns(EGBASWarning, match="upper end"):
        eps = egbas.calibrate_epsilon(z0, 0.9, mask=full, epsilon_range=(0.01, 0.5))
    assert 0.4 < eps < 0.5
    # A range entirely outside it: no radius passes.
    with pytest.warns(EGBASWarning, match="lower end"):
        eps = egbas.calibrate_epsilon(z0, 0.99, mask=full, epsilon_range=(5.0, 50.0))
    assert eps == 5.0
    # A range around the answer: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", EGBASWarning)
        eps = egbas.calibrate_epsilon(z0, 0.9, mask=full, epsilon_range=(0.01, 20.0))
    assert 0.5 < eps < 5.0


def test_demo_faces_section(tmp_path, small_face):
    report = Report(str(tmp_path), "test")
    figures = add_faces_section(report, quick=True, generator=small_face)
    assert list(figures) == ["main.1"]
    row = figures["main.1"]
    assert row["egbas_in_region"] == 1.0 and row["layer_units"] == 32 * 4 * 4
    assert 0 < row["mask_size"] < row["layer_units"]
    assert (tmp_path / "faces_main_1.png").exists()
    assert report.results["faces"] == figures
    page = report.write()
    assert "E-GBAS on a pretrained face generator" in open(page).read()
    json.loads((tmp_path / "results.json").read_text())


def test_demo_faces_section_without_the_weights(tmp_path, monkeypatch):
    import captum_inverseset.zoo as zoo

    monkeypatch.setattr(zoo, "face_dcgan_available", lambda: False)
    report = Report(str(tmp_path), "test")
    assert add_faces_section(report) is None
    assert "gan-face-generate" in report.sections[0]["text"]


@pytest.mark.skipif(not face_dcgan_available(), reason="gan-face-generate missing")
def test_pretrained_face_dcgan_default_mask_is_small_and_keeps_the_face():
    from captum_inverseset.zoo import face_dcgan

    gen = face_dcgan()
    egbas = EGBAS(gen, "main.1")
    z0 = gen.random_codes(1, generator=torch.Generator().manual_seed(0))
    mask = egbas.supporting_boundaries(z0, n_steps=40)
    with torch.no_grad():
        target = gen(z0)
        kept = (egbas.masked_output(z0, mask) - target).pow(2).mean()
        none = (egbas.masked_output(z0, torch.zeros_like(mask)) - target).pow(2).mean()
    assert 0 < int(mask.sum()) < mask.numel() // 4
    assert kept < 0.1 * none
