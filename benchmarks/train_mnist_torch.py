"""The torch twin of examples/train_mnist.py: the same models and recipes, trained with PyTorch.

    python benchmarks/train_mnist_torch.py --model simple --optimizer sgd --lr 0.01 --epochs 2 --threads 2
    python examples/train_mnist.py        --model simple --optimizer sgd --lr 0.01 --epochs 2 --threads 2

Both scripts build the networks from examples/mnist_models.py and read the same options, so a recipe
is compared by running it through each.  The data pipeline has the same semantics as cnncy's
MNIST + DataLoader: images scaled to [0, 1] in float32 and normalized with mean 0.1307, std 0.3081;
a new random order of the training set every epoch, cut into batches of --batch-size (the last one
smaller); the test set in order.  Batches are gathered with one index operation each, as cnncy's
loader does, so the epoch times compare the training and not two loaders.  The epoch time is the
training pass only; the test pass after it is not included (as in train_mnist.py).

torch is the only array library with OpenMP threads in this process: cnncy is never imported here
(two OpenMP runtimes in one process compete for the cores).  The IDX files are read with numpy.
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
from mnist_models import LOSS, build  # noqa: E402

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DEFAULT_DATA = os.environ.get("CNNCY_DATA") or os.path.join("~", ".cache", "cnncy", "mnist")
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # images (N, 28, 28), labels (N,)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a CNN on MNIST with torch (train_mnist.py's twin).")
    parser.add_argument("--model", choices=["simple", "lenet", "examplesnet"], default="simple")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.01 for sgd, 1e-3 for adam")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="folder with the MNIST files (default: $CNNCY_DATA, else ~/.cache/cnncy/mnist)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N training images only")
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = 0.01 if args.optimizer == "sgd" else 1e-3
    return args


def read_idx(root, name, ndim):
    """The uint8 array of the IDX file `name` (raw or .gz) in `root` or `root/MNIST/raw`."""
    for folder in (os.path.join(root, "MNIST", "raw"), root):
        for ext, opener in (("", open), (".gz", gzip.open)):
            path = os.path.join(folder, name + ext)
            if os.path.isfile(path):
                with opener(path, "rb") as f:
                    content = f.read()
                if int.from_bytes(content[:4], "big") != IDX_MAGIC[ndim]:
                    sys.exit(f"error: {path} is not an IDX file with {ndim} dimension(s)")
                shape = [int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
                return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    sys.exit(f"error: {name}[.gz] not found in {root}; point --data or CNNCY_DATA at the MNIST files")


def load_split(root, prefix, limit=None):
    """Normalized float32 images (N, 1, 28, 28) and int64 labels (N,), as cnncy's transforms make them."""
    images = read_idx(root, f"{prefix}-images-idx3-ubyte", 3)[:limit]
    labels = read_idx(root, f"{prefix}-labels-idx1-ubyte", 1)[:limit]
    scaled = torch.from_numpy(images.astype(np.float32) / np.float32(255)).unsqueeze(1)
    return (scaled - MNIST_MEAN) / MNIST_STD, torch.from_numpy(labels.astype(np.int64))


def batches(images, labels, batch_size, order=None):
    order = torch.arange(len(labels)) if order is None else order
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield images[index], labels[index]


def train_epoch(model, loss_fn, optimizer, images, labels, batch_size, generator):
    model.train()
    total_loss, start = 0.0, time.perf_counter()
    order = torch.randperm(len(labels), generator=generator)
    for batch_images, batch_labels in batches(images, labels, batch_size, order):
        loss = loss_fn(model(batch_images), batch_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(batch_labels)
    return total_loss / len(labels), time.perf_counter() - start


@torch.no_grad()
def evaluate(model, loss_fn, images, labels, batch_size):
    model.eval()
    total_loss, correct = 0.0, 0
    for batch_images, batch_labels in batches(images, labels, batch_size):
        outputs = model(batch_images)
        total_loss += loss_fn(outputs, batch_labels, reduction="sum").item()
        correct += (outputs.argmax(dim=1) == batch_labels).sum().item()
    return total_loss / len(labels), correct / len(labels)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    root = os.path.expanduser(args.data)
    train_images, train_labels = load_split(root, "train", args.train_limit)
    test_images, test_labels = load_split(root, "t10k")

    model = build(args.model, torch)
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = getattr(F, LOSS[args.model])

    print(f"torch {torch.__version__}: {args.model} on MNIST: {len(train_labels)} train / {len(test_labels)} "
          f"test images, {args.optimizer} lr={args.lr}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    history = []
    for epoch in range(1, args.epochs + 1):
        train_loss, seconds = train_epoch(model, loss_fn, optimizer, train_images, train_labels,
                                          args.batch_size, generator)
        test_loss, accuracy = evaluate(model, loss_fn, test_images, test_labels, args.test_batch_size)
        history.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                        "test_accuracy": accuracy, "seconds": seconds})
        print(f"epoch {epoch}: train loss {train_loss:.4f}, test loss {test_loss:.4f}, "
              f"test accuracy {100 * accuracy:.2f}%, {seconds:.1f} s ({len(train_labels) / seconds:.0f} images/s)",
              flush=True)
    return history


if __name__ == "__main__":
    main()
