"""Datasets (torchvision.datasets' names): `from cnncy import datasets; datasets.MNIST(root, ...)`."""
from .mnist import MNIST

__all__ = ["MNIST"]
