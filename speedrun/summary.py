"""The Custom ResNet layer by layer: output shapes, parameters, receptive fields, and a net's FLOPs.

python -m speedrun.summary [--model.width 64]    # a torchsummary-like table with every layer's field
"""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from speedrun.nets.model import CustomResNet, Residual

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


_KINDS = {
    nn.Conv2d: "conv",
    nn.MaxPool2d: "pool",
    nn.AvgPool2d: "pool",
    nn.BatchNorm2d: "bn",
    nn.ReLU: "relu",
    nn.Flatten: "flatten",
    nn.Linear: "fc",
    Residual: "add",
}


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
            rows.append(
                dict(
                    name=name,
                    kind=_KINDS.get(type(mod), type(mod).__name__.lower()),
                    output_shape=tuple(output.shape[1:]),
                    params=sum(p.numel() for p in own),
                    trainable=sum(p.numel() for p in own if p.requires_grad),
                    r=r,
                    j=j,
                    start=start,
                )
            )

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


@torch.no_grad()
def forward_flops(net, input_size=(3, 32, 32)):
    """Forward FLOPs per image, as torch's FlopCounterMode counts them on one zero image: 2 x the
    multiply-adds of every convolution and matrix product (biases, norms, activations and pools are not
    counted). A training step costs about 3x this per image (forward, plus the backward's two products
    of the same size).
    """
    with FlopCounterMode(display=False) as counter:
        probe(net, [], input_size)
    return counter.get_total_flops()


def format_summary(rows, input_size=(3, 32, 32)):
    """A torchsummary-style table of `layer_table` rows, with totals and the final receptive field."""
    header = f"{'Layer (kind)':<30}{'Output shape':>18}{'Param #':>12}{'RF':>6}{'Jump':>6}{'Start':>7}"
    rule = "=" * len(header)
    lines = [rule, header, rule]
    for row in rows:
        label = f"{row['name']} ({row['kind']})"
        lines.append(
            f"{label:<30}{str(list(row['output_shape'])):>18}{row['params']:>12,}"
            f"{row['r']:>6}{row['j']:>6}{row['start']:>7.1f}"
        )
    total = sum(row["params"] for row in rows)
    trainable = sum(row["trainable"] for row in rows)
    image = max(input_size[1:])
    final = rows[-1]["r"]
    relation = "exceeds" if final > image else "does not exceed"
    lines += [
        rule,
        "RF = receptive field size in input pixels, Jump = input pixels between neighbouring units,",
        "Start = centre of the first unit's field (input pixel i spans [i, i+1)).",
        f"Note: the final receptive field ({final}x{final} px) {relation} the "
        f"{input_size[1]}x{input_size[2]} input image.",
        rule,
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Total params: {total:,}",
    ]
    return "\n".join(lines)


def main(argv=None):
    from speedrun.runs.config import parse_args

    config = parse_args(argv, description="Print the Custom ResNet summary.", sections=("model",))
    print(format_summary(layer_table(CustomResNet(width=config["model"]["width"]))))


if __name__ == "__main__":
    main()
