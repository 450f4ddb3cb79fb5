"""The benchmark models, written once against the torch API and built with either library.

    import torch.nn as nn, torch.nn.functional as F            # or cnncy.nn, cnncy.nn.functional
    model = build("lenet", nn, F)
    criterion = build_criterion("lenet", nn, F)

Every model takes MNIST-shaped input (N, 1, 28, 28) and returns 10 class scores per image.
"""

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def simple_cnn(nn, F):
    """The seed's SimpleCNN: one 3x3 convolution, a 2x2 max-pool and one linear layer."""

    class SimpleCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, kernel_size=3, stride=1, padding=1)
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
            self.fc1 = nn.Linear(32 * 14 * 14, NUM_CLASSES)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = x.view(-1, 32 * 14 * 14)
            return self.fc1(x)

    return SimpleCNN()


def lenet(nn, F):
    """LeNet-5 on 28x28 input: the first convolution pads by 2 so that the second sees 14x14 -> 10x10."""

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, NUM_CLASSES)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.flatten(1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    return LeNet()


def examples_net(nn, F):
    """The network of PyTorch's MNIST example (pytorch/examples, mnist/main.py): returns log-probabilities."""

    class ExamplesNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, NUM_CLASSES)

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

    return ExamplesNet()


MODELS = {"simple": simple_cnn, "lenet": lenet, "examplesnet": examples_net}


def build(name, nn, F):
    """A fresh model `name` (one of MODELS) made of the layers in `nn` and the functions in `F`."""
    return MODELS[name](nn, F)


def build_criterion(name, nn, F):
    """The training loss of model `name`: NLL on the log-probabilities of examplesnet, cross-entropy otherwise."""
    if name == "examplesnet":
        return F.nll_loss
    return nn.CrossEntropyLoss()
