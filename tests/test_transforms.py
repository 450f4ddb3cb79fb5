"""cnncy.transforms against independent numpy computations of torchvision's definitions."""
import numpy as np
import pytest

import cnncy
from cnncy import transforms


def scaled(images):
    """torchvision's ToTensor scaling: float32(x) / 255 in float32."""
    return images.astype(np.float32) / np.float32(255)


@pytest.fixture
def uint8_images(rng):
    return rng.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)


def test_to_tensor_single_images(uint8_images):
    gray, color = uint8_images[0, ..., 0], uint8_images[0]
    out = transforms.ToTensor()(gray)
    assert isinstance(out, cnncy.Tensor) and out.dtype == np.float32 and out.shape == (1, 6, 7)
    np.testing.assert_array_equal(out.numpy()[0], scaled(gray))
    out = transforms.ToTensor()(color)
    assert out.shape == (3, 6, 7) and out.is_contiguous()
    np.testing.assert_array_equal(out.numpy(), scaled(color).transpose(2, 0, 1))


def test_to_tensor_batches(uint8_images):
    gray = uint8_images[..., 0]
    out = transforms.ToTensor().apply_batch(gray)
    assert out.shape == (5, 1, 6, 7)
    np.testing.assert_array_equal(out.numpy()[:, 0], scaled(gray))
    out = transforms.ToTensor().apply_batch(cnncy.from_numpy(uint8_images))
    assert out.shape == (5, 3, 6, 7) and out.is_contiguous()
    np.testing.assert_array_equal(out.numpy(), scaled(uint8_images).transpose(0, 3, 1, 2))


def test_to_tensor_keeps_float_values_and_rejects_bad_shapes():
    image = np.linspace(-1, 3, 12).reshape(3, 4)
    out = transforms.ToTensor()(image)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.numpy()[0], image)
    with pytest.raises(ValueError, match="ToTensor"):
        transforms.ToTensor()(np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="ToTensor"):
        transforms.ToTensor().apply_batch(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("batched", [False, True])
def test_normalize_per_channel(rng, dtype, batched):
    x = rng.standard_normal((4, 3, 5, 6) if batched else (3, 5, 6)).astype(dtype)
    mean, std = (0.1, -0.2, 0.3), (0.5, 2.0, 0.7)
    expected = (x - np.array(mean, dtype).reshape(3, 1, 1)) / np.array(std, dtype).reshape(3, 1, 1)
    normalize = transforms.Normalize(mean, std)
    out = normalize.apply_batch(x) if batched else normalize(cnncy.from_numpy(x))
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out), expected)
    assert isinstance(out, np.ndarray) if batched else isinstance(out, cnncy.Tensor)


def test_normalize_single_value_and_inplace(rng):
    x = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    expected = (x - np.float32(0.5)) / np.float32(0.25)
    t = cnncy.tensor(x)
    assert transforms.Normalize(0.5, 0.25, inplace=True)(t) is t
    np.testing.assert_array_equal(t.numpy(), expected)


def test_normalize_validates():
    with pytest.raises(ValueError, match="std"):
        transforms.Normalize((0.5, 0.5), (1.0, 0.0))
    with pytest.raises(ValueError, match="std evaluated to zero"):
        transforms.Normalize(0.0, 1e-60)(np.ones((1, 2, 2), np.float32))
    with pytest.raises(TypeError, match="float"):
        transforms.Normalize(0.5, 0.5)(np.ones((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        transforms.Normalize((0.5, 0.5), (1.0, 1.0))(np.ones((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        transforms.Normalize(0.5, 0.5)(np.ones((2, 2), np.float32))


def test_compose_and_lambda(uint8_images):
    gray = uint8_images[..., 0]
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    expected = ((scaled(gray) - np.float32(0.1307)) / np.float32(0.3081))[:, None]
    assert pipeline.supports_batch
    np.testing.assert_array_equal(pipeline.apply_batch(gray).numpy(), expected)
    np.testing.assert_array_equal(pipeline(gray[2]).numpy(), expected[2])

    flip = transforms.Lambda(lambda image: image[..., ::-1])
    assert not transforms.Compose([flip, transforms.ToTensor()]).supports_batch
    batched_flip = transforms.Lambda(lambda images: images[..., ::-1], batched=True)
    out = transforms.Compose([batched_flip, transforms.ToTensor()]).apply_batch(gray)
    np.testing.assert_array_equal(out.numpy()[:, 0], scaled(gray)[..., ::-1])
    with pytest.raises(TypeError):
        transforms.Lambda(3)
