"""RecordNet: shapes, counts, whitening init, TTA, and a few training steps."""

import pytest
import torch
import torch.nn.functional as F

from speedrun.nets.record_net import IdentityInitConv, RecordNet, whiten_init_
from speedrun.optim.muon import Muon
from speedrun.summary import forward_flops

WIDTHS = (8, 16, 16)
SIZE = 16


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return RecordNet(widths=WIDTHS)


def correlated_images(n=32, size=SIZE, seed=0):
    """Images whose channels and neighbouring pixels are strongly correlated, with a non-zero mean."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 3, size + 1, size + 1, generator=generator)
    smooth = noise[..., 1:, 1:] + noise[..., :-1, :-1] + 0.5 * noise[..., 1:, :-1]
    mixing = torch.tensor([[1.0, 0.8, 0.2], [0.5, 1.0, 0.7], [0.1, 0.9, 1.0]])
    independent = 0.3 * torch.randn(n, 3, size, size, generator=generator)  # keeps every direction above eps
    mixed = torch.einsum("oc,nchw->nohw", mixing, smooth) + independent
    return mixed + torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)


def count_parameters(net, trainable_only=False):
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def analytic_parameter_count(widths, classes=10, whiten=24):
    channels = (whiten,) + widths
    count = whiten * 3 * 2 * 2 + whiten + widths[-1] * classes
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        count += 9 * c_in * c_out + 9 * c_out * c_out + 2 * 2 * c_out  # two convs, two BN (scale + bias)
    return count


def test_output_shape_and_parameter_counts():
    net = tiny_net()
    assert net(torch.randn(4, 3, SIZE, SIZE)).shape == (4, 10)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(net) == analytic_parameter_count(WIDTHS)
    frozen = 24 * 3 * 2 * 2 + 2 * sum(WIDTHS)  # whitening weight and BN scales
    assert count_parameters(net, trainable_only=True) == analytic_parameter_count(WIDTHS) - frozen
    assert count_parameters(RecordNet()) == analytic_parameter_count((64, 256, 256))


def test_forward_flops_matches_hand_count():
    net = tiny_net()
    s = SIZE - 1  # 2x2 whitening conv without padding
    expected = 24 * 12 * s * s
    c_in = 24
    for width in WIDTHS:
        expected += width * c_in * 9 * s * s  # conv before the pool
        s //= 2
        expected += width * width * 9 * s * s
        c_in = width
    expected += WIDTHS[-1] * 10
    net.train()
    running_mean = net.layers[0].norm1.running_mean.clone()
    assert forward_flops(net, (3, SIZE, SIZE)) == 2 * expected
    assert net.training and torch.equal(net.layers[0].norm1.running_mean, running_mean)
    assert forward_flops(net, (3, SIZE, SIZE)) == 2 * expected  # hooks were removed


def test_batchnorm_has_fixed_unit_scale_and_paper_momentum():
    norm = tiny_net().layers[0].norm1
    assert not norm.weight.requires_grad and torch.all(norm.weight == 1)
    assert norm.momentum == pytest.approx(0.4)  # 0.6 kept from the running statistics


def test_identity_init_passes_input_through():
    conv = IdentityInitConv(4, 6)
    x = torch.randn(2, 4, 5, 5)
    out = conv(x)
    torch.testing.assert_close(out[:, :4], x)
    assert out[:, 4:].abs().sum() > 0  # remaining filters keep their random init


def test_whitening_gives_identity_covariance():
    images = correlated_images()
    conv = torch.nn.Conv2d(3, 24, 2, bias=True)
    whiten_init_(conv, images, eps=5e-4, chunk_size=7)  # chunking must not change the statistics
    with torch.no_grad():
        out = conv(images).permute(0, 2, 3, 1).reshape(-1, 24).double()
    positive = out[:, :12]
    covariance = positive.T @ positive / len(positive)  # bias centres the outputs, so no mean to remove
    torch.testing.assert_close(covariance, torch.eye(12, dtype=torch.float64), atol=1e-2, rtol=0)
    torch.testing.assert_close(out[:, 12:], -positive)
    # Exactly: diag(l / (l + eps)) over the patch eigenvalues l, strongest first.
    patches = F.unfold(images, 2).transpose(1, 2).reshape(-1, 12).double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(patches.T, correction=0)).flip(0)
    torch.testing.assert_close(covariance, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-5, rtol=0)
    # The raw patches are far from white, so the test is not trivially true.
    assert torch.corrcoef(patches.T).abs().triu(1).max() > 0.5


def test_whitening_rejects_wrong_width():
    with pytest.raises(ValueError):
        whiten_init_(torch.nn.Conv2d(3, 12, 2), correlated_images(4))


def test_a_few_training_steps_reduce_the_loss():
    net = tiny_net(seed=1)
    images = correlated_images(n=32, seed=1)
    labels = (images[:, 0].mean((1, 2)) > images[:, 0].mean()).long()  # learnable from the inputs
    whiten_init_(net.whiten, images)
    trainable = [p for p in net.parameters() if p.requires_grad]  # the frozen whitening weight and BN scales out
    muon = Muon([p for p in trainable if p.ndim == 4], lr=0.2, momentum=0.6, ns_dtype=torch.float32)
    sgd = torch.optim.SGD(
        [
            dict(params=[p for p in trainable if p.ndim != 4 and p is not net.head.weight]),
            dict(params=[net.head.weight], lr=2.0),
        ],
        lr=0.05,
        momentum=0.8,
        nesterov=True,
    )
    whiten_weight = net.whiten.weight.detach().clone()
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(net(images), labels)
        losses.append(loss.item())
        for optimizer in (muon, sgd):
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        muon.step()
        sgd.step()
    assert losses[-1] < 0.8 * losses[0]
    assert torch.equal(net.whiten.weight, whiten_weight)
