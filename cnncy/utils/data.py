"""Datasets and batch loading with torch.utils.data's names.

    from cnncy.utils.data import DataLoader, TensorDataset, random_split

Datasets backed by arrays (cnncy.datasets.MNIST, TensorDataset and Subsets of
them) provide `get_batch(indices)`, which gathers a whole batch with one numpy
fancy index per array; DataLoader uses it, so an epoch costs one array
operation per batch rather than a Python call per sample.  Any other dataset
(anything with `__getitem__` and `__len__`) is loaded sample by sample and
collated with `default_collate`, as in torch.

Shuffling draws from numpy Generators: pass `generator=` an int seed or a
`numpy.random.Generator`; by default the order comes from cnncy's global
generator, so `cnncy.manual_seed(s)` makes the order reproducible.
"""
import collections.abc
import math
import warnings

import numpy as np

from .. import creation
from .._frames import user_stacklevel
from ..tensor import Tensor, float64, int64


def _numpy_generator(generator):
    """A numpy Generator from an int seed or a Generator; None means cnncy's global generator."""
    if generator is None:
        return creation.default_generator()
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.Generator(np.random.PCG64(int(generator)))
    raise TypeError(f"generator must be an int seed or a numpy.random.Generator, "
                    f"got {type(generator).__name__}")


def _batch_getter(dataset):
    """The dataset's vectorised `get_batch`, unless it is missing or a subclass redefined `__getitem__`
    (then samples may differ from what get_batch builds, so the per-sample path is the safe one)."""
    cls = type(dataset)
    owner = next((c for c in cls.__mro__ if "get_batch" in c.__dict__), None)
    if owner is None or cls.__getitem__ is not owner.__getitem__:
        return None
    return dataset.get_batch


def _stack_tensors(arrays):
    shapes = [a.shape for a in arrays]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shapes[0])} "
                               f"at entry 0 and {list(shape)} at entry {i}")
    return Tensor._wrap(np.stack(arrays))


def default_collate(batch):
    """Merges a list of samples into a batch, like torch.utils.data.default_collate.

    Tensors and arrays are stacked along a new first axis, Python ints become an int64
    Tensor and floats a float64 Tensor, strings stay a list, and dicts, tuples and lists
    are collated field by field (tuples and lists come back as lists, as in torch).
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack_tensors([item._array for item in batch])
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in "OSUV":
            raise TypeError(f"default_collate: cannot batch numpy arrays of dtype {elem.dtype}")
        return _stack_tensors([np.asarray(item) for item in batch])
    if isinstance(elem, (np.bool_, np.number)):
        return Tensor._wrap(np.array(batch))
    if isinstance(elem, bool):
        return Tensor._wrap(np.array(batch, dtype=np.bool_))
    if isinstance(elem, int):
        return Tensor._wrap(np.array(batch, dtype=int64))
    if isinstance(elem, float):
        return Tensor._wrap(np.array(batch, dtype=float64))
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or "
                    f"lists; found {type(elem).__name__}")


class Dataset:
    """Base class of map-style datasets: subclasses define `__getitem__` and `__len__`."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")


class _SizeMismatchError(ValueError, AssertionError):
    """ValueError, also catchable as the AssertionError that torch's TensorDataset raises."""


class TensorDataset(Dataset):
    """Dataset wrapping tensors; sample i is `tuple(t[i] for t in tensors)`.

    Args:
        *tensors (Tensor): tensors with the same size of the first dimension.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: needs at least one tensor")
        tensors = tuple(t if isinstance(t, Tensor) else Tensor._wrap(np.asarray(t)) for t in tensors)
        sizes = [t.shape[0] if t.ndim else None for t in tensors]
        if None in sizes or any(size != sizes[0] for size in sizes):
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
            raise _SizeMismatchError(f"Size mismatch between tensors: shapes {shapes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]

    def get_batch(self, indices):
        """One tensor per wrapped tensor, each gathered at `indices` with one fancy index."""
        indices = np.asarray(indices, dtype=np.int64)
        return tuple(Tensor._wrap(t._array[indices]) for t in self.tensors)


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order.

    Args:
        dataset (Dataset): the whole dataset.
        indices (sequence of int): the positions in `dataset` that make up the subset.
    """

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices
        self._index_array = None

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)

    def _indices_as_array(self):
        # Cached because converting a long index list per batch would dominate an epoch.
        if self._index_array is None or self._index_array[0] is not self.indices:
            self._index_array = (self.indices, np.asarray(self.indices, dtype=np.int64))
        return self._index_array[1]

    def get_batch(self, indices):
        """The batch at subset positions `indices`, vectorised when the parent dataset is."""
        parent_indices = self._indices_as_array()[np.asarray(indices, dtype=np.int64)]
        parent_get_batch = _batch_getter(self.dataset)
        if parent_get_batch is not None:
            return parent_get_batch(parent_indices)
        return default_collate([self.dataset[int(i)] for i in parent_indices])


