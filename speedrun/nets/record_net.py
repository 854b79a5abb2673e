"""RecordNet: the small, fast network of the speedrun record recipe, and the pieces around it.

After the ideas of the airbench94 paper ("94% on CIFAR-10 in 3.29 seconds"): a frozen 2x2 patch-whitening
conv, three conv-pool-BN blocks, a max-pooled linear head. Here too: the whitening init from data,
the split of parameters between Muon and SGD, test-time augmentation, and parameter/FLOP counts.
"""

import torch
import torch.nn.functional as F
from torch import nn


class BiasOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: GELU after it only needs a shift, and a frozen scale leaves the
    scale of each block to its conv filters alone, which Muon controls.

    `momentum` weighs the old running statistics (running = momentum * running + (1 - momentum) * batch),
    the opposite of torch's convention.
    """

    def __init__(self, num_features, momentum=0.6, eps=1e-12):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)


class IdentityInitConv(nn.Conv2d):
    """3x3 'same' conv, no bias (BN follows), whose first in_channels filters start as the identity
    so that at init each block passes its input through and deep signal propagation is easy."""

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        with torch.no_grad():
            n = min(in_channels, out_channels)
            self.weight[:n] = 0
            self.weight[:n, :, 1, 1] = torch.eye(n, in_channels)


class ConvGroup(nn.Module):
    """conv -> maxpool2 -> BN -> GELU -> conv -> BN -> GELU; pooling before BN halves the BN cost."""

    def __init__(self, in_channels, out_channels, batchnorm_momentum):
        super().__init__()
        self.conv1 = IdentityInitConv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BiasOnlyBatchNorm(out_channels, batchnorm_momentum)
        self.conv2 = IdentityInitConv(out_channels, out_channels)
        self.norm2 = BiasOnlyBatchNorm(out_channels, batchnorm_momentum)
        self.activation = nn.GELU()

    def forward(self, x):
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class RecordNet(nn.Module):
    """whiten (frozen 2x2 conv + bias) -> GELU -> ConvGroup x len(widths) -> global max -> linear * scaling.

    The whitening weights must be set from training images with `whiten_init_` before training.
    `scaling` shrinks the logits: the head's outputs start large because the features are max-pooled.
    """

    def __init__(
        self,
        widths=(64, 256, 256),
        batchnorm_momentum=0.6,
        scaling=1 / 9,
        num_classes=10,
        in_channels=3,
        whiten_kernel_size=2,
    ):
        super().__init__()
        # Each patch eigenvector gives two filters, +v and -v, so GELU keeps both signs of the projection.
        whiten_width = 2 * in_channels * whiten_kernel_size**2
        self.whiten = nn.Conv2d(in_channels, whiten_width, whiten_kernel_size, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by the data, never trained
        self.activation = nn.GELU()
        channels = (whiten_width,) + tuple(widths)
        self.layers = nn.Sequential(
            *(ConvGroup(c_in, c_out, batchnorm_momentum) for c_in, c_out in zip(channels[:-1], channels[1:]))
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.scaling = scaling

    def forward(self, x):
        x = self.layers(self.activation(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.scaling


@torch.no_grad()
def whiten_init_(conv, images, eps=5e-4, chunk_size=512):
    """Set `conv` to whiten its input patches, from float NCHW `images` (already normalised).

    With C the covariance of the conv's patches (eigenvalues l, eigenvectors v), the filters are
    v / sqrt(l + eps) followed by their negatives, strongest component first, and the bias centres
    every output channel over `images`. Output covariance of the first half is then
    diag(l / (l + eps)), the identity for components well above eps. Returns `conv`.
    """
    out_channels, in_channels, kh, kw = conv.weight.shape
    dim = in_channels * kh * kw
    if out_channels != 2 * dim:
        raise ValueError(f"whitening conv needs 2 * {dim} output channels, has {out_channels}")
    total = torch.zeros(dim, dtype=torch.float64, device=images.device)
    outer = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
    count = 0
    for chunk in images.split(chunk_size):  # chunks keep the unfolded patches small
        patches = F.unfold(chunk.double(), (kh, kw)).transpose(1, 2).reshape(-1, dim)
        total += patches.sum(0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues = eigenvalues.clamp(min=0)  # rounding can make a null direction slightly negative
    filters = (eigenvectors / (eigenvalues + eps).sqrt()).T.flip(0)
    filters = torch.cat([filters, -filters])
    conv.weight.copy_(filters.reshape(conv.weight.shape))  # copy_ casts to the conv's dtype and device
    if conv.bias is not None:
        conv.bias.copy_(-(filters @ mean))
    return conv


@torch.no_grad()
def build_record_net(cfg, train_images=None, whiten_sample=5000):
    """The record recipe's net at `model.width`, its whitening layer fitted to training images."""
    width = cfg["model"]["width"]
    net = RecordNet(widths=(width, 4 * width, 4 * width))
    if train_images is not None:
        from speedrun.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, normalize_table

        generator = torch.Generator().manual_seed(cfg.get("training", {}).get("seed", 0))  # random: all classes
        chosen = torch.randperm(len(train_images), generator=generator)[:whiten_sample]
        sample = train_images[chosen.to(train_images.device)]
        table = normalize_table(CIFAR10_MEAN, CIFAR10_STD, torch.float32, sample.device)
        whiten_init_(net.whiten, normalize(sample, table).float().cpu())
    return net
