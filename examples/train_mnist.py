"""Train a CNN on MNIST with cnncy, the way PyTorch's MNIST example does with torch.

    python examples/train_mnist.py --epochs 2
    python examples/train_mnist.py --model lenet --optimizer adam --lr 1e-3 --epochs 3 --plot lenet.png
    python examples/train_mnist.py --epochs 1 --save ckpt.npz && python examples/train_mnist.py --epochs 2 --resume ckpt.npz

The data is the four standard MNIST IDX files (.gz or raw) in --data, which defaults to the
CNNCY_DATA environment variable, then ~/.cache/cnncy/mnist; --download fetches them there.
tqdm (progress bar) and matplotlib (--plot) are optional: pip install .[examples]

A checkpoint (--save, written after every epoch) holds the model, the optimizer, the epoch, the
history and cnncy's random generator state (which orders the shuffled batches and draws the dropout
masks), so a run resumed from it ends with the very same parameters as a run that never stopped.
"""
import argparse
import os
import sys
import time

import cnncy
import cnncy.nn.functional as F
import cnncy.optim as optim
from cnncy import transforms
from cnncy.datasets import MNIST
from cnncy.utils.data import DataLoader, Subset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_models import LOSS, build  # noqa: E402

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DEFAULT_DATA = os.environ.get("CNNCY_DATA") or os.path.join("~", ".cache", "cnncy", "mnist")


