"""cnncy.optim: optimizers with torch.optim's API and torch's numbers.

    optimizer = cnncy.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
"""
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
