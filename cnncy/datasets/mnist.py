"""The MNIST handwritten digits, read from the standard IDX files (torchvision.datasets.MNIST's API).

The four files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) may be gzip-compressed
(`.gz`) or raw, and may lie in `root/MNIST/raw` (torchvision's layout, looked
at first) or directly in `root`.

IDX format: a big-endian header (a 4-byte magic number 0x00000803 for a 3-D
uint8 array or 0x00000801 for a 1-D one, then one 4-byte size per
dimension), followed by the uint8 values in row-major order.
"""
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zlib

import numpy as np

from ..tensor import Tensor, int64
from ..transforms import ToTensor
from ..utils.data import Dataset, default_collate

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
IMAGE_SIZE = 28
NUM_CLASSES = 10
_TO_TENSOR = ToTensor()  # what a sample becomes without a transform


class _FileError(RuntimeError):
    """A damaged MNIST file; download() treats it like a missing one."""


def _fail(path, problem):
    raise _FileError(f"MNIST: {path}: {problem}")


def _read_file(path):
    """The decompressed bytes of `path` (gzip when the name ends in .gz)."""
    with open(path, "rb") as f:
        raw = f.read()
    if not path.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        _fail(path, f"not a valid gzip file ({error})")


def _parse_idx(content, path, magic, ndim):
    """The uint8 array stored in an IDX file's `content`, after checking magic, header and size."""
    header_size = 4 * (1 + ndim)
    if len(content) < header_size:
        _fail(path, f"truncated: {len(content)} bytes, shorter than the {header_size}-byte IDX header")
    found_magic = int.from_bytes(content[:4], "big")
    if found_magic != magic:
        _fail(path, f"bad magic number 0x{found_magic:08x}, expected 0x{magic:08x}")
    shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(content) < expected:
        _fail(path, f"truncated: the header announces shape {shape} ({expected} bytes) "
                    f"but the file has {len(content)} bytes")
    if len(content) > expected:
        _fail(path, f"{len(content) - expected} unexpected bytes after the data of shape {shape}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _parse_images(content, path):
    images = _parse_idx(content, path, IMAGES_MAGIC, 3)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        _fail(path, f"images are {images.shape[1]}x{images.shape[2]}, expected "
                    f"{IMAGE_SIZE}x{IMAGE_SIZE}")
    return images


def _parse_labels(content, path):
    labels = _parse_idx(content, path, LABELS_MAGIC, 1)
    if labels.size and labels.max() >= NUM_CLASSES:
        _fail(path, f"label {labels.max()} out of range 0-{NUM_CLASSES - 1}")
    return labels.astype(int64)


def _md5(content):
    return hashlib.md5(content).hexdigest()


def _atomic_write(path, content):
    """Write `content` to `path` via a temporary file in the same directory, so `path` is never half-written."""
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path),
                                    suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


