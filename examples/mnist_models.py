"""The three MNIST networks of the examples, written once against the torch API.

`build(name, lib)` makes one from `lib` = cnncy or torch (cnncy mirrors torch's
API), so examples/train_mnist.py and its torch twin in benchmarks/ train the
very same architectures.
"""


def build(name, lib):
    nn, F = lib.nn, lib.nn.functional

    class SimpleCNN(nn.Module):
        """The reference notebook's model."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1)
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
            self.fc1 = nn.Linear(32 * 14 * 14, 10)

        def forward(self, x):
            x = self.pool(lib.relu(self.conv1(x)))
            x = x.view(-1, 32 * 14 * 14)
            return self.fc1(x)

    class LeNet(nn.Module):
        """LeNet-5 style: two conv/pool stages, three fully connected layers."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.flatten(1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    class ExamplesNet(nn.Module):
        """The network of PyTorch's classic MNIST example (returns log-probabilities)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = x.flatten(1)
            x = F.relu(self.fc1(x))
            x = self.dropout2(x)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    models = {"simple": SimpleCNN, "lenet": LeNet, "examplesnet": ExamplesNet}
    if name not in models:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(models)}")
    return models[name]()


# Log-probability models train with NLL; the others with cross-entropy on logits.
LOSS = {"simple": "cross_entropy", "lenet": "cross_entropy", "examplesnet": "nll_loss"}
