"""The network: the 9-layer Custom ResNet of the CIFAR-10 speedruns.

    prep    conv-BN-ReLU                                  [w]      32x32
    layer1  conv-pool-BN-ReLU  + residual (conv-BN-ReLU)x2 [2w]     16x16
    layer2  conv-pool-BN-ReLU                             [4w]     8x8
    layer3  conv-pool-BN-ReLU  + residual (conv-BN-ReLU)x2 [8w]     4x4
    head    MaxPool(4) - flatten - Linear                 -> logits

At width=64 it has 6,573,130 parameters. Everything is an nn.Sequential of stock layers (plus a tiny
Residual wrapper) so torch.compile and channels_last handle it without special cases.

Its layer-by-layer summary, receptive fields and FLOP count are in speedrun/summary.py.
"""

from torch import nn


def conv_bn_relu(c_in, c_out, pool=False):
    """3x3 bias-free conv (BN supplies the shift), optionally a 2x2 max-pool, then BN and ReLU."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))  # pooling before BN: BN and ReLU then run on 4x fewer pixels
    layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + block(x)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


def residual_layer(c_in, c_out):
    """conv-pool-BN-ReLU, then a residual branch of two conv-BN-ReLU at the new width."""
    return nn.Sequential(
        conv_bn_relu(c_in, c_out, pool=True),
        Residual(nn.Sequential(conv_bn_relu(c_out, c_out), conv_bn_relu(c_out, c_out))),
    )


class CustomResNet(nn.Sequential):
    """The speedrun ResNet; returns logits (the loss applies the softmax)."""

    def __init__(self, num_classes=10, width=64):
        super().__init__()
        self.prep = conv_bn_relu(3, width)
        self.layer1 = residual_layer(width, 2 * width)
        self.layer2 = conv_bn_relu(2 * width, 4 * width, pool=True)
        self.layer3 = residual_layer(4 * width, 8 * width)
        self.pool = nn.MaxPool2d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * width, num_classes)


def build_model(cfg, train_images=None):
    """The configured net; the record net initialises its first layer from the training images."""
    if cfg["model"]["arch"] == "resnet":
        return CustomResNet(width=cfg["model"]["width"])
    from speedrun.nets.record_net import build_record_net

    return build_record_net(cfg, train_images)
