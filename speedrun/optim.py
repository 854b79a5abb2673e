"""Optimizers: the configured one over a net's parameters, LR setting, and a moving average of weights."""
import copy

import torch


class OptimizerGroup:
    """Several optimizers stepped as one (the record recipe trains filters and the rest differently)."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [group for opt in self.optimizers for group in opt.param_groups]

    def step(self):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state):
        for opt, saved in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(saved)


def build_optimizer(params, cfg, lr=0.0):
    """The configured optimizer over `params`; its LR is set every step by the schedule."""
    t = cfg["training"]
    params = [p for p in params if p.requires_grad]
    kernels = {"fused": True} if params[0].is_cuda else {"foreach": True}
    if t["optimizer"] == "adam":
        return torch.optim.AdamW(params, lr=lr, betas=(t["momentum"], 0.999), weight_decay=t["weight_decay"],
                                 **kernels)
    sgd = dict(lr=lr, momentum=t["momentum"], nesterov=True, weight_decay=t["weight_decay"], **kernels)
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(params, **sgd)
    from .muon import Muon  # Muon orthogonalises the conv filters' updates; SGD trains the rest
    filters = [p for p in params if p.ndim == 4]
    return OptimizerGroup([Muon(filters, lr=lr, momentum=t["momentum"], nesterov=True),
                           torch.optim.SGD([p for p in params if p.ndim != 4], **sgd)])


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


class WeightAverage:
    """An exponential moving average of the weights (decay 0: the weights themselves)."""

    def __init__(self, model, decay):
        self.model, self.decay = model, decay
        self.average = copy.deepcopy(model) if decay else None
        if self.average is not None:  # the tensor lists once, not a state_dict walk every step
            pairs = [(a, m) for a, m in zip(self.average.state_dict().values(), model.state_dict().values())
                     if a.is_floating_point()]
            self._targets, self._sources = [a for a, _ in pairs], [m for _, m in pairs]

    @torch.no_grad()
    def update(self):
        if self.average is not None:
            torch._foreach_lerp_(self._targets, self._sources, 1.0 - self.decay)

    def net(self):
        return self.average if self.average is not None else self.model
