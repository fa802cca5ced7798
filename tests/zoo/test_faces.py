import pytest
import torch

from captum_inverseset.zoo import (
    FaceDCGANGenerator,
    face_dcgan,
    face_dcgan_available,
    face_detector,
    face_detector_available,
)


def test_random_face_dcgan_shapes_and_prior():
    torch.manual_seed(0)
    g = FaceDCGANGenerator(nz=16, ngf=4).eval()
    z = g.random_codes(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 16)
    x = g(z)
    assert x.shape == (3, 3, 64, 64)
    assert x.min() >= 0 and x.max() <= 1
    assert torch.allclose(g(z[:, :, None, None]), x)
    g.output_range = "tanh"
    assert torch.allclose(g(z), 2 * x - 1, atol=1e-6)
    with pytest.raises(ValueError, match="output_range"):
        FaceDCGANGenerator(output_range="rgb")


@pytest.mark.skipif(not face_dcgan_available(), reason="gan-face-generate missing")
def test_pretrained_face_dcgan_loads_weights_only():
    g = face_dcgan()
    assert not g.training
    z = g.random_codes(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = g(z)
    # trained weights: faces are not the near-constant grey of a random init
    assert x.std() > 0.1
    random = face_dcgan(pretrained=False)
    assert not torch.equal(random.main[0].weight, g.main[0].weight)


@pytest.mark.skipif(
    not (face_detector_available() and face_dcgan_available()),
    reason="facenet-pytorch or gan-face-generate missing",
)
def test_pretrained_face_detector_sees_faces_in_the_face_dcgan():
    detector = face_detector()
    assert not detector.training
    g = face_dcgan()
    z = g.random_codes(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        faces = g(z)
        _, landmarks, p_faces = detector(faces)
        _, _, p_noise = detector(
            torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        )
    assert landmarks.shape == (64, 10) and p_faces.shape == (64, 2)
    # trained weights: generated faces score as faces far more than noise does
    assert p_faces[:, 1].mean() > 0.5 > p_noise[:, 1].mean()
