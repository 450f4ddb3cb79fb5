"""cnncy.datasets.MNIST on tiny IDX files written by the tests, and its download from a local HTTP server."""
import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

import cnncy
from cnncy import transforms
from cnncy.datasets import MNIST
from cnncy.datasets import mnist as mnist_module
from cnncy.utils.data import DataLoader, Subset

SIZES = {"train": 6, "t10k": 4}
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx_bytes(magic, shape, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in shape) + payload


def images_file(images, magic=0x803, shape=None):
    return idx_bytes(magic, shape or images.shape, images.tobytes())


def labels_file(labels, magic=0x801):
    return idx_bytes(magic, labels.shape, labels.astype(np.uint8).tobytes())


@pytest.fixture
def tiny():
    """Pixel and label arrays for both splits plus the IDX bytes of the four files."""
    rng = np.random.default_rng(7)
    arrays, contents = {}, {}
    for split, n in SIZES.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        arrays[split] = (images, labels)
        contents[f"{split}-images-idx3-ubyte"] = images_file(images)
        contents[f"{split}-labels-idx1-ubyte"] = labels_file(labels)
    return arrays, contents


def write_files(folder, contents, compress):
    os.makedirs(folder, exist_ok=True)
    for name, content in contents.items():
        if compress:
            with open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(gzip.compress(content))
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(content)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["root", "root/MNIST/raw"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_reads_idx_files(tmp_path, tiny, compress, layout, train):
    arrays, contents = tiny
    folder = tmp_path if layout == "root" else tmp_path / "MNIST" / "raw"
    write_files(folder, contents, compress)
    ds = MNIST(str(tmp_path), train=train)
    images, labels = arrays["train" if train else "t10k"]
    assert len(ds) == len(labels)
    assert ds.data.dtype == np.uint8 and ds.data.shape == images.shape
    assert ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.data.numpy(), images)
    np.testing.assert_array_equal(ds.targets.numpy(), labels)
    image, label = ds[1]
    assert isinstance(image, cnncy.Tensor) and image.dtype == np.float32 and image.shape == (1, 28, 28)
    np.testing.assert_array_equal(image.numpy()[0], images[1].astype(np.float32) / np.float32(255))
    assert type(label) is int and label == labels[1]


def test_accepts_pathlike_root(tmp_path, tiny):
    write_files(tmp_path, tiny[1], compress=True)
    assert len(MNIST(tmp_path, train=False)) == SIZES["t10k"]


def test_transform_receives_uint8_image_and_target_transform_the_int(tmp_path, tiny):
    write_files(tmp_path, tiny[1], compress=False)
    seen = []
    ds = MNIST(tmp_path, transform=lambda image: seen.append(image) or "img", target_transform=lambda y: y + 100)
    image, label = ds[2]
    assert image == "img"
    assert seen[0].dtype == np.uint8 and seen[0].shape == (28, 28)
    assert label == tiny[0]["train"][1][2] + 100


def normalized_reference(images, mean, std):
    """Independent computation of ToTensor + Normalize on uint8 images (B, 28, 28)."""
    scaled = images.astype(np.float32) / np.float32(255)
    return ((scaled - np.float32(mean)) / np.float32(std))[:, None]


def test_get_batch_matches_samples(tmp_path, tiny):
    write_files(tmp_path, tiny[1], compress=False)
    images, labels = tiny[0]["train"]
    indices = np.array([4, 0, 4, 2])
    plain = MNIST(tmp_path)
    batch_images, batch_labels = plain.get_batch(indices)
    assert batch_images.shape == (4, 1, 28, 28) and batch_images.dtype == np.float32
    assert batch_labels.dtype == np.int64
    np.testing.assert_array_equal(batch_images.numpy(), images[indices][:, None].astype(np.float32) / 255)
    np.testing.assert_array_equal(batch_labels.numpy(), labels[indices])

    normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    batch_images, _ = MNIST(tmp_path, transform=normalize).get_batch(indices)
    np.testing.assert_array_equal(batch_images.numpy(), normalized_reference(images[indices], 0.1307, 0.3081))


