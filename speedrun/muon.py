"""Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration.

Used by the record recipe for every conv filter. Each step takes the (Nesterov) momentum of the
gradient, views it as a matrix [out, in*k*k] and replaces it by the nearest semi-orthogonal matrix,
approximately, so all its singular directions move at the same rate whatever the gradient's spectrum.
The approximation is a quintic Newton-Schulz iteration tuned to push singular values into a loose band
around 1 in few steps rather than to converge exactly; it runs in bfloat16 on CUDA, where that band is
all we need, and in float32 on CPU, where bfloat16 matmuls are slow.
"""
import torch

# Quintic coefficients tuned to raise small singular values fast (slope `a` at zero) while keeping
# the rest within roughly [0.7, 1.2]; exact convergence is neither reached nor needed.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G, steps=5, dtype=torch.bfloat16, eps=1e-7):
    """An approximately semi-orthogonal matrix U V^T for G = U S V^T, in G's dtype and shape.

    G is 2-D; an ndim > 2 tensor (conv filters) is flattened to [shape[0], rest] and reshaped back.
    """
    a, b, c = NS_COEFFICIENTS
    X = G.reshape(G.shape[0], -1).to(dtype)
    X = X / (X.norm() + eps)  # Frobenius norm bounds the spectral norm, so singular values start <= 1
    tall = X.shape[0] > X.shape[1]
    if tall:  # iterate on the smaller Gram matrix X X^T
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    if tall:
        X = X.T
    return X.reshape(G.shape).to(G.dtype)


def default_ns_dtype(device):
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


class Muon(torch.optim.Optimizer):
    """Orthogonalised momentum for parameters with 2 or more dimensions.

    Per step: buf = momentum * buf + grad; the update is grad + momentum * buf with Nesterov (else
    buf), orthogonalised, scaled by max(1, rows / cols) ** 0.5 so tall matrices get per-entry steps
    of the same size as wide ones, and applied as p -= lr * update. Weight decay is decoupled:
    p *= 1 - lr * weight_decay. `lr` may be a float or a 0-d tensor (changing a tensor's value in
    place does not recompile a compiled step). `ns_dtype=None` picks bfloat16 on CUDA, float32 otherwise.
    """

    def __init__(self, params, lr, momentum=0.6, nesterov=True, weight_decay=0.0, ns_steps=5,
                 ns_dtype=None):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, ns_dtype=ns_dtype)
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

    def update(self):
        """The update alone, without step()'s wrappers (torch.compile traces it into a whole step)."""
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(p.grad)
                direction = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                ns_dtype = group["ns_dtype"] or default_ns_dtype(p.device)
                update = newton_schulz(direction, group["ns_steps"], ns_dtype)
                rows, cols = p.shape[0], p[0].numel()
                update *= max(1.0, rows / cols) ** 0.5
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                p.sub_(lr * update)
