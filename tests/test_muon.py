"""Muon and Newton-Schulz against a plain float64 reference and the properties they promise, the
batched update against the one-filter-at-a-time one, and what the record step costs in operations."""

import pytest
import torch

from speedrun.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, normalize_table
from speedrun.engine.step import build_step
from speedrun.nets.model import build_model
from speedrun.optim.muon import Batch, Muon, batches, matrix_shape, newton_schulz, newton_schulz_batched, orthogonalise_
from speedrun.optim.optimizers import group_lr_table, param_groups
from speedrun.runs.config import resolve_config
from speedrun.system.device import policy_from_config
from speedrun.system.distributed import Dist
from speedrun.system.opcount import OpCounter

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
    optimizer = Muon(
        params, lr=0.05, momentum=0.6, nesterov=nesterov, weight_decay=weight_decay, ns_dtype=torch.float32
    )
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


# Matrices of mixed shapes: three filters of one shape (channels-last, as the record net's are), a 2-D
# matrix of the same [8, 36] matrix shape and a square channels-last filter padded to it; a tall and a
# wide matrix of one shape up to a transpose with a wide filter padded to them; two tall matrices of
# one short side, padded in their own orientation; a tall filter transposed to join a wide matrix
# padded to its length; a tall matrix and a wide one of its short side; and a shape of its own.
MIXED_SHAPES = [
    (8, 4, 3, 3),
    (6, 10),
    (8, 4, 3, 3),
    (12, 5),
    (16, 2, 3, 3),
    (8, 4, 3, 3),
    (10, 6),
    (8, 36),
    (40, 3),
    (8, 2, 2, 2),
    (7, 5),
    (6, 3, 2, 2),
    (20, 1, 2, 2),
    (4, 9),
    (3, 7),
]
CHANNELS_LAST_SHAPES = {(8, 4, 3, 3), (8, 2, 2, 2)}


def in_layout(tensor):
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.shape in CHANNELS_LAST_SHAPES else tensor


def per_filter_newton_schulz(G, steps=5, eps=1e-7):
    """Newton-Schulz as Muon ran it before batching, on one filter in float32."""
    X = G.reshape(G.shape[0], -1)
    X = X / (X.norm() + eps)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    for _ in range(steps):
        gram = X @ X.T
        X = A * X + (B * gram + C * gram @ gram) @ X
    if tall:
        X = X.T
    return X.reshape(G.shape)


@torch.no_grad()
def per_filter_run(weights, grads, lr, momentum, nesterov, weight_decay):
    """Muon's update as it ran before batching, one filter after another, in float32 with `lr` a float
    or a 0-d tensor. Returns the final weights and momentum buffers."""
    weights = [w.clone() for w in weights]
    buffers = [torch.zeros_like(w) for w in weights]
    for step_grads in grads:
        for weight, buffer, grad in zip(weights, buffers, step_grads):
            buffer.mul_(momentum).add_(grad)
            direction = grad.add(buffer, alpha=momentum) if nesterov else buffer
            rows, cols = weight.shape[0], weight[0].numel()
            update = per_filter_newton_schulz(direction) * max(1.0, rows / cols) ** 0.5
            if weight_decay:
                weight.mul_(1 - lr * weight_decay)
            weight.sub_(lr * update)
    return weights, buffers


def mixed_shape_problem(seed, steps=3):
    generator = torch.Generator().manual_seed(seed)
    weights = [in_layout(torch.randn(shape, generator=generator)) for shape in MIXED_SHAPES]
    grads = [[in_layout(torch.randn(shape, generator=generator)) for shape in MIXED_SHAPES] for _ in range(steps)]
    return weights, grads


def test_parameters_are_batched_by_the_short_side_of_their_matrices():
    params = [torch.zeros(shape) for shape in MIXED_SHAPES]
    groups = sorted(sorted(sorted(part) for part in group) for group in batches(params))
    assert groups == [[[0, 2, 5], [7], [9]], [[1], [6], [11]], [[3], [10]], [[4]], [[8], [14]], [[12], [13]]]
    layouts = {
        tuple(plan.indices): (plan.matrix, plan.padded) for plan in (Batch(params, parts) for parts in batches(params))
    }
    assert layouts == {
        (0, 2, 5, 7, 9): ((8, 36), True),
        (1, 6, 11): ((6, 12), True),
        (3, 10): ((12, 5), True),
        (4,): ((16, 18), False),
        (8, 14): ((3, 40), True),
        (12, 13): ((4, 20), True),
    }


