"""cnncy.nn: layers, losses and containers, as torch.nn."""
from . import functional, init
from .modules.container import ModuleList, Sequential
from .modules.flatten import Flatten, Identity
from .modules.module import Module
from .parameter import Parameter
