"""The network: the 9-layer Custom ResNet of the CIFAR-10 speedruns, and its layer-by-layer summary.

    prep    conv-BN-ReLU                                  [w]      32x32
    layer1  conv-pool-BN-ReLU  + residual (conv-BN-ReLU)x2 [2w]     16x16
    layer2  conv-pool-BN-ReLU                             [4w]     8x8
    layer3  conv-pool-BN-ReLU  + residual (conv-BN-ReLU)x2 [8w]     4x4
    head    MaxPool(4) - flatten - Linear                 -> logits

At width=64 it has 6,573,130 parameters. Everything is an nn.Sequential of stock layers (plus a tiny
Residual wrapper) so torch.compile and channels_last handle it without special cases.

`python -m speedrun.model [--model.width 64]` prints a torchsummary-like table with the receptive field
of every layer.
"""
import torch
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


# ---- summary: output shapes, parameters and receptive fields ----------------------------------------
#
# Receptive field convention: input pixel i covers [i, i+1), so its centre is i + 0.5 and the input has
# r=1, j=1, start=0.5. For a layer of kernel k, stride s, padding p (dilation folded into k):
#     j_out = j_in * s;  r_out = r_in + (k - 1) * j_in;  start_out = start_in + ((k - 1) / 2 - p) * j_in
# `start` is the centre of the first output unit's field in input pixel coordinates. BN, ReLU, flatten
# and the FC layer leave the field as it is; a residual sum takes the field of its deeper branch.

def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value  # square kernels assumed


def _spatial_geometry(module):
    """(kernel, stride, padding) of a conv or pool along one axis, or None for a pointwise layer."""
    if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return None
    kernel, stride, padding = _first(module.kernel_size), _first(module.stride), _first(module.padding)
    dilation = _first(getattr(module, "dilation", 1))
    return dilation * (kernel - 1) + 1, stride, padding


def _next_field(field, module):
    geometry = _spatial_geometry(module)
    if geometry is None:
        return field
    kernel, stride, padding = geometry
    r, j, start = field
    return r + (kernel - 1) * j, j * stride, start + ((kernel - 1) / 2 - padding) * j


_KINDS = {nn.Conv2d: "conv", nn.MaxPool2d: "pool", nn.AvgPool2d: "pool", nn.BatchNorm2d: "bn",
          nn.ReLU: "relu", nn.Flatten: "flatten", nn.Linear: "fc", Residual: "add"}


@torch.no_grad()
def layer_table(model, input_size=(3, 32, 32)):
    """One dict per leaf layer and per residual sum, in execution order, from a forward pass with hooks.

    Keys: name, kind, output_shape (without the batch dim), params, trainable, r, j, start.
    """
    rows, field, saved = [], [(1, 1, 0.5)], []

    def before_residual(module, inputs):
        saved.append(field[0])

    def record(name):
        def hook(mod, inputs, output):
            if isinstance(mod, Residual):
                before = saved.pop()
                field[0] = max(field[0], before)  # the deeper branch has the larger field
            else:
                field[0] = _next_field(field[0], mod)
            own = list(mod.parameters(recurse=False))
            r, j, start = field[0]
            rows.append(dict(name=name, kind=_KINDS.get(type(mod), type(mod).__name__.lower()),
                             output_shape=tuple(output.shape[1:]), params=sum(p.numel() for p in own),
                             trainable=sum(p.numel() for p in own if p.requires_grad),
                             r=r, j=j, start=start))
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, Residual):
            handles.append(module.register_forward_pre_hook(before_residual))
        if isinstance(module, Residual) or not list(module.children()):
            handles.append(module.register_forward_hook(record(name)))
    probe(model, handles, input_size)
    return rows


def probe(model, handles, input_size=(3, 32, 32)):
    """Run one zero image through `model` for the forward hooks in `handles`, then remove them.

    In eval mode, so no BN statistics change; the model's mode is put back afterwards.
    """
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        model(torch.zeros(1, *input_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def forward_flops(net, input_size=(3, 32, 32)):
    """Forward FLOPs per image: 2 x the multiply-adds of every Conv2d and Linear (biases, norms,
    activations and pools ignored), measured on one dummy image by forward hooks. A training step
    costs about 3x this per image (forward, plus the backward's two products of the same size).
    """
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs.append(output.numel() * per_output)
        else:
            macs.append(output.numel() * module.in_features)

    probe(net, [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))],
          input_size)
    return 2 * sum(macs)


def format_summary(rows, input_size=(3, 32, 32)):
    """A torchsummary-style table of `layer_table` rows, with totals and the final receptive field."""
    header = f"{'Layer (kind)':<30}{'Output shape':>18}{'Param #':>12}{'RF':>6}{'Jump':>6}{'Start':>7}"
    rule = "=" * len(header)
    lines = [rule, header, rule]
    for row in rows:
        label = f"{row['name']} ({row['kind']})"
        lines.append(f"{label:<30}{str(list(row['output_shape'])):>18}{row['params']:>12,}"
                     f"{row['r']:>6}{row['j']:>6}{row['start']:>7.1f}")
    total = sum(row["params"] for row in rows)
    trainable = sum(row["trainable"] for row in rows)
    image = max(input_size[1:])
    final = rows[-1]["r"]
    relation = "exceeds" if final > image else "does not exceed"
    lines += [rule,
              "RF = receptive field size in input pixels, Jump = input pixels between neighbouring units,",
              "Start = centre of the first unit's field (input pixel i spans [i, i+1)).",
              f"Note: the final receptive field ({final}x{final} px) {relation} the "
              f"{input_size[1]}x{input_size[2]} input image.",
              rule,
              f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}",
              f"Total params: {total:,}"]
    return "\n".join(lines)


def build_model(cfg, train_images=None):
    """The configured net; the record net initialises its first layer from the training images."""
    if cfg["model"]["arch"] == "resnet":
        return CustomResNet(width=cfg["model"]["width"])
    from speedrun.record_net import build_record_net
    return build_record_net(cfg, train_images)


def main(argv=None):
    from speedrun.config import parse_args

    config = parse_args(argv, description="Print the Custom ResNet summary.")
    print(format_summary(layer_table(CustomResNet(width=config["model"]["width"]))))


if __name__ == "__main__":
    main()