def test_get_batch_applies_unbatched_transforms_per_image(tmp_path, tiny):
    write_files(tmp_path, tiny[1], compress=False)
    images, labels = tiny[0]["train"]
    ds = MNIST(tmp_path, transform=lambda image: image[:2, :3].astype(np.float64),
               target_transform=lambda y: float(y) / 2)
    batch_images, batch_labels = ds.get_batch([3, 1])
    np.testing.assert_array_equal(batch_images.numpy(), images[[3, 1], :2, :3])
    np.testing.assert_array_equal(batch_labels.numpy(), labels[[3, 1]] / 2)


def test_dataloader_over_mnist_and_subset(tmp_path, tiny):
    write_files(tmp_path, tiny[1], compress=True)
    images, labels = tiny[0]["train"]
    ds = MNIST(tmp_path, transform=transforms.ToTensor())
    batches = list(DataLoader(ds, batch_size=4))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 1, 28, 28), (2, 1, 28, 28)]
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), labels)

    subset = Subset(ds, [5, 1, 3])
    (x, y), = DataLoader(subset, batch_size=3)
    np.testing.assert_array_equal(x.numpy()[:, 0], images[[5, 1, 3]].astype(np.float32) / 255)
    np.testing.assert_array_equal(y.numpy(), labels[[5, 1, 3]])


# ----------------------------------------------------------------- damaged files

def damaged_images(images):
    return {
        "bad magic": (images_file(images, magic=0x801), "bad magic number"),
        "wrong dims": (idx_bytes(0x803, (6, 28, 27), images.tobytes()[:6 * 28 * 27]), "expected 28x28"),
        "truncated": (images_file(images)[:-5], "truncated"),
        "short header": (images_file(images)[:10], "truncated"),
        "trailing bytes": (images_file(images) + b"\0\0", "unexpected bytes"),
        "count mismatch": (images_file(images[:5]), "labels"),
    }


