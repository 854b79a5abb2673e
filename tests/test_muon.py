"""Muon and Newton-Schulz against a plain float64 reference and the properties they promise."""
import pytest
import torch

from speedrun.muon import Muon, newton_schulz

A, B, C = 3.4445, -4.7750, 2.0315


def reference_orthogonalise(G, steps=5):
    X = G.reshape(G.shape[0], -1).double()
    X = X / X.norm()
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    for _ in range(steps):
        gram = X @ X.T
        X = A * X + B * (gram @ X) + C * (gram @ gram @ X)
    if tall:
        X = X.T
    return X.reshape(G.shape)


def reference_run(weights, grads, lr, momentum, nesterov, weight_decay):
    """Plain float64 Muon over a list of gradients per step; returns the final weights."""
    weights = [w.double().clone() for w in weights]
    buffers = [torch.zeros_like(w) for w in weights]
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = g.double()
            buffers[i] = momentum * buffers[i] + g
            direction = g + momentum * buffers[i] if nesterov else buffers[i]
            rows, cols = g.shape[0], g[0].numel()
            update = reference_orthogonalise(direction) * max(1.0, rows / cols) ** 0.5
            weights[i] = weights[i] * (1 - lr * weight_decay) - lr * update
    return weights


SHAPES = [(6, 10), (12, 5), (8, 4, 3, 3)]


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_step_matches_float64_reference(nesterov, weight_decay):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    initial = [p.detach().clone() for p in params]
    grads = [[torch.randn(shape) for shape in SHAPES] for _ in range(3)]
    optimizer = Muon(params, lr=0.05, momentum=0.6, nesterov=nesterov, weight_decay=weight_decay,
                     ns_dtype=torch.float32)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    expected = reference_run(initial, grads, 0.05, 0.6, nesterov, weight_decay)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach().double(), e, atol=2e-5, rtol=1e-4)


def test_tensor_lr_equals_float_lr_and_follows_changes():
    torch.manual_seed(1)
    grad = torch.randn(8, 12)
    runs = []
    for lr in (0.02, torch.tensor(0.02)):
        p = torch.nn.Parameter(torch.ones(8, 12))
        optimizer = Muon([p], lr=lr, ns_dtype=torch.float32)
        for _ in range(2):
            p.grad = grad.clone()
            optimizer.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1])
    lr = torch.tensor(0.0)
    p = torch.nn.Parameter(torch.ones(8, 12))
    optimizer = Muon([p], lr=lr)
    p.grad = grad.clone()
    optimizer.step()
    assert torch.equal(p.detach(), torch.ones(8, 12))
    lr.fill_(0.1)
    optimizer.step()
    assert not torch.equal(p.detach(), torch.ones(8, 12))


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 8, 3, 3), (10, 256), (24, 3, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_newton_schulz_singular_values_near_one(shape, dtype):
    torch.manual_seed(2)
    G = torch.randn(shape)
    X = newton_schulz(G, steps=5, dtype=dtype)
    assert X.shape == G.shape and X.dtype == G.dtype
    singular_values = torch.linalg.svdvals(X.reshape(shape[0], -1))
    assert singular_values.min() > 0.5 and singular_values.max() < 1.5


def test_newton_schulz_square_keeps_most_directions_in_band():
    # A random square matrix has singular values near 0 that five steps cannot lift; the rest are in band.
    torch.manual_seed(3)
    singular_values = torch.linalg.svdvals(newton_schulz(torch.randn(64, 64), 5, torch.float32))
    in_band = (singular_values > 0.5) & (singular_values < 1.5)
    assert singular_values.max() < 1.5 and in_band.float().mean() > 0.9


def test_newton_schulz_matches_reference_and_keeps_singular_vectors():
    torch.manual_seed(4)
    G = torch.randn(20, 7)
    X = newton_schulz(G, 5, torch.float32)
    torch.testing.assert_close(X.double(), reference_orthogonalise(G), atol=1e-5, rtol=1e-4)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    # Same singular vectors: U^T X V is diagonal.
    core = U.T @ X @ Vh.T
    off_diagonal = core - torch.diag(torch.diagonal(core))
    assert off_diagonal.abs().max() < 1e-4


def test_rejects_vector_parameters_and_bad_momentum():
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.zeros(5))], lr=0.1)
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.zeros(5, 5))], lr=0.1, momentum=1.0)


def test_parameters_without_grad_are_skipped():
    p, q = torch.nn.Parameter(torch.ones(4, 6)), torch.nn.Parameter(torch.ones(4, 6))
    optimizer = Muon([p, q], lr=0.1)
    p.grad = torch.randn(4, 6)
    optimizer.step()
    assert torch.equal(q.detach(), torch.ones(4, 6)) and not torch.equal(p.detach(), torch.ones(4, 6))
