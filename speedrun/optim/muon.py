"""Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration.

Used by the record recipe for every conv filter. Each step takes the (Nesterov) momentum of the
gradient, views it as a matrix [out, in*k*k] and replaces it by the nearest semi-orthogonal matrix,
approximately, so all its singular directions move at the same rate whatever the gradient's spectrum.
The approximation is a quintic Newton-Schulz iteration tuned to push singular values into a loose band
around 1 in few steps rather than to converge exactly; it runs in bfloat16 on CUDA, where that band is
all we need, and in float32 on CPU, where bfloat16 matmuls are slow.

A step costs few operations, which is what an eager step on a GPU pays for (each one a kernel launch):
the momentum, normalisation, weight decay and update of all the filters are one foreach operation each,
and the filters whose matrices share their short side are orthogonalised together, as one batch of
matrices zero-padded to one shape, three batched matmuls an iteration.
"""

import math

import torch

# Quintic coefficients tuned to raise small singular values fast (slope `a` at zero) while keeping
# the rest within roughly [0.7, 1.2]; exact convergence is neither reached nor needed.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7  # added to the Frobenius norm a matrix is divided by, so a zero matrix stays zero


def orthogonalise_(X, steps, scale=1.0):
    """The Newton-Schulz iteration on X, a matrix [rows, cols] or a batch [k, rows, cols] of them, each
    with Frobenius norm <= 1, in the dtype to iterate in; returns the result times `scale` (a float).

    X is overwritten: the iterates alternate between X and one more buffer of its shape (matmuls with
    out=), so each buffer's transpose is a view taken once rather than at every step. For tall matrices
    the iteration runs on the smaller Gram matrix X^T X, multiplied from the right: X (aI + bA + cA^2),
    the transpose of the iteration on X^T, without transposing anything.
    """
    if steps == 0:
        return X * scale
    a, b, c = NS_COEFFICIENTS
    mm, addmm = (torch.bmm, torch.baddbmm) if X.ndim == 3 else (torch.mm, torch.addmm)
    tall = X.shape[-2] > X.shape[-1]
    buffers = (X, torch.empty_like(X))
    transposed = [X.mT, None]
    for step in range(steps):
        source, target = step % 2, 1 - step % 2
        X = buffers[source]
        if transposed[source] is None:
            transposed[source] = X.mT
        s = scale if step == steps - 1 else 1.0  # the scale rides on the last step's coefficients
        if tall:
            A = mm(transposed[source], X)
            B = addmm(A, A, A, beta=b, alpha=c)
            addmm(X, X, B, beta=a * s, alpha=s, out=buffers[target])
        else:
            A = mm(X, transposed[source])
            B = addmm(A, A, A, beta=b, alpha=c)
            addmm(X, B, X, beta=a * s, alpha=s, out=buffers[target])
    return buffers[steps % 2]


@torch.no_grad()
def newton_schulz(G, steps=5, dtype=torch.bfloat16, eps=NS_EPS):
    """An approximately semi-orthogonal matrix U V^T for G = U S V^T, in G's dtype and shape.

    G is 2-D; an ndim > 2 tensor (conv filters) is flattened to [shape[0], rest] and reshaped back.
    """
    X = G.reshape(G.shape[0], -1).to(dtype)
    X = X / (X.norm() + eps)  # Frobenius norm bounds the spectral norm, so singular values start <= 1
    return orthogonalise_(X, steps).reshape(G.shape).to(G.dtype)


@torch.no_grad()
def newton_schulz_batched(G, steps=5, dtype=torch.bfloat16, eps=NS_EPS):
    """newton_schulz of every G[i] at once, each divided by its own Frobenius norm: G is [k, rows, cols],
    or [k, *filter shape], each G[i] flattened to [shape[1], rest]. In G's dtype and shape."""
    X = G.reshape(G.shape[0], G.shape[1], -1).to(dtype)
    X = X / (torch.linalg.vector_norm(X, dim=(1, 2), keepdim=True) + eps)
    return orthogonalise_(X, steps).reshape(G.shape).to(G.dtype)


def default_ns_dtype(device):
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def matrix_shape(p):
    """The matrix a parameter is orthogonalised as: [shape[0], rest]."""
    return p.shape[0], p.numel() // p.shape[0]


# Matrices of different shapes that share their short side are orthogonalised as one batch, each
# zero-padded on its long side to the batch's longest. A padded row or column stays exactly zero
# through the iteration (it adds nothing to the Gram matrix, and its next iterate is a polynomial in
# the Gram matrix times it) and adds nothing to a Frobenius norm, so each matrix comes out as it would
# alone, up to rounding. It trades FLOPs for operations, and the record net's eager step on a GPU is
# bound by launches: each operation dispatched is a kernel launch of some microseconds.
# This project's count: the record net at its default width has 4 matrix shapes but 2 short sides,
# and merging them takes the record step from 221 operations to 194 (Muon's share from 94 to 67;
# batch 4, speedrun.system.opcount.OpCounter). This project's estimate: the padding adds 21.7% to the
# Newton-Schulz matmul FLOPs there (10.6 to 12.9 GFLOP a step), and the extra 2.3 GFLOP take about
# 0.01 ms at an H200's bfloat16 rate, less than the launches of the 27 operations saved. The extra
# FLOPs grow as width^3 and the launches saved do not: at widths where the step is bound by compute
# rather than by launches, the trade turns the other way.
def batches(params):
    """The parameters' indices in batches to orthogonalise together: those whose matrices have the same
    short side (and the same dtype and device), and within a batch those of one shape next to each
    other: [[indices of one shape, ...], ...] a batch. Shapes are static: a compiled step traces this
    once."""
    grouped = {}
    for index, p in enumerate(params):
        key = (min(matrix_shape(p)), p.dtype, p.device)
        grouped.setdefault(key, {}).setdefault(tuple(p.shape), []).append(index)
    return [list(by_shape.values()) for by_shape in grouped.values()]


