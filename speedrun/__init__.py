"""speedrun: a high-throughput CIFAR-10 speedrun trainer.

    from speedrun import train, load_cifar_betons, CustomResNet

Names are imported on first use, so `import speedrun.model` does not pull in ffcv.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "CustomResNet": "speedrun.model",
    "load_beton": "speedrun.data",
    "load_cifar_betons": "speedrun.data",
    "train": "speedrun.train",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'speedrun' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
