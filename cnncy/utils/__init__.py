"""Utilities with torch.utils' names; `cnncy.utils.data` holds Dataset, DataLoader and friends."""
from . import data

__all__ = ["data"]