# Batches that need padding: wide matrices, tall ones kept tall, tall and wide ones together (a tall
# filter among them), each with its own norm and scale.
PADDED_BATCHES = [
    [(6, 20), (6, 7), (6, 6), (6, 7)],
    [(20, 6), (7, 6), (9, 6)],
    [(6, 20), (20, 6), (11, 6), (6, 3, 2, 2), (14, 2, 1, 3)],
]


@pytest.mark.parametrize("shapes", PADDED_BATCHES)
def test_a_padded_batch_equals_orthogonalising_each_matrix_alone(shapes):
    generator = torch.Generator().manual_seed(10)
    directions = [torch.randn(shape, generator=generator) for shape in shapes]
    directions = [d / (d.norm() + 1e-7) for d in directions]  # normalised, as Muon hands them over
    [parts] = batches(directions)
    plan = Batch(directions, parts)
    assert plan.padded and sorted(plan.indices) == list(range(len(shapes)))
    X = plan.buffer(directions[0], torch.float32)
    torch._foreach_copy_(plan.places(X), [directions[index] for index in plan.indices])
    occupied = torch.zeros_like(X)
    torch._foreach_copy_(plan.places(occupied), [torch.ones(shape) for shape in plan.shapes])
    result = orthogonalise_(X, 5, plan.scale)
    assert torch.all(result[occupied == 0] == 0)  # the padding stays exactly zero
    for index, update in zip(plan.indices, plan.updates(result)):
        rows, cols = matrix_shape(directions[index])
        alone = newton_schulz(directions[index], 5, torch.float32) * max(1.0, rows / cols) ** 0.5
        assert update.shape == alone.shape
        torch.testing.assert_close(update, alone)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_batched_update_equals_the_per_filter_update(nesterov, weight_decay, lr_kind):
    weights, grads = mixed_shape_problem(5)
    lr = 0.1 if lr_kind == "float" else torch.tensor(0.1)
    expected, expected_buffers = per_filter_run(weights, grads, lr, 0.6, nesterov, weight_decay)
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = Muon(params, lr=lr, momentum=0.6, nesterov=nesterov, weight_decay=weight_decay, ns_dtype=torch.float32)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    for p, e, buffer in zip(params, expected, expected_buffers):
        torch.testing.assert_close(p.detach(), e)
        torch.testing.assert_close(optimizer.state[p]["momentum_buffer"], buffer)
        assert p.stride() == e.stride()  # channels-last filters stay channels-last


def test_a_unit_lr_update_equals_the_per_filter_update():
    # lr 1 from zero weights: the weights are minus the update itself, no small factor hides a difference
    _, grads = mixed_shape_problem(6, steps=2)
    zeros = [torch.zeros_like(g) for g in grads[0]]
    expected, _ = per_filter_run(zeros, grads, 1.0, 0.85, True, 0.0)
    params = [torch.nn.Parameter(z.clone()) for z in zeros]
    optimizer = Muon(params, lr=torch.tensor(1.0), momentum=0.85, ns_dtype=torch.float32)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e)


def test_a_bfloat16_iteration_updates_float32_parameters_in_their_layout():
    # bfloat16 is what CUDA iterates in: the parameters keep their dtype and memory layout, and the
    # update stays within bfloat16's rounding of the float32 one
    weights, grads = mixed_shape_problem(9, steps=2)
    runs = []
    for ns_dtype in (torch.float32, torch.bfloat16):
        params = [torch.nn.Parameter(torch.zeros_like(w)) for w in weights]
        optimizer = Muon(params, lr=torch.tensor(1.0), ns_dtype=ns_dtype)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            optimizer.step()
        assert all(p.dtype == torch.float32 and p.stride() == w.stride() for p, w in zip(params, weights))
        runs.append([p.detach() for p in params])
    for exact, rounded in zip(*runs):
        assert (rounded - exact).norm() < 0.05 * exact.norm()


