"""Prediction: classify your own images with a trained net.

    python -m speedrun.predict --checkpoint runs/<run> cat.jpg dog.png
    cat.jpg: cat 87.1%, dog 9.0%, deer 1.2%

Images of any size and mode are brought to what the net was trained on, a 32x32 RGB image:

- mode: EXIF rotation is applied; transparent pixels are composited onto black (the alpha channel
  is dropped); palette, greyscale and CMYK images are converted to RGB;
- size: the shorter side is resized to 32 pixels with bicubic filtering (antialiased when shrinking),
  then the centre 32x32 is cropped, so the aspect ratio is kept and the longer side loses its ends.

Then they are normalised like the training data and run through the net in eval mode, with the
test-time augmentation the run was evaluated with, and the softmax gives the probabilities.
"""

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageOps

from speedrun.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, normalize_table
from speedrun.data.cifar import CIFAR10_CLASSES
from speedrun.engine.evaluate import tta_logits
from speedrun.nets.model import build_model
from speedrun.system.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from speedrun.system.device import PRECISIONS, device_policy, pick_device

IMAGE_SIZE = 32
BATCH_SIZE = 256  # images per forward pass: bounds memory when classifying thousands of files


class ImageError(ValueError):
    """One or more inputs could not be read as images; `problems` lists (path, reason)."""

    def __init__(self, problems):
        self.problems = problems
        lines = [f"{path}: {reason}" for path, reason in problems]
        super().__init__(
            f"{len(problems)} input(s) could not be read as images, nothing was classified:\n  " + "\n  ".join(lines)
        )


# ----------------------------------------------------------------------------------------------
# images


def _to_rgb(image):
    """RGB, with any transparency composited onto black."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path):
    """uint8 [32, 32, 3] numpy array of the image file at `path`; ImageError if it is not one."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            rgb = _to_rgb(image)
    except FileNotFoundError:
        raise ImageError([(path, "no such file")]) from None
    except IsADirectoryError:
        raise ImageError([(path, "is a folder, not an image file")]) from None
    except Image.UnidentifiedImageError:
        raise ImageError([(path, "not an image file (or a format Pillow cannot read)")]) from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError([(path, f"unreadable image ({type(error).__name__}: {error})")]) from None
    return np.asarray(ImageOps.fit(rgb, (IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.uint8).copy()


def load_images(paths):
    """uint8 [N, 32, 32, 3] of all `paths`; every unreadable one is reported in a single ImageError."""
    images, problems = [], []
    for path in paths:
        try:
            images.append(load_image(path))
        except ImageError as error:
            problems += error.problems
    if problems:
        raise ImageError(problems)
    return np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


# ----------------------------------------------------------------------------------------------
# the net


def load_net(path, policy=None):
    """(net in eval mode, the run's config, its class names) from a checkpoint file or a run folder,
    prepared by the device `policy` (default: float32 on the CPU).

    A run trained with a weight average (training.ema) was evaluated with the average, so that is
    what is loaded.
    """
    if os.path.isdir(path):
        path = find_checkpoint(path)
    elif not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    state = load_checkpoint(path)
    cfg = state.get("config")
    if not (isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) and "model" in state):
        raise CheckpointError(f"{path} lacks the net's config or weights")
    net = build_model(cfg)  # the record net's whitening layer comes from the state dict
    try:
        net.load_state_dict(state.get("average") or state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the net its config describes ({error})") from None
    policy = policy or device_policy("cpu", "fp32")
    return policy.prepare(net).eval(), cfg, state.get("classes") or CIFAR10_CLASSES


@torch.no_grad()
def class_probabilities(net, images, tta=0, policy=None):
    """Softmax over the classes, float32 [N, classes], for uint8 [N, 32, 32, 3] images."""
    policy = policy or device_policy(next(net.parameters()).device, "fp32")
    table = normalize_table(CIFAR10_MEAN, CIFAR10_STD, policy.input_dtype, policy.device)
    images = torch.as_tensor(images, device=policy.device)
    with policy.autocast():
        chunks = [
            tta_logits(net, normalize(images[i : i + BATCH_SIZE], table), tta).float().softmax(1)
            for i in range(0, len(images), BATCH_SIZE)
        ]
    return torch.cat(chunks).cpu() if chunks else torch.zeros(0, len(CIFAR10_CLASSES))


def predict(checkpoint, paths, top=3, device=None, classes=None, precision="fp32"):
    """[(path, [(class, probability), ...]), ...]: the `top` likeliest classes of each image, in order.

    `precision` is the device policy's (auto|bf16|fp32); float32 by default, since a few images are
    no throughput problem and their probabilities should not depend on the machine.

    `checkpoint` is a checkpoint file or a run folder; class names come from it (the classes of the
    data it was trained on) unless given. Every image is read before the net runs, so one unreadable
    file raises ImageError (listing all of them) and nothing is classified.
    """
    images = load_images(paths)
    policy = device_policy(pick_device(device), precision, compile="off")
    net, cfg, saved_classes = load_net(checkpoint, policy)
    classes = classes or saved_classes
    if not 1 <= top <= len(classes):
        raise ValueError(f"top must be between 1 and {len(classes)}, got {top}")
    probabilities = class_probabilities(net, images, cfg.get("training", {}).get("tta", 0), policy)
    if probabilities.shape[1] != len(classes):
        raise ValueError(
            f"the net tells {probabilities.shape[1]} classes apart, but {len(classes)} class names were given"
        )
    values, indices = probabilities.topk(top, dim=1)
    return [
        (path, [(classes[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())])
        for path, row_p, row_i in zip(paths, values, indices)
    ]


def format_prediction(path, ranked):
    return f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked)


# ----------------------------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m speedrun.predict",
        description=__doc__.splitlines()[0],
        epilog="Every image is read before anything is classified: if any file is missing or is not "
        "an image, the command lists all such files and exits with status 1 without "
        "printing predictions. Images are made 32x32 RGB: alpha composited onto black, "
        "shorter side resized to 32 (bicubic), centre-cropped.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="a checkpoint file or a run folder (its newest checkpoint is used)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=3,
        metavar="K",
        help=f"classes shown per image, 1 to {len(CIFAR10_CLASSES)} (default 3)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda when present (default)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="auto = bf16 on CUDA and on CPUs with native bf16 (default fp32)",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= len(CIFAR10_CLASSES):
        parser.error(f"--top must be between 1 and {len(CIFAR10_CLASSES)}, got {args.top}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        results = predict(args.checkpoint, args.images, args.top, args.device, precision=args.precision)
    except ValueError as error:  # ImageError, CheckpointError, a bad device: a message, no traceback
        print(f"speedrun.predict: error: {error}", file=sys.stderr)
        sys.exit(1)
    for path, ranked in results:
        print(format_prediction(path, ranked))


if __name__ == "__main__":
    main()