class Batch:
    """How the tensors of a batch (`parts`, see `batches`) lie in the one buffer [k, rows, cols] that
    the iteration runs on: in order, each zero-padded on its long side to the batch's longest. When
    all of them are tall they keep their orientation (the iteration runs on their Gram matrices from
    the right); otherwise the tall ones are transposed.

    Each matrix's update is scaled by max(1, rows / cols) ** 0.5 of its own shape. The scale most of
    them take rides on the iteration's last step; the others are multiplied by what they lack after."""

    def __init__(self, tensors, parts):
        self.indices = [index for part in parts for index in part]
        self.shapes = [tuple(tensors[index].shape) for index in self.indices]
        matrices = [matrix_shape(tensors[index]) for index in self.indices]
        self.tall = all(rows > cols for rows, cols in matrices)
        short, long = min(matrices[0]), max(max(matrix) for matrix in matrices)
        self.matrix = (long, short) if self.tall else (short, long)
        self.padded = any(max(matrix) < long for matrix in matrices)
        self.scales = [max(1.0, rows / cols) ** 0.5 for rows, cols in matrices]
        self.scale = max(self.scales, key=self.scales.count)

    def buffer(self, like, dtype):
        """A buffer for the batch on `like`'s device, zeros when some matrix is padded (the copy of the
        matrices writes the rest), else uninitialised."""
        size = (len(self.indices), *self.matrix)
        return like.new_zeros(size, dtype=dtype) if self.padded else like.new_empty(size, dtype=dtype)

    def places(self, X):
        """Each tensor's place in the batch's buffer X: views of X, in the tensors' shapes."""
        long = self.matrix[0] if self.tall else self.matrix[1]
        places = []
        for matrix, shape in zip(X.unbind(0), self.shapes):
            rows, cols = shape[0], math.prod(shape[1:])
            if self.tall:
                place = matrix if rows == long else matrix[:rows]
            elif rows > cols:  # stored transposed
                place = (matrix if rows == long else matrix[:, :rows]).mT
            else:
                place = matrix if cols == long else matrix[:, :cols]
            places.append(place.view(shape) if len(shape) > 2 else place)
        return places

    def updates(self, X):
        """The tensors' updates from the iterated buffer X, each scaled by its own scale."""
        updates = self.places(X)
        for i, scale in enumerate(self.scales):
            if scale != self.scale:
                updates[i] = updates[i] * (scale / self.scale)
        return updates


class Muon(torch.optim.Optimizer):
    """Orthogonalised momentum for parameters with 2 or more dimensions.

    Per step: buf = momentum * buf + grad; the update is grad + momentum * buf with Nesterov (else
    buf), orthogonalised, scaled by max(1, rows / cols) ** 0.5 so tall matrices get per-entry steps
    of the same size as wide ones, and applied as p -= lr * update. Weight decay is decoupled:
    p *= 1 - lr * weight_decay. `lr` may be a float or a 0-d tensor (changing a tensor's value in
    place does not recompile a compiled step). `ns_dtype=None` picks bfloat16 on CUDA, float32 otherwise.
    """

    def __init__(self, params, lr, momentum=0.6, nesterov=True, weight_decay=0.0, ns_steps=5, ns_dtype=None):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps, ns_dtype=ns_dtype
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"Muon needs parameters with >= 2 dims, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.update()
        return loss

    def momentum_buffer(self, p):
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        return state["momentum_buffer"]

    def update(self):
        """The update alone, without step()'s wrappers (torch.compile traces it into a whole step).

        Every parameter of a group at once: foreach operations for the momentum, the normalisation by
        each direction's Frobenius norm, the copy into the batches' buffers and the update, one batched
        iteration per short side of the matrices (see `batches`). The LR
        is never read on the host: a tensor LR multiplies the updates on the device."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            buffers = [self.momentum_buffer(p) for p in params]
            momentum = group["momentum"]
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            directions = torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
            norms = torch._foreach_norm(directions)
            torch._foreach_add_(norms, NS_EPS)
            directions = torch._foreach_div(directions, norms)  # new tensors: the buffers stay as they are
            ns_dtype = group["ns_dtype"] or default_ns_dtype(params[0].device)
            plans = [Batch(directions, parts) for parts in batches(params)]
            inputs = [plan.buffer(directions[plan.indices[0]], ns_dtype) for plan in plans]
            places = [place for plan, X in zip(plans, inputs) for place in plan.places(X)]
            torch._foreach_copy_(places, [directions[index] for plan in plans for index in plan.indices])
            updates = [None] * len(params)
            for plan, X in zip(plans, inputs):
                X = orthogonalise_(X, group["ns_steps"], plan.scale).to(params[plan.indices[0]].dtype)
                for index, update in zip(plan.indices, plan.updates(X)):
                    updates[index] = update
            lr, weight_decay = group["lr"], group["weight_decay"]
            if weight_decay:
                torch._foreach_mul_(params, 1 - lr * weight_decay)
            if torch.is_tensor(lr):
                torch._foreach_mul_(updates, lr)
                torch._foreach_sub_(params, updates)
            else:
                torch._foreach_add_(params, updates, alpha=-lr)