@pytest.mark.parametrize("shape", [(4, 8, 4, 3, 3), (3, 20, 7), (2, 7, 20), (1, 16, 16)])
def test_newton_schulz_batched_equals_each_matrix_alone(shape):
    torch.manual_seed(7)
    G = torch.randn(shape)
    G[0] *= 100.0  # each matrix is divided by its own norm
    batched = newton_schulz_batched(G, 5, torch.float32)
    assert batched.shape == G.shape and batched.dtype == G.dtype
    torch.testing.assert_close(batched, torch.stack([newton_schulz(g, 5, torch.float32) for g in G]))


def test_update_compiles_as_one_graph_and_computes_the_eager_update():
    weights, grads = mixed_shape_problem(8, steps=1)
    runs = []
    for compiled in (False, True):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = Muon(params, lr=torch.tensor(0.05), momentum=0.85, weight_decay=0.1, ns_dtype=torch.float32)
        for p, g in zip(params, grads[0]):
            p.grad = g.clone()
        update = optimizer.update
        if compiled:
            torch._dynamo.reset()
            update = torch.compile(
                lambda optimizer=optimizer: optimizer.update(), backend="aot_eager", fullgraph=True
            )  # breaks raise
        with torch.no_grad():
            update()
        runs.append([p.detach() for p in params])
    for eager, compiled in zip(*runs):
        torch.testing.assert_close(compiled, eager)


# airbench 0.1.8's train94 step at batch 4 dispatches 204 operations, counted with this same counter
# (speedrun.system.opcount.OpCounter) around one step after a warm-up step.
AIRBENCH_TRAIN94_STEP_OPS = 204
# The record step dispatches no more: 197 in all (221 with Muon batched by matrix shape, 475 with one
# filter at a time). Muon's update is 67 of them: the record net's 6 filters have 4 matrix shapes but 2
# short sides, so 2 batched iterations of 5 steps, 3 matmuls each (30), with per batch a zeroed buffer,
# a second buffer and 2 transposes (8), each filter's place in the input and in the output buffer (an
# unbind per batch, a slice per padded filter and a view per filter: 20), and 9 foreach operations.
# The other 130: forward, backward, the SGD half (two param groups: the biases' LR at 64x, the head's at
# 8x), the LR schedule (its row split among the three param groups) and the step wrappers.
RECORD_MUON_OPS = 67


def test_the_eager_record_step_dispatches_few_operations():
    cfg = resolve_config(
        {"training": {"recipe": "speedrun", "batch_size": 4, "precision": "fp32", "device": "cpu", "compile": "off"}}
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8, generator=generator)
    policy = policy_from_config(cfg["training"], torch.device("cpu"), tell=False)
    torch.manual_seed(0)
    model = policy.prepare(build_model(cfg, images))
    inputs = normalize(images[:4], normalize_table(CIFAR10_MEAN, CIFAR10_STD))
    targets = torch.arange(4)
    lr_table = group_lr_table([0.1] * 8, param_groups(model, cfg), steps_per_epoch=4)  # a run's: a column a group
    step = build_step(cfg, policy, Dist(device=torch.device("cpu")), model, lr_table, inputs)
    muon = step.optimizer.optimizers[0]
    assert isinstance(muon, Muon) and len(muon.param_groups[0]["params"]) == 6
    short_sides = {min(matrix_shape(p)) for p in muon.param_groups[0]["params"]}
    real_update, muon_counts = muon.update, []

    def counted_update():
        with OpCounter() as counted:
            real_update()
        muon_counts.append(counted)

    muon.update = counted_update
    step.train_step(inputs, targets)  # warm-up: anything done once is not counted
    with OpCounter() as counted:
        step.train_step(inputs, targets)
    muon_ops = muon_counts[-1].ops
    assert not counted.syncs
    matmuls = muon_ops["aten::bmm"] + muon_ops["aten::baddbmm"] + muon_ops["aten::mm"] + muon_ops["aten::addmm"]
    assert len(short_sides) == 2 and matmuls == 3 * 5 * len(short_sides)  # one batched iteration per short side
    assert sum(muon_ops.values()) <= RECORD_MUON_OPS
    assert counted.total <= AIRBENCH_TRAIN94_STEP_OPS
