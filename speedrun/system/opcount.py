"""Counting the operations a piece of code dispatches, and those that make the host wait for the device.

    with OpCounter() as counted:
        train_step(inputs, targets)
    counted.total, counted.syncs        # 412, Counter() when nothing waited

A dispatch-level hook (TorchDispatchMode) sees every aten operation the host issues, eager or from
autograd, whatever device runs it, so the CPU shows what a GPU step would make the host do: an
operation that reads a device value on the host (`.item()`, `bool(t)`, `nonzero`, a copy to the host)
stalls the CPU until the GPU has caught up, and the GPU then idles while the host queues the next step.
"""

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operations whose result size or value the host must read from the device before it can go on.
SYNC_OPS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::nonzero_static",
        "aten::is_nonzero",
        "aten::equal",
        "aten::masked_select",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::repeat_interleave",
        "aten::bincount",
    }
)


def copies_to_host(name, args, kwargs):
    """Whether the operation copies a device tensor into host memory."""
    if name == "aten::_to_copy":
        target = kwargs.get("device")
        return target is not None and torch.device(target).type == "cpu" and args[0].device.type != "cpu"
    if name == "aten::copy_":
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


class OpCounter(TorchDispatchMode):
    """While active: `ops` counts every dispatched operation by name, `syncs` those that wait for the device."""

    def __init__(self):
        super().__init__()
        self.ops, self.syncs = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.ops[name] += 1
        if name in SYNC_OPS or copies_to_host(name, args, kwargs):
            self.syncs[name] += 1
        return func(*args, **kwargs)

    @property
    def total(self):
        return sum(self.ops.values())
