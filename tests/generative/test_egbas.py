import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_inverseset._core.generative.egbas import EGBAS, EGBASResult, EGBASWarning
from captum_inverseset._utils.hooks import capture_layer, count_hooks
from captum_inverseset.zoo import LATENT_DIM, FaceDCGANGenerator, digits_generator


class ReLUMLPGenerator(nn.Module):
    """Latent (4,) -> (6,), two hidden ReLU layers, pre-activations fc1, fc2."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.act2 = nn.ReLU()
        self.out = nn.Linear(hidden, 6)

    def forward(self, z):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(z)))))


class DCGANGenerator(nn.Module):
    """DCGAN-style: latent (8, 1, 1) -> (1, 16, 16) image, transposed convs."""

    def __init__(self, nz: int = 8, ngf: int = 8) -> None:
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(ngf * 2)
        self.act1 = nn.ReLU()
        self.deconv2 = nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ngf)
        self.act2 = nn.ReLU()
        self.deconv3 = nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False)
        self.out = nn.Tanh()

    def forward(self, z):
        h = self.act1(self.bn1(self.deconv1(z)))
        h = self.act2(self.bn2(self.deconv2(h)))
        return self.out(self.deconv3(h))


def sign_patterns(generator, layer, latents):
    """Independent recomputation: plain forward, layer output > 0."""
    with torch.no_grad(), capture_layer(layer) as cap:
        generator(latents)
    return cap.output > 0


def same_pattern_on_mask(generator, layer, latents, z0, mask):
    pattern = sign_patterns(generator, layer, latents)
    ref = sign_patterns(generator, layer, z0)
    return ((pattern == ref) | ~mask).flatten(1).all(dim=1)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return ReLUMLPGenerator().eval()


@pytest.fixture
def dcgan():
    torch.manual_seed(0)
    return DCGANGenerator().eval()


def test_mlp_samples_keep_sign_pattern_on_mask(mlp):
    z0 = torch.randn(1, 4)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[::2] = True
    egbas = EGBAS(mlp, mlp.fc2)
    result = egbas.sample(z0, n_samples=60, mask=mask, step_size=0.3, seed=1)
    assert isinstance(result, EGBASResult)
    assert result.complete and result.latents.shape == (60, 4)
    assert result.in_region.all()
    assert same_pattern_on_mask(mlp, mlp.fc2, result.latents, z0, mask).all()
    # The exploration is not trivial: samples leave the step-size ball.
    assert result.mean_distance_to_query > 0.3
    # Outputs are the generator's outputs of the latents.
    torch.testing.assert_close(result.outputs, mlp(result.latents))


def test_conv_generator_samples_keep_sign_pattern(dcgan):
    z0 = torch.randn(8, 1, 1)  # latent shape (8, 1, 1), batch added
    egbas = EGBAS(dcgan, "deconv2")
    mask = torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.1
    result = egbas.sample(z0, n_samples=50, mask=mask, step_size=0.05, seed=0)
    assert result.latents.shape == (50, 8, 1, 1)
    assert result.outputs.shape == (50, 1, 16, 16)
    inside = same_pattern_on_mask(
        dcgan, dcgan.deconv2, result.latents, z0.unsqueeze(0), mask
    )
    assert inside.all() and result.in_region.all()


def test_epsilon_in_region_matches_recomputation(dcgan):
    z0 = torch.randn(1, 8, 1, 1)
    egbas = EGBAS(dcgan, dcgan.deconv2)
    mask = torch.ones(8, 8, 8, dtype=torch.bool)
    baseline = egbas.epsilon_sample(z0, n_samples=200, epsilon=0.01, mask=mask, seed=3)
    expected = same_pattern_on_mask(dcgan, dcgan.deconv2, baseline.latents, z0, mask)
    assert torch.equal(baseline.in_region, expected)
    # The check is meaningful: some samples are in, some out.
    assert 0 < int(expected.sum()) < 200
    assert baseline.acceptance_rate == pytest.approx(float(expected.float().mean()))
    dist = (baseline.latents - z0).flatten(1).norm(dim=1)
    assert (dist <= 0.01 + 1e-6).all()
    assert (baseline.tree == -1).all()


def test_full_mask_stays_in_exact_linear_region():
    """One hidden ReLU layer: all units of fc1 = the linear region, where G is
    affine, so G(z) = G(z0) + J(z0) (z - z0) exactly for every sample."""
    torch.manual_seed(1)
    gen = nn.Sequential(nn.Linear(3, 24), nn.ReLU(), nn.Linear(24, 5)).eval()
    z0 = torch.randn(1, 3)
    egbas = EGBAS(gen, gen[0])
    full = torch.ones(24, dtype=torch.bool)
    result = egbas.sample(z0, n_samples=80, mask=full, step_size=0.1, seed=0)
    jac = torch.autograd.functional.jacobian(lambda z: gen(z)[0], z0)[:, 0, :]

    def affine_error(latents):
        pred = gen(z0) + (latents - z0) @ jac.T
        return (gen(latents) - pred).abs().max(dim=1).values.detach()

    assert result.complete
    assert (affine_error(result.latents) < 1e-4).all()
    # The same prediction fails outside the region, so the check can fail.
    baseline = egbas.epsilon_sample(z0, n_samples=300, epsilon=2.0, mask=full)
    outside = ~baseline.in_region
    assert outside.any()
    assert (affine_error(baseline.latents[outside]) > 1e-4).any()
    assert (affine_error(baseline.latents[baseline.in_region]) < 1e-4).all()


def test_tree_structure_and_step(mlp):
    egbas = EGBAS(mlp, mlp.fc1)
    z0 = torch.randn(1, 4)
    result = egbas.sample(
        z0, n_samples=40, mask=torch.ones(16, dtype=torch.bool), step_size=0.2
    )
    parents = result.tree
    assert parents.dtype == torch.long and parents.shape == (40,)
    assert (parents >= -1).all()
    assert (parents < torch.arange(40)).all()  # parents are added before children
    nodes = torch.cat([z0, result.latents], dim=0)
    edge = (nodes[1:] - nodes[parents + 1]).norm(dim=1)
    assert (edge <= 0.2 + 1e-5).all() and (edge > 0).all()
    assert (parents >= 0).any()  # the tree is deeper than one level


def test_latent_bounds(mlp):
    egbas = EGBAS(mlp, mlp.fc1)
    z0 = torch.zeros(1, 4) + 0.1
    empty = torch.zeros(16, dtype=torch.bool)
    with pytest.warns(EGBASWarning, match="all False"):
        result = egbas.sample(
            z0, n_samples=50, mask=empty, step_size=0.3, latent_bound=0.8
        )
    assert (result.latents.norm(dim=1) <= 0.8 + 1e-6).all()
    assert result.complete
    z1 = torch.full((1, 4), 1.0)  # norm 2, typical shell of N(0, I_4)
    with pytest.warns(EGBASWarning):
        typical = egbas.sample(
            z1, n_samples=50, mask=empty, step_size=0.5, latent_bound="typical"
        )
    norms = typical.latents.norm(dim=1)
    centre, half = (4 - 0.5) ** 0.5, 3 / 2**0.5
    assert (norms <= centre + half + 1e-5).all()
    assert (norms >= max(centre - half, 0.0) - 1e-5).all()
    full = torch.ones(16, dtype=torch.bool)
    with pytest.raises(ValueError, match="latent_bound"):
        egbas.sample(z1, mask=full, latent_bound=1.0)
    with pytest.raises(ValueError, match="latent_bound"):
        egbas.sample(z1, mask=full, latent_bound="prior")


def test_tree_that_cannot_grow_is_flagged_not_padded():
    # h = (z_1, -z_1): at z_1 = 0 both units are <= 0, and every other latent
    # turns one of them on, so the region of z0 = 0 is a hyperplane.
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    gen = nn.Sequential(layer, nn.ReLU())
    egbas = EGBAS(gen, layer)
    with pytest.warns(EGBASWarning, match="found 0 of 20"):
        result = egbas.sample(
            torch.zeros(1, 2),
            n_samples=20,
            mask=torch.ones(2, dtype=torch.bool),
            max_iterations=5,
        )
    assert not result.complete
    assert result.n_samples == 0 and result.latents.shape == (0, 2)
    # 5 passes of 10 candidates (half the 20 samples): new ones, then
    # their retries at half and a quarter step, then new ones again.
    assert result.n_passes == 5 and result.n_proposed == 5 * 10
    assert result.in_region.shape == (0,)


def test_reproducible_and_seed_dependent(mlp):
    egbas = EGBAS(mlp, mlp.fc2)
    z0 = torch.randn(1, 4)
    mask = torch.ones(16, dtype=torch.bool)
    a = egbas.sample(z0, n_samples=30, mask=mask, step_size=0.2, seed=5)
    b = egbas.sample(z0, n_samples=30, mask=mask, step_size=0.2, seed=5)
    c = egbas.sample(z0, n_samples=30, mask=mask, step_size=0.2, seed=6)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.tree, b.tree)
    assert not torch.equal(a.latents, c.latents)


def test_generator_left_as_found(mlp):
    mlp.train()
    mlp.fc1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    egbas = EGBAS(mlp, mlp.fc2)
    egbas.sample(
        torch.randn(1, 4), n_samples=10, step_size=0.1, mask_kwargs={"n_steps": 5}
    )
    assert mlp.training and all(m.training for m in mlp.modules())
    assert not mlp.fc1.weight.requires_grad and mlp.fc2.weight.requires_grad
    assert count_hooks(mlp) == 0
    for k, v in mlp.state_dict().items():
        assert torch.equal(v, before[k])


def test_argument_errors(mlp):
    egbas = EGBAS(mlp, mlp.fc1)
    z0 = torch.randn(1, 4)
    mask = torch.ones(16, dtype=torch.bool)
    # No declared latent shape: the generator's own error propagates unchanged.
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        egbas.sample(torch.randn(1, 5), mask=mask)
    with pytest.raises(ValueError, match="layer"):
        EGBAS(mlp, nn.Linear(4, 16))
    with pytest.raises(ValueError, match="layer"):
        EGBAS(mlp, "no_such_layer")
    with pytest.raises(ValueError, match="n_samples"):
        egbas.sample(z0, n_samples=0, mask=mask)
    with pytest.raises(ValueError, match="n_samples"):
        egbas.epsilon_sample(z0, n_samples=0, mask=mask)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="step_size"):
            egbas.sample(z0, mask=mask, step_size=bad)
        with pytest.raises(ValueError, match="epsilon"):
            egbas.epsilon_sample(z0, mask=mask, epsilon=bad)
    with pytest.raises(ValueError, match="mask"):
        egbas.sample(z0, mask=torch.ones(15, dtype=torch.bool))
    with pytest.raises(ValueError, match="sparsity"):
        egbas.supporting_boundaries(z0, sparsity=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        egbas.supporting_boundaries(z0, threshold=1.0)
    with pytest.raises(ValueError, match="z0"):
        egbas.sample(torch.tensor([[1, 2, 3, 4]]), mask=mask)
    with pytest.warns(EGBASWarning, match="all False"):
        res = egbas.epsilon_sample(z0, n_samples=20, mask=torch.zeros(16), epsilon=5)
    assert res.in_region.all()  # no constraint: everything is in the region
    assert count_hooks(mlp) == 0


def test_layer_error_propagates(mlp):
    class Boom(RuntimeError):
        pass

    def boom(module, args):
        raise Boom("inside")

    handle = mlp.fc2.register_forward_pre_hook(boom)
    try:
        with pytest.raises(Boom):
            EGBAS(mlp, mlp.fc2).attribute(torch.randn(2, 4), n_steps=2)
    finally:
        handle.remove()
    assert count_hooks(mlp) == 0


def test_attribute_shapes_and_masked_output(dcgan):
    egbas = EGBAS(dcgan, dcgan.deconv1)
    theta = egbas.attribute(torch.randn(3, 8, 1, 1), n_steps=10, seed=0)
    assert theta.shape == (3, 16, 4, 4)
    assert ((theta >= 0) & (theta <= 1)).all()
    z0 = torch.randn(2, 8, 1, 1)
    full = torch.ones(16, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(egbas.masked_output(z0, full), dcgan(z0))
    with torch.no_grad(), capture_layer(dcgan.act1) as cap:
        zeroed = egbas.masked_output(z0, ~full)
    # Units outside the mask are 0 before the activation, hence after it.
    assert torch.equal(cap.output, torch.zeros_like(cap.output))
    assert zeroed.shape == (2, 1, 16, 16)


@pytest.fixture(scope="module")
def digits():
    return digits_generator()


def test_mask_optimisation_on_digits_generator(digits):
    egbas = EGBAS(digits, digits.fc2)
    z0 = torch.randn(1, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = digits(z0)
    sizes, errors = [], []
    for sparsity in (0.1, 0.5, 2.0):
        mask = egbas.supporting_boundaries(z0, sparsity=sparsity, n_steps=150)
        assert mask.dtype == torch.bool and mask.shape == (512,)
        sizes.append(int(mask.sum()))
        errors.append(float((egbas.masked_output(z0, mask) - target).pow(2).mean()))
    empty_error = float(
        (egbas.masked_output(z0, torch.zeros(512, dtype=torch.bool)) - target)
        .pow(2)
        .mean()
    )
    assert sizes[0] > sizes[1] > sizes[2] > 0
    assert sizes[1] < 512 // 2  # much smaller than the layer
    assert errors[1] < 0.1 * empty_error  # and the output is kept


def _mlp(out_act):
    # The generator of issue 15 whose default mask was empty (0 of 64 units).
    return nn.Sequential(
        nn.Linear(8, 32),
        nn.ReLU(),
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Linear(64, 16),
        out_act,
    )


def _conv(out_act):
    return nn.Sequential(
        nn.Unflatten(1, (8, 1, 1)),
        nn.ConvTranspose2d(8, 16, 4, 1, 0),
        nn.BatchNorm2d(16),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(16, 8, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, 2, 1),
        out_act,
    )


RANDOM_GENERATORS = {
    "mlp-sigmoid": (lambda: _mlp(nn.Sigmoid()), "2", 8),
    "mlp-tanh": (lambda: _mlp(nn.Tanh()), "2", 8),
    "conv-sigmoid": (lambda: _conv(nn.Sigmoid()), "2", 8),
    "conv-tanh": (lambda: _conv(nn.Tanh()), "4", 8),
    "face-dcgan-main.1": (lambda: FaceDCGANGenerator(nz=16, ngf=4), "main.1", 16),
    "face-dcgan-main.4": (lambda: FaceDCGANGenerator(nz=16, ngf=4), "main.4", 16),
}


@pytest.mark.parametrize("name", sorted(RANDOM_GENERATORS))
@pytest.mark.parametrize("seed", [0, 1])
def test_default_mask_neither_empty_nor_full(name, seed):
    """Default arguments on random generators of any output range: some but
    not all units support the output, and the kept units reproduce it."""
    make, layer, dim = RANDOM_GENERATORS[name]
    torch.manual_seed(seed)
    gen = make().eval()
    egbas = EGBAS(gen, layer)
    z0 = torch.randn(1, dim, generator=torch.Generator().manual_seed(seed))
    mask = egbas.supporting_boundaries(z0, n_steps=100)
    with torch.no_grad():
        target = gen(z0)
        kept = (egbas.masked_output(z0, mask) - target).pow(2).mean()
        none = (egbas.masked_output(z0, torch.zeros_like(mask)) - target).pow(2).mean()
    assert none > 0  # the output does change when units are masked
    assert 0 < int(mask.sum()) < mask.numel()
    assert kept < 0.1 * none


def test_mask_does_not_depend_on_output_scale():
    torch.manual_seed(0)
    gen = _mlp(nn.Sigmoid()).eval()

    class Scaled(nn.Module):
        def __init__(self, inner, scale):
            super().__init__()
            self.inner, self.scale = inner, scale

        def forward(self, z):
            return self.inner(z) * self.scale

    z0 = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    theta = EGBAS(gen, gen[2]).attribute(z0, n_steps=60)
    # Powers of two scale every error exactly: the same optimisation, bit for bit.
    for scale in (2.0**-10, 2.0**10):
        wrapped = Scaled(gen, scale)
        assert torch.equal(EGBAS(wrapped, gen[2]).attribute(z0, n_steps=60), theta)
    # The face DCGAN's [0, 1] and [-1, 1] outputs are the same up to G -> 2G - 1.
    torch.manual_seed(0)
    face = FaceDCGANGenerator(nz=16, ngf=4).eval()
    z = torch.randn(1, 16, generator=torch.Generator().manual_seed(1))
    unit = EGBAS(face, "main.1").supporting_boundaries(z, n_steps=60)
    face.output_range = "tanh"
    tanh = EGBAS(face, "main.1").supporting_boundaries(z, n_steps=60)
    assert (unit == tanh).float().mean() > 0.99


def test_layer_the_output_ignores_warns_and_keeps_nothing():
    class SideBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Linear(4, 6)
            self.side = nn.Linear(4, 3)

        def forward(self, z):
            self.side(z)  # computed, never used
            return self.main(z)

    gen = SideBranch()
    with pytest.warns(EGBASWarning, match="leaves the output unchanged"):
        theta = EGBAS(gen, gen.side).attribute(torch.randn(2, 4), n_steps=5)
    assert torch.equal(theta, torch.zeros(2, 3))


def test_mask_optimisation_seeded_and_global_rng_untouched(mlp):
    egbas = EGBAS(mlp, mlp.fc2)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = egbas.attribute(z, n_steps=20, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = egbas.attribute(z, n_steps=20, seed=3)
    c = egbas.attribute(z, n_steps=20, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Queries are independent problems: each one's gates only see its own loss,
    # so a query optimised alone converges to the same units.
    alone = egbas.attribute(z[:1], n_steps=200, seed=3)
    both = egbas.attribute(z, n_steps=200, seed=3)
    assert ((alone[0] > 0.5) == (both[0] > 0.5)).float().mean() >= 0.9


def test_attribute_accepts_a_dataloader(mlp):
    from torch.utils.data import DataLoader, TensorDataset

    egbas = EGBAS(mlp, mlp.fc2)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    one_batch = DataLoader(TensorDataset(z), batch_size=6)
    torch.testing.assert_close(
        egbas.attribute(one_batch, n_steps=10), egbas.attribute(z, n_steps=10)
    )
    pairs = DataLoader(TensorDataset(z, torch.arange(6)), batch_size=4)
    theta = egbas.attribute(pairs, n_steps=10)
    assert theta.shape == (6, 16)
    assert torch.equal(theta, egbas.attribute(pairs, n_steps=10))
    with pytest.raises(ValueError, match="inputs"):
        egbas.attribute([z], n_steps=2)


def test_digits_sample_and_baseline_end_to_end(digits):
    egbas = EGBAS(digits, "deconv1")
    z0 = torch.randn(LATENT_DIM, generator=torch.Generator().manual_seed(1))
    result = egbas.sample(
        z0, n_samples=40, step_size=0.3, mask_kwargs={"n_steps": 60, "sparsity": 0.1}
    )
    assert result.mask.shape == (16, 8, 8) and 0 < result.mask_size < 1024
    assert same_pattern_on_mask(
        digits, digits.deconv1, result.latents, z0.unsqueeze(0), result.mask
    ).all()
    baseline = egbas.epsilon_sample(z0, n_samples=40, epsilon=1.0, mask=result.mask)
    expected = same_pattern_on_mask(
        digits, digits.deconv1, baseline.latents, z0.unsqueeze(0), result.mask
    )
    assert torch.equal(baseline.in_region, expected)
    summary = result.summary()
    assert summary["acceptance_rate"] == 1.0 and summary["n_samples"] == 40
    assert summary["mask_size"] == result.mask_size
    assert summary["output_diversity"] > 0


def test_result_plot_save_load(tmp_path, dcgan):
    egbas = EGBAS(dcgan, dcgan.deconv2)
    z0 = torch.randn(1, 8, 1, 1)
    mask = torch.zeros(8, 8, 8, dtype=torch.bool)
    mask[0] = True
    result = egbas.sample(z0, n_samples=12, mask=mask, step_size=0.05)
    fig, ax = result.plot()
    assert ax.get_title().startswith("egbas: 12 samples")
    import matplotlib.pyplot as plt

    fig2, axes = plt.subplots(1, 2)
    out = result.plot(kind="tree", plt_fig_axis=(fig2, axes[1]))
    assert out == (fig2, axes[1]) and len(axes[1].lines) == 12  # one per edge
    with pytest.raises(ValueError, match="kind"):
        result.plot(kind="nope")
    path = str(tmp_path / "egbas.pt")
    result.save(path)
    loaded = EGBASResult.load(path)
    assert torch.equal(loaded.latents, result.latents)
    assert torch.equal(loaded.tree, result.tree)
    assert torch.equal(loaded.mask, result.mask)
    assert loaded.method == "egbas" and loaded.complete is True
    assert loaded.summary() == result.summary()


def test_public_api_follows_captum(mlp):
    from captum.attr import LayerAttribution

    import captum_inverseset

    assert "EGBAS" in captum_inverseset.__all__
    assert captum_inverseset.EGBAS is EGBAS
    assert issubclass(EGBAS, LayerAttribution)
    # attribute carries Captum's usage logging; internal calls bypass it.
    assert EGBAS.attribute is not EGBAS.attribute.__wrapped__
    egbas = EGBAS(mlp, mlp.fc1)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    theta = egbas.attribute(z, n_steps=4, seed=1)
    # Captum's contract: a tensor of the layer's shape, not a result object.
    assert type(theta) is torch.Tensor and theta.shape == (3, 16)
    assert torch.equal(EGBAS.attribute.__wrapped__(egbas, z, n_steps=4, seed=1), theta)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    latent_dim=st.integers(1, 5),
    keep_fraction=st.floats(0.05, 1.0),
    step_size=st.floats(0.01, 1.0),
)
def test_property_every_sample_in_region(seed, latent_dim, keep_fraction, step_size):
    torch.manual_seed(seed)
    gen = nn.Sequential(
        nn.Linear(latent_dim, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU()
    ).eval()
    z0 = torch.randn(1, latent_dim)
    mask = torch.rand(10) < keep_fraction
    mask[0] = True
    egbas = EGBAS(gen, gen[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EGBASWarning)  # a tiny region may stop
        result = egbas.sample(
            z0, n_samples=20, mask=mask, step_size=step_size, max_iterations=20
        )
    assert result.n_samples <= 20
    assert result.complete == (result.n_samples == 20)
    if result.n_samples:
        assert same_pattern_on_mask(gen, gen[2], result.latents, z0, mask).all()


def test_calibrate_epsilon_brackets_target_acceptance(mlp):
    z0 = torch.randn(1, 4, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(16, dtype=torch.bool)
    egbas = EGBAS(mlp, mlp.fc2)
    eps = egbas.calibrate_epsilon(z0, 0.9, mask=mask, n_samples=300, seed=0)
    at = egbas.epsilon_sample(z0, n_samples=300, epsilon=eps, mask=mask, seed=0)
    wider = egbas.epsilon_sample(z0, 300, epsilon=4 * eps, mask=mask, seed=0)
    assert at.acceptance_rate >= 0.9
    assert wider.acceptance_rate < 0.9
    with pytest.raises(ValueError, match="target_acceptance"):
        egbas.calibrate_epsilon(z0, 1.5, mask=mask)
    with pytest.raises(ValueError, match="epsilon_range"):
        egbas.calibrate_epsilon(z0, mask=mask, epsilon_range=(2.0, 1.0))