class MNIST(Dataset):
    """The MNIST handwritten digit dataset (torchvision.datasets.MNIST's API, on numpy arrays).

    Args:
        root (str or os.PathLike): folder holding the IDX files, either in `root/MNIST/raw`
            or directly in `root`.
        train (bool): the 60000-image training set if True, else the 10000-image test set.
        transform (callable, optional): applied to each image, given as a uint8 numpy array
            of shape (28, 28) (where torchvision gives a PIL image), e.g. `transforms.ToTensor()`.
        target_transform (callable, optional): applied to each label (an int).
        download (bool): fetch the files that are missing or invalid from `mirrors` into
            `root/MNIST/raw`, checking each against its md5.

    Without a transform, `ds[i]` is `(image, label)` with image a float32 Tensor of shape
    (1, 28, 28) scaled to [0, 1] and label an int.  `data` (uint8, (N, 28, 28)) and `targets`
    (int64, (N,)) hold the whole set as Tensors.  `get_batch(indices)` gives a whole batch
    with one array operation, which is what cnncy's DataLoader uses.
    """

    mirrors = [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ]
    # md5 of each file's decompressed content.
    md5s = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
               "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]
    download_timeout_s = 60

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        self.root = os.fspath(os.path.expanduser(root))
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        prefix = "train" if train else "t10k"
        images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        if download:
            self.download()
        images_path, labels_path = self._find(images_name), self._find(labels_name)
        images = _parse_images(_read_file(images_path), images_path)
        labels = _parse_labels(_read_file(labels_path), labels_path)
        if len(images) != len(labels):
            raise RuntimeError(f"MNIST: {images_path} holds {len(images)} images but {labels_path} "
                               f"holds {len(labels)} labels")
        self.data = Tensor._wrap(images)
        self.targets = Tensor._wrap(labels)

    @property
    def raw_folder(self):
        return os.path.join(self.root, type(self).__name__, "raw")

    @property
    def class_to_idx(self):
        return {name: i for i, name in enumerate(self.classes)}

    def _candidates(self, name):
        """Where a file may lie, in the order they are looked at."""
        return [os.path.join(folder, name + ext)
                for folder in (self.raw_folder, self.root) for ext in ("", ".gz")]

    def _find(self, name):
        for path in self._candidates(name):
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"MNIST: {name} not found (looked for "
                                f"{', '.join(self._candidates(name))}); pass download=True to fetch it")

    # ------------------------------------------------------------- samples
    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        image = self.data._array[index]
        label = int(self.targets._array[index])
        if self.transform is None:
            image = _TO_TENSOR(image)
        else:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def get_batch(self, indices):
        """`(images, labels)` for the samples at `indices`, gathered with one fancy index.

        Without a transform the images are float32 (B, 1, 28, 28) in [0, 1]; a transform that
        supports batches (`supports_batch`, as Compose/ToTensor/Normalize do) is applied once to
        the uint8 (B, 28, 28) batch, any other is applied image by image.  Labels are int64 (B,).
        """
        indices = np.asarray(indices, dtype=np.int64)
        images = self.data._array[indices]
        labels = self.targets._array[indices]
        if self.transform is None:
            images = _TO_TENSOR.apply_batch(images)
        elif getattr(self.transform, "supports_batch", False):
            images = self.transform.apply_batch(images)
        else:
            images = default_collate([self.transform(image) for image in images])
        if self.target_transform is None:
            labels = Tensor._wrap(labels)
        else:
            labels = default_collate([self.target_transform(int(label)) for label in labels])
        return images, labels

    # ------------------------------------------------------------- download
    def download(self):
        """Fetch each file that is not already present with the right md5, trying the mirrors in order."""
        os.makedirs(self.raw_folder, exist_ok=True)
        for name, md5 in self.md5s.items():
            if not self._has_valid_copy(name, md5):
                _atomic_write(os.path.join(self.raw_folder, name), self._fetch(name, md5))

    def _has_valid_copy(self, name, md5):
        for path in self._candidates(name):
            if os.path.isfile(path):
                try:
                    return _md5(_read_file(path)) == md5
                except _FileError:
                    return False
        return False

    def _fetch(self, name, md5):
        """The verified, decompressed content of `name`, from the first mirror that serves it correctly."""
        failures = []
        for mirror in self.mirrors:
            url = f"{mirror}{name}.gz"
            try:
                with urllib.request.urlopen(url, timeout=self.download_timeout_s) as response:
                    content = gzip.decompress(response.read())
            except (OSError, EOFError, zlib.error, http.client.HTTPException, ValueError) as error:
                failures.append(f"{url}: {error}")
                continue
            if _md5(content) != md5:
                failures.append(f"{url}: md5 mismatch (got {_md5(content)}, expected {md5})")
                continue
            return content
        raise RuntimeError(f"MNIST: could not download {name}:\n  " + "\n  ".join(failures))

    def __repr__(self):
        split = "Train" if self.train else "Test"
        lines = [f"Dataset {type(self).__name__}", f"    Number of datapoints: {len(self)}",
                 f"    Root location: {self.root}", f"    Split: {split}"]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        return "\n".join(lines)

