"""cnncy.utils.data: TensorDataset, Subset, random_split, default_collate and DataLoader."""
import warnings

import numpy as np
import pytest
import torch.utils.data

import cnncy
from cnncy.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate, random_split


def make_dataset(n=10):
    features = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    labels = np.arange(n, dtype=np.int64) % 4
    return features, labels, TensorDataset(cnncy.tensor(features), cnncy.tensor(labels))


class ListDataset(Dataset):
    """A generic dataset without get_batch: samples are (array, int)."""

    def __init__(self, n):
        self.n = n

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return np.full((2,), index, dtype=np.float32), index

    def __len__(self):
        return self.n


def epoch_labels(loader):
    return [labels.numpy().tolist() for _, labels in loader]


# ----------------------------------------------------------------- datasets

def test_tensor_dataset_items_and_length():
    features, labels, ds = make_dataset()
    assert len(ds) == 10
    x, y = ds[3]
    np.testing.assert_array_equal(x.numpy(), features[3])
    assert y.item() == labels[3]


def test_tensor_dataset_rejects_size_mismatch():
    with pytest.raises(ValueError, match="Size mismatch between tensors"):
        TensorDataset(cnncy.zeros(3, 2), cnncy.zeros(4))
    with pytest.raises(AssertionError):  # what torch raises
        TensorDataset(cnncy.zeros(3, 2), cnncy.zeros(4))
    with pytest.raises(ValueError):
        TensorDataset()


def test_subset_maps_indices():
    features, _, ds = make_dataset()
    subset = Subset(ds, [7, 2, 5])
    assert len(subset) == 3
    np.testing.assert_array_equal(subset[1][0].numpy(), features[2])
    (x, _), = DataLoader(subset, batch_size=3)
    np.testing.assert_array_equal(x.numpy(), features[[7, 2, 5]])


@pytest.mark.parametrize("n, lengths", [
    (10, [3, 7]), (10, [0.3, 0.3, 0.4]), (11, [0.5, 0.5]), (7, [0.1, 0.2, 0.7]), (5, [5, 0]),
])
def test_random_split_lengths_match_torch_and_partition(n, lengths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [len(s) for s in torch.utils.data.random_split(range(n), lengths)]
        splits = random_split(ListDataset(n), lengths, generator=0)
    assert [len(s) for s in splits] == expected
    indices = [i for s in splits for i in s.indices]
    assert sorted(indices) == list(range(n))


def test_random_split_is_reproducible_and_validates():
    ds = ListDataset(20)
    first = [s.indices for s in random_split(ds, [5, 15], generator=3)]
    assert first == [s.indices for s in random_split(ds, [5, 15], generator=np.random.default_rng(3))]
    cnncy.manual_seed(1)
    global_first = [s.indices for s in random_split(ds, [0.5, 0.5])]
    cnncy.manual_seed(1)
    assert global_first == [s.indices for s in random_split(ds, [0.5, 0.5])]
    with pytest.raises(ValueError, match="Sum of input lengths"):
        random_split(ds, [5, 10])
    with pytest.raises(ValueError, match="Fraction at index 1"):
        random_split(ds, [0.5, 1.5, -1.0])
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        random_split(ListDataset(1), [0.6, 0.4])


# ----------------------------------------------------------------- collate

def test_default_collate_matches_torch():
    samples = [({"x": np.ones(2, np.float32) * i, "name": f"s{i}"}, i, float(i) / 3, True) for i in range(3)]
    ours = default_collate(samples)
    theirs = torch.utils.data.default_collate(samples)
    assert type(ours) is type(theirs) is list
    assert ours[0]["name"] == theirs[0]["name"]
    for a, b in [(ours[0]["x"], theirs[0]["x"])] + list(zip(ours[1:], theirs[1:])):
        assert str(a.dtype) == str(b.dtype).replace("torch.", "")
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_default_collate_rejects_ragged_samples():
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([(1, 2), (1,)])


# ----------------------------------------------------------------- loader

@pytest.mark.parametrize("dataset_kind", ["tensor", "generic"])
@pytest.mark.parametrize("drop_last, sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_batches_in_order(dataset_kind, drop_last, sizes):
    features, labels, ds = make_dataset()
    if dataset_kind == "generic":
        ds, features, labels = ListDataset(10), np.repeat(np.arange(10, dtype=np.float32), 2).reshape(10, 2), \
            np.arange(10)
    loader = DataLoader(ds, batch_size=4, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(batches) == len(sizes)
    assert [len(y) for _, y in batches] == sizes
    seen = sum(sizes)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in batches]), features[:seen])
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), labels[:seen])
    assert all(y.dtype == np.int64 and isinstance(x, cnncy.Tensor) for x, y in batches)


def test_shuffle_visits_every_index_once_per_epoch_in_new_orders():
    ds = TensorDataset(cnncy.arange(50))
    loader = DataLoader(ds, batch_size=8, shuffle=True, generator=5)
    epochs = [np.concatenate([batch.numpy() for batch, in loader]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(50))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(50))


def test_shuffle_is_reproducible():
    ds = TensorDataset(cnncy.arange(30), cnncy.arange(30))
    by_seed = [epoch_labels(DataLoader(ds, batch_size=7, shuffle=True, generator=11)) for _ in range(2)]
    assert by_seed[0] == by_seed[1]
    by_generator = epoch_labels(DataLoader(ds, batch_size=7, shuffle=True, generator=np.random.default_rng(11)))
    assert by_generator == by_seed[0]
    runs = []
    for _ in range(2):
        cnncy.manual_seed(42)
        loader = DataLoader(ds, batch_size=7, shuffle=True)
        runs.append(epoch_labels(loader) + epoch_labels(loader))
    assert runs[0] == runs[1]
    assert runs[0][:5] != runs[0][5:]


def test_subclass_overriding_getitem_is_loaded_per_sample():
    class Doubled(TensorDataset):
        def __getitem__(self, index):
            (x,) = super().__getitem__(index)
            return x * 2

    (batch,) = DataLoader(Doubled(cnncy.arange(4)), batch_size=4)
    np.testing.assert_array_equal(batch.numpy(), [0, 2, 4, 6])


def test_custom_collate_fn_gets_the_samples():
    loader = DataLoader(ListDataset(5), batch_size=2, collate_fn=lambda samples: [i for _, i in samples])
    assert list(loader) == [[0, 1], [2, 3], [4]]


def test_loader_exposes_dataset_and_validates_arguments():
    _, _, ds = make_dataset()
    assert DataLoader(ds).dataset is ds and len(DataLoader(ds)) == 10
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(TypeError, match="generator"):
        DataLoader(ds, shuffle=True, generator="seed")
