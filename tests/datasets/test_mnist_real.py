"""cnncy.datasets.MNIST on the real MNIST files, found in the folder named by the CNNCY_DATA environment variable."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from cnncy import transforms
from cnncy.datasets import MNIST
from cnncy.utils.data import DataLoader

DATA_ROOT = os.environ.get("CNNCY_DATA")
pytestmark = pytest.mark.skipif(not DATA_ROOT, reason="set CNNCY_DATA to the folder holding the MNIST files")

EXPECTED = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def decompressed_content(name):
    for folder in (os.path.join(DATA_ROOT, "MNIST", "raw"), DATA_ROOT):
        for ext in ("", ".gz"):
            path = os.path.join(folder, name + ext)
            if os.path.isfile(path):
                opener = gzip.open if ext else open
                with opener(path, "rb") as f:
                    return f.read()
    raise FileNotFoundError(f"{name} not under {DATA_ROOT}")


@pytest.fixture(scope="module")
def train():
    return MNIST(DATA_ROOT, train=True)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_files_have_the_published_md5(name):
    assert hashlib.md5(decompressed_content(name)).hexdigest() == EXPECTED[name]


def test_train_set(train):
    assert len(train) == 60000
    assert train.data.shape == (60000, 28, 28)
    assert train.data.numpy().tobytes() == decompressed_content("train-images-idx3-ubyte")[16:]
    assert np.bincount(train.targets.numpy(), minlength=10).tolist() == TRAIN_CLASS_COUNTS
    # Mean and std from the histogram of byte values: exact, without a 47M-element float copy.
    histogram = np.bincount(train.data.numpy().ravel(), minlength=256)
    values = np.arange(256) / 255
    mean = (histogram * values).sum() / histogram.sum()
    std = np.sqrt((histogram * (values - mean) ** 2).sum() / histogram.sum())
    assert abs(mean - 0.1307) < 5e-5
    assert abs(std - 0.3081) < 5e-5


def test_test_set():
    test = MNIST(DATA_ROOT, train=False)
    assert len(test) == 10000
    np.testing.assert_array_equal(test.targets.numpy(),
                                  np.frombuffer(decompressed_content("t10k-labels-idx1-ubyte")[8:], np.uint8))


def test_normalized_epoch_covers_the_set():
    normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = MNIST(DATA_ROOT, train=True, transform=normalize)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=0)
    assert len(loader) == 938
    total, count, labels = 0.0, 0, []
    for images, targets in loader:
        total += float(images.numpy().sum(dtype=np.float64))
        count += images.numel()
        labels.append(targets.numpy())
    assert np.bincount(np.concatenate(labels), minlength=10).tolist() == TRAIN_CLASS_COUNTS
    assert abs(total / count) < 1e-3  # normalized with the set's own mean
