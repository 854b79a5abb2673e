"""The resolution curriculum (`--training.resolutions`): the early epochs train on smaller images, which
cost less, the last ones at full size, as published CIFAR-10 speedruns do (24, then 28, then 32 pixels).

    sides = curriculum(cfg)                      # (32,) when off; checked against the epochs and the net
    side = side_for_epoch(sides, epoch, epochs)  # each side an equal share of the epochs, in order
    inputs = downscale(inputs, side)             # in the train step, before the forward pass

The loader still draws and augments 32x32 batches; the train step downscales them (speedrun/engine/step.py, one
step, and one graph when compiled, per side). The test images stay 32x32: the last side is 32, so the
last epochs train on what the net is evaluated on.
"""

import torch
import torch.nn.functional as F

from speedrun.data.augment import IMAGE_SIZE
from speedrun.nets.model import build_model

SMALLEST = 8


def parse_sides(text):
    """'24,28,32' -> (24, 28, 32); '' -> (32,): every epoch at full size. A ValueError says what is wrong."""
    if not text.strip():
        return (IMAGE_SIZE,)
    try:
        sides = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"--training.resolutions {text!r}: expected image sides separated by commas, e.g. 24,28,32"
        ) from None
    if not all(SMALLEST <= side <= IMAGE_SIZE for side in sides):
        raise ValueError(f"--training.resolutions {text!r}: every side must be in [{SMALLEST}, {IMAGE_SIZE}]")
    if sides[-1] != IMAGE_SIZE:
        raise ValueError(
            f"--training.resolutions {text!r}: the last side must be {IMAGE_SIZE}, the test "
            f"images' side, so that the last epochs train at the size the net is evaluated at"
        )
    return sides


def side_for_epoch(sides, epoch, epochs):
    """The side epoch `epoch` (from 0) of `epochs` trains at: each side an equal share, in order."""
    return sides[min(epoch * len(sides) // epochs, len(sides) - 1)]


def curriculum(cfg):
    """The run's sides (parse_sides), checked before any data is loaded: one epoch at least for each
    side (with fewer epochs than sides, the last epoch would not be at 32), and a net that takes them."""
    t = cfg["training"]
    sides = parse_sides(t["resolutions"])
    if len(sides) > t["epochs"]:
        raise ValueError(
            f"--training.resolutions {t['resolutions']!r}: {len(sides)} sides need at least as "
            f"many epochs, the run has {t['epochs']}"
        )
    smaller = sorted(set(sides) - {IMAGE_SIZE})
    if smaller:
        check_net(cfg, smaller)
    return sides


def check_net(cfg, sides):
    """A ValueError unless the configured net takes `sides`-pixel images, told by a forward pass on the
    meta device (shapes only, nothing computed). The seed ResNet's head pools a fixed 4x4 map and takes
    32 pixels only; the record net pools globally and takes 9 or more."""
    with torch.device("meta"):
        net = build_model(cfg)
        for side in sides:
            try:
                with torch.no_grad():
                    net(torch.empty(2, 3, side, side))
            except RuntimeError as error:
                reason = str(error).splitlines()[0]
                raise ValueError(
                    f"--training.resolutions {cfg['training']['resolutions']!r}: the "
                    f"{cfg['model']['arch']} net cannot take {side}x{side} images ({reason}). A "
                    f"curriculum needs a net whose head takes any size, as the record net's global "
                    f"max pool does (--model.arch record, from 9 pixels)"
                ) from None


def downscale(inputs, side):
    """The NCHW batch resized to side x side: bilinear, antialiased (the filter widened to each output
    pixel's footprint, so that detail too fine for the side is damped, not aliased into coarse patterns at
    full strength). In float32: torch 2.13 has no CPU kernel for antialiased bilinear in bf16
    ('compute_index_ranges_weights' not implemented for 'BFloat16'), so a bf16 batch is resized in float32
    and rounded back once; a float32 batch is not copied."""
    return F.interpolate(inputs.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False).to(
        inputs.dtype
    )
