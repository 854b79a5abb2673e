"""Evaluation: loss and accuracy over a held-out set, with optional test-time augmentation.

Test-time augmentation can be selective: only the images the plain forward pass is unsure about (top
softmax probability below a threshold) get the augmented views, which saves their forward passes on the
confident majority, whose prediction the views rarely change.
"""

import torch
import torch.nn.functional as F

from speedrun.data.augment import normalize


def shift(images, dy, dx):
    """Images translated by (dy, dx) pixels, filling the uncovered border by reflection."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    return padded[..., 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]


def layout(x):
    """The memory format `x` is laid out in: channels-last or plain contiguous."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def memory_format_of(net):
    """The memory format of the net's first spatial filter (channels-last after policy.prepare): its inputs
    are given it, so that a compiled net sees one layout and compiles one graph for them."""
    for p in net.parameters():
        if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1:
            return layout(p)
    return torch.contiguous_format


def check_level(level):
    if level not in (0, 1, 2):
        raise ValueError(f"tta level must be 0, 1 or 2, got {level}")


def check_threshold(below):
    if not 0 <= below <= 1:  # also refuses NaN
        raise ValueError(f"a tta confidence threshold must be between 0 and 1, got {below}")


def tta_logits(net, inputs, level=2, plain=None):
    """Logits averaged over test-time augmented views of `inputs`, one forward pass per view.

    level 0: the inputs alone. 1: mean of the inputs and their mirror images. 2: half weight on the
    level-1 pair, half on the mirrored pairs of the inputs translated by one pixel down-right and
    up-left (reflect padding): the untranslated view is the most typical, so it counts most.

    `plain`, when given, is net(inputs) already computed, and stands in for that view's forward pass.
    Every view reaches the net in the layout and dtype of `inputs`: a shifted view is a strided slice,
    padded in float32 under a CPU's autocast, and a compiled net would compile a graph for each.
    """
    check_level(level)
    if level == 0:
        return net(inputs) if plain is None else plain
    memory_format = layout(inputs)

    def forward(view):
        return net(view.to(inputs.dtype).contiguous(memory_format=memory_format))  # .to alone may keep a slice

    def mirrored_mean(x, unflipped=None):
        return 0.5 * ((forward(x) if unflipped is None else unflipped) + forward(x.flip(-1)))

    logits = mirrored_mean(inputs, plain)
    if level == 2:
        shifted = 0.5 * (mirrored_mean(shift(inputs, 1, 1)) + mirrored_mean(shift(inputs, -1, -1)))
        logits = 0.5 * (logits + shifted)
    return logits


def selective_tta_logits(net, inputs, level=2, below=1.0):
    """(logits, how many images got the augmented views): test-time augmentation at `level` only for
    the images whose plain forward pass puts a top softmax probability below `below`; the others keep
    their plain logits.

    This saves the extra views' forward passes on confident images, and the plain pass is shared: it
    picks the unsure images and is their untranslated view, so an unsure image costs no more than under
    plain tta_logits. Picking them syncs with the host once. `below` >= 1 is plain tta_logits for every
    image (even one the net is certain of to float precision); `below` 0 is the plain pass alone.
    """
    check_level(level)
    check_threshold(below)
    if level == 0:
        return net(inputs), 0
    if below >= 1:
        return tta_logits(net, inputs, level), len(inputs)
    plain = net(inputs)
    unsure = (plain.float().softmax(1).amax(1) < below).nonzero().squeeze(1)
    if len(unsure) == 0:
        return plain, 0
    logits = plain.clone()
    logits[unsure] = tta_logits(net, inputs[unsure], level, plain[unsure]).to(logits.dtype)
    return logits, len(unsure)


@torch.no_grad()
def evaluate(net, images, labels, table, batch_size=1000, tta=0, tta_below=1.0):
    """Sums over the set as one device tensor [loss sum, correct, count]; no host sync inside.

    `tta_below` < 1 gives the test-time augmentation only to the images whose plain top probability is
    below it (selective_tta_logits; one host sync per batch). The default 1 augments every image.
    """
    return evaluate_selective(net, images, labels, table, batch_size, tta, tta_below)[:3]


@torch.no_grad()
def evaluate_selective(net, images, labels, table, batch_size=1000, tta=2, below=1.0):
    """Sums over the set as one device tensor [loss sum, correct, count, images given tta], with tta at
    level `tta` only for images whose plain top probability is below `below` (selective_tta_logits; at
    the default 1, every image gets it and nothing syncs with the host)."""
    was_training = net.training
    net.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=images.device)
    memory_format = memory_format_of(net)
    for start in range(0, len(images), batch_size):
        inputs = normalize(images[start : start + batch_size], table).contiguous(memory_format=memory_format)
        targets = labels[start : start + batch_size]
        logits, augmented = selective_tta_logits(net, inputs, tta, below)
        logits = logits.float()
        totals[0] += F.cross_entropy(logits, targets, reduction="sum")
        totals[1] += (logits.argmax(1) == targets).sum()
        totals[2] += len(targets)
        totals[3] += augmented
    net.train(was_training)
    return totals
