"""cnncy.serialization (cnncy.save / cnncy.load): bitwise round trips, damaged files, no pickle."""
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import cnncy
import cnncy.nn
import cnncy.optim
from cnncy.serialization import load, save


def assert_same(loaded, original):
    """Equal structure, types, dict key types and bitwise-equal arrays."""
    assert type(loaded) is type(original)
    if isinstance(original, cnncy.Tensor):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        assert loaded.requires_grad == original.requires_grad
        assert loaded.detach().numpy().tobytes() == original.detach().numpy().tobytes()
    elif isinstance(original, (np.ndarray, np.generic)):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        assert loaded.tobytes() == original.tobytes()
    elif isinstance(original, dict):
        assert list(loaded) == list(original)
        assert [type(k) for k in loaded] == [type(k) for k in original]
        for key in original:
            assert_same(loaded[key], original[key])
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original)
        for a, b in zip(loaded, original):
            assert_same(a, b)
    elif isinstance(original, float):
        assert np.float64(loaded).tobytes() == np.float64(original).tobytes()
    else:
        assert loaded == original


@pytest.fixture
def checkpoint(rng):
    weights = collections.OrderedDict([
        ("conv1.weight", cnncy.tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))),
        ("conv1.bias", cnncy.tensor(rng.standard_normal(4).astype(np.float32))),
        ("fc.weight", cnncy.tensor(rng.standard_normal((2, 5)))),
        ("bn.num_batches_tracked", cnncy.tensor(7)),
    ])
    optimizer = {
        "state": {0: {"momentum_buffer": cnncy.tensor(rng.standard_normal(4).astype(np.float32)),
                      "step": cnncy.tensor(12.0)}, 3: {}},
        "param_groups": [{"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0,
                          "betas": (0.9, 0.999), "eps": 1e-8, "foreach": None, "params": [0, 1, 2, 3]}],
    }
    return {
        "model": weights, "optimizer": optimizer, "epoch": 3,
        "rng": np.random.default_rng(9).bit_generator.state,
        "mt19937": np.random.MT19937(4).state,
        "specials": [float("inf"), -0.0, 1e-310, 2 ** 90, "tëxt", None, True],
        "arrays": (np.arange(6, dtype=np.uint8).reshape(2, 3)[:, ::2], np.float16(1.5), np.bool_(True)),
        "odd keys": {1.5: "float", None: "none", (1, "a"): "tuple", False: "bool", "": "empty"},
        "leaf": cnncy.tensor([1.0, 2.0], requires_grad=True),
    }


def test_round_trip_is_bitwise(tmp_path, checkpoint):
    path = tmp_path / "checkpoint.pt"
    save(checkpoint, path)
    loaded = load(path)
    assert_same(loaded, checkpoint)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # nothing left from the atomic write
    generator = np.random.default_rng()
    generator.bit_generator.state = loaded["rng"]
    assert generator.random() == np.random.default_rng(9).random()


def test_round_trip_through_file_objects_and_str_paths(tmp_path, checkpoint):
    buffer = io.BytesIO()
    save(checkpoint, buffer)
    buffer.seek(0)
    assert_same(load(buffer), checkpoint)
    save(checkpoint["model"], str(tmp_path / "model"))
    assert_same(load(str(tmp_path / "model"), map_location="cpu", weights_only=True), checkpoint["model"])


def test_file_is_a_documented_npz(tmp_path, checkpoint):
    path = tmp_path / "c.pt"
    save(checkpoint, path)
    with np.load(path, allow_pickle=False) as archive:
        assert "__cnncy__" in archive.files
        np.testing.assert_array_equal(archive["a0"], checkpoint["model"]["conv1.weight"].numpy())


def test_overwriting_replaces_the_file(tmp_path):
    path = tmp_path / "c.pt"
    save({"epoch": 1}, path)
    save({"epoch": 2}, path)
    assert load(path) == {"epoch": 2}


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match=r"set at obj\['a'\]\[1\]"):
        save({"a": [1, {2}]}, tmp_path / "c.pt")
    with pytest.raises(TypeError, match="dtype object"):
        save(np.array([None]), tmp_path / "c.pt")
    assert os.listdir(tmp_path) == []