def random_split(dataset, lengths, generator=None):
    """Randomly splits `dataset` into non-overlapping Subsets of the given lengths, like torch.

    Args:
        dataset (Dataset): the dataset to split.
        lengths (sequence): lengths of the splits, or fractions summing to 1 (the lengths are then
            floor(fraction * len(dataset)), with the remainder handed out one by one round-robin).
        generator (int or numpy.random.Generator, optional): the source of the permutation;
            default cnncy's global generator.
    """
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        lengths = _lengths_from_fractions(lengths, len(dataset))
    if sum(lengths) != len(dataset):
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    indices = _numpy_generator(generator).permutation(len(dataset)).tolist()
    splits, offset = [], 0
    for length in lengths:
        splits.append(Subset(dataset, indices[offset:offset + length]))
        offset += length
    return splits


def _lengths_from_fractions(fractions, total):
    for i, fraction in enumerate(fractions):
        if not 0 <= fraction <= 1:
            raise ValueError(f"Fraction at index {i} is not between 0 and 1")
    lengths = [math.floor(total * fraction) for fraction in fractions]
    for i in range(total - sum(lengths)):
        lengths[i % len(lengths)] += 1
    for i, length in enumerate(lengths):
        if length == 0:
            warnings.warn(f"Length of split at index {i} is 0. This might result in an empty dataset.",
                          stacklevel=user_stacklevel())
    return lengths


class DataLoader:
    """Iterates over a dataset in batches, like torch.utils.data.DataLoader (in the main process).

    Args:
        dataset (Dataset): where the samples come from.
        batch_size (int): samples per batch.
        shuffle (bool): visit the samples in a new random order every epoch.
        drop_last (bool): drop the last batch if it is smaller than `batch_size`.
        generator (int or numpy.random.Generator, optional): the source of the shuffling order;
            an int seeds a Generator made once, so each epoch still gets a new order.  Default:
            cnncy's global generator (reproducible after `cnncy.manual_seed`).
        collate_fn (callable, optional): merges a list of samples into a batch.  Given one, the
            loader fetches sample by sample; by default array-backed datasets (those with
            `get_batch`) are gathered a whole batch at a time.
        num_workers, pin_memory: accepted for torch compatibility; batches are always built in
            the calling process (vectorised batch gathering makes worker processes unnecessary).

    Each batch from a dataset of (image, label) samples is `[images, labels]`, cnncy Tensors.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, generator=None,
                 collate_fn=None, num_workers=0, pin_memory=False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                             "multiprocessing.")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.generator = None if generator is None else _numpy_generator(generator)

    def __len__(self):
        if self.drop_last:
            return len(self.dataset) // self.batch_size
        return -(-len(self.dataset) // self.batch_size)

    def _epoch_order(self):
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        # The global generator is looked up per epoch: manual_seed replaces it.
        return (self.generator or creation.default_generator()).permutation(n).astype(np.int64)

    def _load(self, indices):
        get_batch = _batch_getter(self.dataset) if self.collate_fn is None else None
        if get_batch is not None:
            batch = get_batch(indices)
            return list(batch) if isinstance(batch, tuple) else batch
        collate = self.collate_fn or default_collate
        return collate([self.dataset[int(i)] for i in indices])

    def __iter__(self):
        order = self._epoch_order()
        for batch in range(len(self)):
            yield self._load(order[batch * self.batch_size:(batch + 1) * self.batch_size])
