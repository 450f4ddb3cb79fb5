"""cnncy.nn: layers, losses and containers, as torch.nn."""
from . import functional, init
from .modules.activation import LogSoftmax, ReLU, Softmax
from .modules.container import ModuleList, Sequential
from .modules.conv import Conv2d
from .modules.dropout import Dropout
from .modules.flatten import Flatten, Identity
from .modules.linear import Linear
from .modules.loss import CrossEntropyLoss, NLLLoss
from .modules.module import Module
from .modules.pooling import AvgPool2d, MaxPool2d
from .parameter import Parameter
