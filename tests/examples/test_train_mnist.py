"""examples/train_mnist.py: it learns real MNIST, resumes exactly, fails clearly without data, plots.

The real-data test runs when CNNCY_DATA names the MNIST folder (CI sets it); the others train on a
tiny fake MNIST written in IDX format to a temporary folder.  main(argv) runs in this process, except
for the missing-data test, which checks what a user sees: the exit status and stderr of the script.
"""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import cnncy

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
SCRIPT = os.path.join(EXAMPLES, "train_mnist.py")
sys.path.insert(0, EXAMPLES)
import train_mnist  # noqa: E402

DATA_ROOT = os.environ.get("CNNCY_DATA")
FAKE_SIZES = {"train": 160, "t10k": 64}


def write_idx(path, magic, array):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """A folder with the four MNIST files holding random digits (enough to train on, nothing to learn)."""
    folder = tmp_path_factory.mktemp("fake_mnist")
    rng = np.random.default_rng(3)
    for split, n in FAKE_SIZES.items():
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", 0x803, rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", 0x801, rng.integers(0, 10, size=n))
    return str(folder)


@pytest.mark.skipif(not DATA_ROOT, reason="set CNNCY_DATA to the folder holding the MNIST files")
def test_short_run_on_real_mnist_learns_the_digits():
    # SimpleCNN with the README's SGD recipe on a third of the training set, one epoch.
    history = train_mnist.main(["--data", DATA_ROOT, "--model", "simple", "--optimizer", "sgd", "--lr", "0.01",
                                "--momentum", "0.9", "--batch-size", "64", "--epochs", "1",
                                "--train-limit", "20000", "--no-progress"])
    assert history[-1]["test_accuracy"] >= 0.93


def test_resumed_run_ends_exactly_where_an_uninterrupted_run_ends(fake_mnist, tmp_path):
    # ExamplesNet with Adam uses every piece of state a checkpoint must carry: parameters, Adam's
    # moments and step count, and the random generator behind both the shuffling and dropout.
    recipe = ["--data", fake_mnist, "--model", "examplesnet", "--optimizer", "adam", "--batch-size", "32",
              "--no-progress"]
    straight, first_half, resumed = (str(tmp_path / name) for name in ("straight.npz", "half.npz", "resumed.npz"))
    train_mnist.main(recipe + ["--epochs", "2", "--save", straight])
    train_mnist.main(recipe + ["--epochs", "1", "--save", first_half])
    train_mnist.main(recipe + ["--epochs", "2", "--resume", first_half, "--save", resumed])

    expected, actual = cnncy.load(straight), cnncy.load(resumed)
    assert actual["epoch"] == expected["epoch"] == 2
    assert expected["model"].keys() == actual["model"].keys()
    for name, parameter in expected["model"].items():
        assert np.array_equal(actual["model"][name].numpy(), parameter.numpy()), name
    for index, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert np.array_equal(np.asarray(actual["optimizer"]["state"][index][key]), np.asarray(value)), key
    assert actual["rng"] == expected["rng"]
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert [h[key] for h in actual["history"]] == [h[key] for h in expected["history"]], key


def test_missing_data_folder_gives_one_line_and_a_failure_status(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    # The child must import the cnncy this test imported (an installed one or this checkout's build).
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(cnncy.__file__))))
    done = subprocess.run([sys.executable, SCRIPT, "--data", missing, "--epochs", "1", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and missing in lines[0] and "--download" in lines[0]
    assert "Traceback" not in done.stderr


def test_plot_writes_a_png(fake_mnist, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    train_mnist.main(["--data", fake_mnist, "--model", "lenet", "--epochs", "2", "--no-progress",
                      "--plot", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