def positive(convert):
    def parse(text):
        value = convert(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = convert.__name__  # argparse names the type in its error messages
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a CNN on MNIST with cnncy.")
    parser.add_argument("--model", choices=["simple", "lenet", "examplesnet"], default="simple")
    parser.add_argument("--epochs", type=positive(int), default=2, help="train until this epoch (default 2)")
    parser.add_argument("--batch-size", type=positive(int), default=64)
    parser.add_argument("--test-batch-size", type=positive(int), default=1000)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lr", type=positive(float), default=None, help="default: 0.01 for sgd, 1e-3 for adam")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--threads", type=positive(int), default=None,
                        help="kernel threads (default: OMP_NUM_THREADS, else all cores)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="folder with the MNIST files (default: $CNNCY_DATA, else ~/.cache/cnncy/mnist)")
    parser.add_argument("--download", action="store_true", help="fetch the MNIST files into --data")
    parser.add_argument("--train-limit", type=positive(int), default=None,
                        help="train on the first N training images only")
    parser.add_argument("--save", metavar="FILE.npz", help="write a checkpoint after every epoch")
    parser.add_argument("--resume", metavar="FILE.npz", help="continue from a checkpoint")
    parser.add_argument("--plot", metavar="FILE.png", help="save loss and accuracy curves (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = 0.01 if args.optimizer == "sgd" else 1e-3
    return args


def fail(message):
    """Stop with one line on stderr and exit status 1: the user made a fixable mistake, not a bug."""
    sys.exit(f"error: {message}")


def load_data(args):
    root = os.path.expanduser(args.data)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    try:
        train = MNIST(root, train=True, transform=transform, download=args.download)
        test = MNIST(root, train=False, transform=transform)
    except FileNotFoundError:
        where = f"{root} does not exist" if not os.path.isdir(root) else f"{root} lacks some of them"
        fail(f"the MNIST files are not there ({where}). Add --download to fetch them into --data, or point "
             f"--data or CNNCY_DATA at a folder holding train-images-idx3-ubyte.gz, "
             f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    except RuntimeError as error:  # a damaged file or a failed download: the message names it
        fail(error)
    if args.train_limit:
        train = Subset(train, range(min(args.train_limit, len(train))))
    return train, test


def make_optimizer(args, model):
    if args.optimizer == "sgd":
        return optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    return optim.Adam(model.parameters(), lr=args.lr)


def progress(iterable, enabled, description):
    """A tqdm bar over `iterable` when asked for and installed; otherwise the iterable itself."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            return iterable
        return tqdm(iterable, total=len(iterable), desc=description, unit="batch", leave=False,
                    dynamic_ncols=True)
    return iterable


def train_epoch(model, loss_fn, optimizer, loader, epoch, show_progress):
    """One pass over `loader`; returns the mean training loss and the seconds it took."""
    model.train()
    bar = progress(loader, show_progress, f"epoch {epoch}")
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    for images, labels in bar:
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        seen += len(labels)
        if bar is not loader:
            # refresh=False leaves redrawing to tqdm's own rate limit, not once per batch.
            bar.set_postfix(loss=f"{total_loss / seen:.4f}",
                            img_per_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
    return total_loss / seen, time.perf_counter() - start


@cnncy.no_grad()
def evaluate(model, loss_fn, loader):
    """Mean loss and accuracy over `loader`, in eval mode (no dropout)."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        outputs = model(images)
        total_loss += loss_fn(outputs, labels, reduction="sum").item()
        correct += (outputs.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        fail("--plot needs matplotlib: pip install matplotlib (or pip install .[examples])")
    matplotlib.use("Agg")  # write files; never open a window
    import matplotlib.pyplot as plt
    return plt


def plot_history(history, path, model_name):
    plt = import_pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    left.plot(epochs, [h["test_loss"] for h in history], "o-", label="test")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    right.plot(epochs, [100 * h["test_accuracy"] for h in history], "o-")
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy (%)")
    for axes in (left, right):
        axes.set_xticks(epochs)
    fig.suptitle(f"cnncy: {model_name} on MNIST")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")


CHECKPOINT_KEYS = {"model_name", "model", "optimizer_name", "optimizer", "epoch", "history", "rng"}


def save_checkpoint(path, args, model, optimizer, epoch, history):
    cnncy.save({"model_name": args.model, "model": model.state_dict(), "optimizer_name": args.optimizer,
                "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history,
                "rng": cnncy.get_rng_state()}, path)


def resume_checkpoint(path, args, model, optimizer):
    """Restores model, optimizer and random generator from `path`; returns the epoch and history it holds."""
    try:
        checkpoint = cnncy.load(path)
    except (FileNotFoundError, RuntimeError) as error:
        fail(error)
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        fail(f"{path} is a cnncy file but not a checkpoint of this script (it needs {sorted(CHECKPOINT_KEYS)})")
    for what in ("model", "optimizer"):
        saved, asked = checkpoint.get(f"{what}_name"), getattr(args, what)
        if saved != asked:
            fail(f"{path} holds a checkpoint of --{what} {saved}, not {asked}")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    cnncy.set_rng_state(checkpoint["rng"])
    return checkpoint["epoch"], list(checkpoint["history"])


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        import_pyplot()  # fail now, not after the training
    if args.threads:
        cnncy.set_num_threads(args.threads)
    cnncy.manual_seed(args.seed)
    train_set, test_set = load_data(args)
    # Shuffled from cnncy's global generator, which the checkpoint saves and restores.
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size)

    model = build(args.model, cnncy)
    optimizer = make_optimizer(args, model)
    loss_fn = getattr(F, LOSS[args.model])
    done_epochs, history = 0, []
    if args.resume:
        done_epochs, history = resume_checkpoint(args.resume, args, model, optimizer)
        print(f"resumed from {args.resume} after epoch {done_epochs}")

    print(f"{args.model} on MNIST: {len(train_set)} train / {len(test_set)} test images, "
          f"{args.optimizer} lr={args.lr}, batch {args.batch_size}, {cnncy.get_num_threads()} threads")
    if done_epochs >= args.epochs:
        print(f"nothing to train: the checkpoint is at epoch {done_epochs}, --epochs is {args.epochs}")
    for epoch in range(done_epochs + 1, args.epochs + 1):
        train_loss, seconds = train_epoch(model, loss_fn, optimizer, train_loader, epoch, not args.no_progress)
        test_loss, accuracy = evaluate(model, loss_fn, test_loader)
        history.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                        "test_accuracy": accuracy, "seconds": seconds})
        print(f"epoch {epoch}: train loss {train_loss:.4f}, test loss {test_loss:.4f}, "
              f"test accuracy {100 * accuracy:.2f}%, {seconds:.1f} s ({len(train_set) / seconds:.0f} images/s)",
              flush=True)
        if args.save:
            save_checkpoint(args.save, args, model, optimizer, epoch, history)
    if args.plot and history:
        plot_history(history, args.plot, args.model)
    return history


if __name__ == "__main__":
    main()
