"""cnncy.nn: layers, losses and containers, as torch.nn."""
from . import functional, init
from .modules.container import ModuleList, Sequential
from .modules.conv import Conv2d
from .modules.flatten import Flatten, Identity
from .modules.linear import Linear
from .modules.module import Module
from .parameter import Parameter
