"""Evaluation: table-lookup normalisation, test-time augmentation views, summed metrics."""

import pytest
import torch

from speedrun.data.augment import normalize
from speedrun.engine.evaluate import evaluate, evaluate_selective, selective_tta_logits, shift, tta_logits
from speedrun.nets.record_net import RecordNet

SIZE = 16


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return RecordNet(widths=(8, 16, 16))


def test_shift_moves_content_and_reflects_border():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down_right = shift(x, 1, 1)
    torch.testing.assert_close(down_right[..., 1:, 1:], x[..., :-1, :-1])
    torch.testing.assert_close(down_right[..., 0, 1:], x[..., 1, :-1])  # row -1 reflects to row 1
    torch.testing.assert_close(shift(x, -1, -1)[..., :-1, :-1], x[..., 1:, 1:])


def test_tta_levels():
    net = tiny_net().eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = net(x)
        torch.testing.assert_close(tta_logits(net, x, 0), plain)
        torch.testing.assert_close(tta_logits(net, x, 1), 0.5 * (plain + net(x.flip(-1))))
        level2 = tta_logits(net, x, 2)
        # Mirror invariance: mirrored inputs give the same level-1 and level-2 logits.
        torch.testing.assert_close(tta_logits(net, x.flip(-1), 1), tta_logits(net, x, 1))
    assert level2.shape == plain.shape == (3, 10)
    with pytest.raises(ValueError):
        tta_logits(net, x, 3)


def test_normalize_looks_up_each_channel():
    table = torch.arange(3 * 256, dtype=torch.float32).view(3, 256)
    images = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    out = normalize(images, table)
    assert out.shape == (2, 3, 4, 4) and out.is_contiguous(memory_format=torch.channels_last)
    for c in range(3):
        torch.testing.assert_close(out[:, c], table[c, images[..., c].long()])


class Constant(torch.nn.Module):
    """Predicts class = the first pixel's red value mod 10, whatever the batch."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long() % 10, 10).float() * 50


def test_evaluate_sums_loss_correct_and_count_over_uneven_batches():
    images = torch.randint(0, 256, (25, 4, 4, 3), dtype=torch.uint8)
    labels = images[:, 0, 0, 0].long() % 10
    labels[:5] = (labels[:5] + 1) % 10  # five wrong
    table = torch.arange(256, dtype=torch.float32).repeat(3, 1)
    loss, correct, count = evaluate(Constant(), images, labels, table, batch_size=7).tolist()
    assert (correct, count) == (20, 25)
    assert loss == pytest.approx(5 * 50, rel=1e-4)  # each wrong answer costs a logit gap of 50


def random_set(n=40, seed=1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (n,), generator=generator), torch.linspace(-2, 2, 256).repeat(3, 1)


@pytest.mark.parametrize("tta", [1, 2])
def test_selective_tta_at_threshold_one_is_plain_tta_and_at_zero_is_no_tta(tta):
    net, (images, labels, table) = tiny_net(), random_set()
    every = evaluate(net, images, labels, table, batch_size=16, tta=tta)
    assert torch.equal(evaluate(net, images, labels, table, batch_size=16, tta=tta, tta_below=1.0), every)
    assert torch.equal(
        evaluate_selective(net, images, labels, table, 16, tta, 1.0), torch.cat([every, every[2:]])
    )  # every image got the views
    # No top probability is below 0: the plain pass alone, the same sums as tta=0 to the bit.
    plain = evaluate(net, images, labels, table, batch_size=16, tta=0)
    assert torch.equal(evaluate(net, images, labels, table, batch_size=16, tta=tta, tta_below=0.0), plain)
    assert evaluate_selective(net, images, labels, table, 16, tta, 0.0)[3] == 0
    assert not torch.equal(plain, every)  # so the two checks above tell the paths apart


def test_selective_tta_shares_the_plain_pass_and_matches_full_tta_on_the_unsure():
    net, (images, _, table) = tiny_net().eval(), random_set()
    inputs = normalize(images, table)
    with torch.no_grad():
        plain, full = net(inputs), tta_logits(net, inputs, 2)
        below = plain.softmax(1).amax(1).median().item()  # about half the images are below it
        unsure = plain.softmax(1).amax(1) < below
        logits, augmented = selective_tta_logits(net, inputs, 2, below)
    assert augmented == unsure.sum() and 0 < augmented < len(inputs)
    torch.testing.assert_close(logits, torch.where(unsure[:, None], full, plain))


class Mirrored(torch.nn.Module):
    """Four classes: logit k is a tenth of the first row's red value in column k, plus a bias that
    favours class 3. Mirroring reverses the row, so flip TTA moves weight from column 0 to class 3."""

    def forward(self, x):
        return 0.1 * x[:, 0, 0, :] + torch.tensor([0.0, 0.0, 0.0, 0.5])


def mirrored_set():
    """Even images confident (row 100,0,0,0: class 0 at ~0.9999), odd ones unsure (row 10,0,0,0: class 0
    at ~0.4); flip TTA turns both to class 3, which is the label of the unsure ones."""
    images = torch.zeros(10, 2, 4, 3, dtype=torch.uint8)
    images[0::2, 0, 0, 0], images[1::2, 0, 0, 0] = 100, 10
    labels = torch.tensor([0, 3] * 5)
    return images, labels, torch.arange(256, dtype=torch.float32).repeat(3, 1)


def test_selective_tta_changes_only_the_unsure_images():
    images, labels, table = mirrored_set()
    inputs, net = normalize(images, table), Mirrored()
    plain, everywhere = net(inputs), tta_logits(net, inputs, 1)
    assert plain.argmax(1).tolist() == [0] * 10 and everywhere.argmax(1).tolist() == [3] * 10
    logits, augmented = selective_tta_logits(net, inputs, 1, below=0.9)
    assert augmented == 5
    torch.testing.assert_close(logits[0::2], plain[0::2], rtol=0, atol=0)  # the confident keep their logits
    torch.testing.assert_close(logits[1::2], everywhere[1::2])  # the unsure get the TTA ones
    assert logits.argmax(1).tolist() == [0, 3] * 5
    # Summed over the set: plain gets the confident right, full TTA the unsure, selective both.
    assert evaluate(net, images, labels, table, 3, tta=0)[1] == 5
    assert evaluate(net, images, labels, table, 3, tta=1)[1] == 5
    assert evaluate(net, images, labels, table, 3, tta=1, tta_below=0.9)[1] == 10
    _, correct, count, augmented = evaluate_selective(net, images, labels, table, 3, 1, 0.9).tolist()
    assert (correct, count, augmented) == (10, 10, 5)
    assert evaluate_selective(net, images, labels, table, 3, 1, 0.3)[3] == 0  # both kinds are above 0.3
    assert evaluate_selective(net, images, labels, table, 3, 0, 0.9)[3] == 0  # level 0 has no views to add


def test_selective_tta_levels_and_thresholds_are_checked():
    images, labels, table = mirrored_set()
    for below in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 1"):
            evaluate(Mirrored(), images, labels, table, tta=1, tta_below=below)
        with pytest.raises(ValueError, match="between 0 and 1"):
            selective_tta_logits(Mirrored(), normalize(images, table), 1, below)
    with pytest.raises(ValueError, match="tta level"):
        evaluate_selective(Mirrored(), images, labels, table, tta=3, below=0.5)
