"""Reference models written the way real model code is (functional ReLUs, in-place residual sums)."""

from .cifar_resnet import BasicBlock, CifarResNet, cifar_resnet, load_checkpoint

__all__ = ["cifar_resnet", "CifarResNet", "BasicBlock", "load_checkpoint"]
