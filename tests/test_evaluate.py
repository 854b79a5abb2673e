"""Evaluation: table-lookup normalisation, test-time augmentation views, summed metrics."""
import pytest
import torch

from speedrun.evaluate import evaluate, normalize, shift, tta_logits
from speedrun.record_net import RecordNet

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
