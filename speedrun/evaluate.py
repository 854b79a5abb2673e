"""Evaluation: loss and accuracy over a held-out set, with optional test-time augmentation."""
import torch
import torch.nn.functional as F


def normalize(images, table):
    """uint8 NHWC images -> the net's input, NCHW in channels-last memory, by table lookup."""
    channels = torch.arange(3, device=images.device)
    return table[channels, images.long()].permute(0, 3, 1, 2)


def shift(images, dy, dx):
    """Images translated by (dy, dx) pixels, filling the uncovered border by reflection."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    return padded[..., 1 - dy:1 - dy + height, 1 - dx:1 - dx + width]


def tta_logits(net, inputs, level=2):
    """Logits averaged over test-time augmented views of `inputs`, one forward pass per view.

    level 0: the inputs alone. 1: mean of the inputs and their mirror images. 2: half weight on the
    level-1 pair, half on the mirrored pairs of the inputs translated by one pixel down-right and
    up-left (reflect padding): the untranslated view is the most typical, so it counts most.
    """
    if level not in (0, 1, 2):
        raise ValueError(f"tta level must be 0, 1 or 2, got {level}")
    if level == 0:
        return net(inputs)

    def mirrored_mean(x):
        return 0.5 * (net(x) + net(x.flip(-1)))

    logits = mirrored_mean(inputs)
    if level == 2:
        shifted = 0.5 * (mirrored_mean(shift(inputs, 1, 1)) + mirrored_mean(shift(inputs, -1, -1)))
        logits = 0.5 * (logits + shifted)
    return logits


@torch.no_grad()
def evaluate(net, images, labels, table, batch_size=1000, tta=0):
    """Sums over the set as one device tensor [loss sum, correct, count]; no host sync inside."""
    was_training = net.training
    net.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), batch_size):
        inputs, targets = normalize(images[start:start + batch_size], table), labels[start:start + batch_size]
        logits = tta_logits(net, inputs, tta).float()
        totals[0] += F.cross_entropy(logits, targets, reduction="sum")
        totals[1] += (logits.argmax(1) == targets).sum()
        totals[2] += len(targets)
    net.train(was_training)
    return totals