@pytest.mark.parametrize("case", ["bad magic", "wrong dims", "truncated", "short header", "trailing bytes",
                                  "count mismatch"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_damaged_images_file_is_reported(tmp_path, tiny, case, compress):
    arrays, contents = tiny
    content, problem = damaged_images(arrays["train"][0])[case]
    write_files(tmp_path, {**contents, "train-images-idx3-ubyte": content}, compress)
    with pytest.raises(RuntimeError, match=problem) as error:
        MNIST(tmp_path)
    assert "train-images-idx3-ubyte" in str(error.value)


@pytest.mark.parametrize("content, problem", [
    (labels_file(np.zeros(6), magic=0x803), "bad magic number"),
    (labels_file(np.zeros(6))[:-1], "truncated"),
    (labels_file(np.array([0, 1, 2, 3, 4, 10])), "out of range"),
], ids=["bad magic", "truncated", "label out of range"])
def test_damaged_labels_file_is_reported(tmp_path, tiny, content, problem):
    write_files(tmp_path, {**tiny[1], "train-labels-idx1-ubyte": content}, compress=False)
    with pytest.raises(RuntimeError, match=problem) as error:
        MNIST(tmp_path)
    assert "train-labels-idx1-ubyte" in str(error.value)


def test_corrupt_gzip_is_reported(tmp_path, tiny):
    write_files(tmp_path, tiny[1], compress=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(RuntimeError, match="gzip") as error:
        MNIST(tmp_path, train=False)
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)


def test_missing_file_is_reported(tmp_path, tiny):
    contents = dict(tiny[1])
    del contents["t10k-labels-idx1-ubyte"]
    write_files(tmp_path, contents, compress=False)
    assert len(MNIST(tmp_path, train=True)) == SIZES["train"]
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*download=True"):
        MNIST(tmp_path, train=False)


# ----------------------------------------------------------------- download

class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, tiny, monkeypatch):
    """A local HTTP server with mirror folders: good/, bad/ (wrong content), notgz/; missing/ answers 404."""
    served = tmp_path / "served"
    contents = tiny[1]
    write_files(served / "good", contents, compress=True)
    corrupted = {name: content[:-1] + bytes([content[-1] ^ 1]) for name, content in contents.items()}
    write_files(served / "bad", corrupted, compress=True)
    os.makedirs(served / "notgz")
    for name, content in contents.items():
        (served / "notgz" / (name + ".gz")).write_bytes(content)
    monkeypatch.setattr(MNIST, "md5s", {name: hashlib.md5(contents[name]).hexdigest() for name in NAMES})
    handler = functools.partial(RecordingHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd, base
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def assert_only_final_files(folder, expected_names):
    assert sorted(os.listdir(folder)) == sorted(expected_names)


def test_download_from_first_mirror(tmp_path, tiny, server, monkeypatch):
    httpd, base = server
    monkeypatch.setattr(MNIST, "mirrors", [base + "good/"])
    root = tmp_path / "data"
    ds = MNIST(root, train=False, download=True)
    np.testing.assert_array_equal(ds.data.numpy(), tiny[0]["t10k"][0])
    assert_only_final_files(root / "MNIST" / "raw", NAMES)
    assert sorted(httpd.requests) == sorted(f"/good/{name}.gz" for name in NAMES)

    httpd.requests.clear()
    assert len(MNIST(root, train=True, download=True)) == SIZES["train"]
    assert httpd.requests == []  # every file is present and valid: nothing is fetched again


@pytest.mark.parametrize("first", ["missing", "bad", "notgz"])
def test_download_falls_back_to_next_mirror(tmp_path, tiny, server, monkeypatch, first):
    httpd, base = server
    monkeypatch.setattr(MNIST, "mirrors", [base + first + "/", base + "good/"])
    ds = MNIST(tmp_path, train=True, download=True)
    np.testing.assert_array_equal(ds.targets.numpy(), tiny[0]["train"][1])
    assert_only_final_files(tmp_path / "MNIST" / "raw", NAMES)
    assert httpd.requests[:2] == [f"/{first}/train-images-idx3-ubyte.gz", "/good/train-images-idx3-ubyte.gz"]


def test_download_fails_when_every_mirror_fails(tmp_path, server, monkeypatch):
    _, base = server
    monkeypatch.setattr(MNIST, "mirrors", [base + "missing/", base + "bad/", base + "notgz/"])
    with pytest.raises(RuntimeError) as error:
        MNIST(tmp_path, download=True)
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message
    assert f"{base}missing/train-images-idx3-ubyte.gz: HTTP Error 404" in message
    assert f"{base}bad/train-images-idx3-ubyte.gz: md5 mismatch" in message
    assert f"{base}notgz/train-images-idx3-ubyte.gz: Not a gzipped file" in message
    assert_only_final_files(tmp_path / "MNIST" / "raw", [])


def test_download_replaces_invalid_file(tmp_path, tiny, server, monkeypatch):
    _, base = server
    monkeypatch.setattr(MNIST, "mirrors", [base + "good/"])
    raw = tmp_path / "MNIST" / "raw"
    write_files(raw, {"train-labels-idx1-ubyte": labels_file(np.zeros(6))}, compress=False)
    ds = MNIST(tmp_path, download=True)
    np.testing.assert_array_equal(ds.targets.numpy(), tiny[0]["train"][1])
    assert_only_final_files(raw, NAMES)


def test_interrupted_download_leaves_no_partial_file(tmp_path, server, monkeypatch):
    _, base = server
    monkeypatch.setattr(MNIST, "mirrors", [base + "good/"])

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(mnist_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        MNIST(tmp_path, download=True)
    assert_only_final_files(tmp_path / "MNIST" / "raw", [])