def damaged_files(valid):
    middle = bytearray(valid)
    middle[len(middle) // 2] ^= 0xFF
    plain_npz, npy, foreign = io.BytesIO(), io.BytesIO(), io.BytesIO()
    np.savez(plain_npz, weights=np.ones(3))
    np.save(npy, np.ones(3))
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("__cnncy__.npy", b"not an array")
    return {
        "truncated": valid[:len(valid) // 2],
        "empty": b"",
        "flipped byte": bytes(middle),
        "text": b"hello, this is not a checkpoint\n",
        "pickle": pickle.dumps({"weights": [1, 2, 3]}),
        "plain npz": plain_npz.getvalue(),
        "single npy": npy.getvalue(),
        "zip of junk": foreign.getvalue(),
    }


@pytest.mark.parametrize("case", ["truncated", "empty", "flipped byte", "text", "pickle", "plain npz",
                                  "single npy", "zip of junk"])
def test_damaged_or_foreign_file_raises_naming_it(tmp_path, checkpoint, case):
    save(checkpoint, tmp_path / "good.pt")
    path = tmp_path / "bad.pt"
    path.write_bytes(damaged_files((tmp_path / "good.pt").read_bytes())[case])
    with pytest.raises(RuntimeError, match="bad.pt is not a valid cnncy checkpoint"):
        load(path)


def test_malformed_structure_is_rejected(tmp_path):
    for structure in ['{"format": "other", "version": 1, "root": 1}',
                      '{"format": "cnncy", "version": 99, "root": 1}',
                      '{"format": "cnncy", "version": 1, "root": {"tensor": "a7", "requires_grad": false}}',
                      '{"format": "cnncy", "version": 1, "root": {"set": []}}']:
        np.savez(tmp_path / "c.npz", __cnncy__=np.frombuffer(structure.encode(), np.uint8))
        with pytest.raises(RuntimeError, match="c.npz is not a valid cnncy checkpoint"):
            load(tmp_path / "c.npz")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no-such-file.pt"):
        load("/nonexistent/no-such-file.pt")


def test_never_unpickles(tmp_path, monkeypatch):
    """An archive with an object array (which numpy would unpickle) is refused, and pickle is never called."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    structure = '{"format": "cnncy", "version": 1, "root": {"ndarray": "a0"}}'
    np.savez(tmp_path / "evil.pt.npz", __cnncy__=np.frombuffer(structure.encode(), np.uint8),
             a0=np.array([{"payload": 1}], dtype=object))
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    with pytest.raises(RuntimeError, match="not a valid cnncy checkpoint"):
        load(tmp_path / "evil.pt.npz")
    save({"x": cnncy.ones(2)}, tmp_path / "ok.pt")
    assert load(tmp_path / "ok.pt")["x"].numpy().tolist() == [1.0, 1.0]


def test_model_and_optimizer_resume_identically(tmp_path):
    """Save mid-training, load into fresh objects: the next step matches the uninterrupted run bitwise."""
    class Model(cnncy.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = cnncy.nn.Parameter(cnncy.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)))

        def forward(self, x):
            return x @ self.weight

    def train_step(model, optimizer):
        optimizer.zero_grad()
        (model(cnncy.ones(4, 2)) ** 2).sum().backward()
        optimizer.step()

    for make_optimizer in (lambda ps: cnncy.optim.SGD(ps, lr=0.1, momentum=0.9),
                           lambda ps: cnncy.optim.Adam(ps, lr=0.01)):
        model = Model()
        optimizer = make_optimizer(model.parameters())
        train_step(model, optimizer)
        save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1,
              "params": list(model.parameters())}, tmp_path / "ckpt.pt")
        train_step(model, optimizer)

        checkpoint = load(tmp_path / "ckpt.pt")
        assert type(checkpoint["params"][0]) is cnncy.nn.Parameter and checkpoint["params"][0].requires_grad
        resumed = Model()
        resumed.load_state_dict(checkpoint["model"])
        resumed_optimizer = make_optimizer(resumed.parameters())
        resumed_optimizer.load_state_dict(checkpoint["optimizer"])
        train_step(resumed, resumed_optimizer)
        assert resumed.weight.detach().numpy().tobytes() == model.weight.detach().numpy().tobytes()
