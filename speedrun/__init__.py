"""speedrun: a high-throughput CIFAR-10 speedrun trainer.

    from speedrun import CustomResNet, load_cifar_betons
    from speedrun.predict import predict
    from speedrun.train import train

Names are imported on first use, so `import speedrun.nets.model` does not pull in ffcv. `train` and
`predict` stay in their modules: exported here they would share their names with those modules, and
which of the two `speedrun.train` meant would depend on what was imported before.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "CustomResNet": "speedrun.nets.model",
    "load_beton": "speedrun.data.betons",
    "load_cifar_betons": "speedrun.data.betons",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'speedrun' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
