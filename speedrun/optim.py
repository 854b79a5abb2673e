"""Optimizers: the configured one over a net's parameters, LR setting, and a moving average of weights.

The LR lives in a 0-d float32 tensor on the parameters' device, one per param group, written in place
each step: an eager step reads it without a host sync (fused SGD and AdamW take a tensor LR), and a
compiled or CUDA-graph step does not bake a value in.
"""
import copy

import torch
from torch.optim.adamw import adamw as adamw_update
from torch.optim.sgd import sgd as sgd_update


ADAM_TYPES = (torch.optim.Adam, torch.optim.AdamW)  # AdamW subclasses Adam only in recent torch


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

    def update(self):
        for opt in self.optimizers:
            traced_update(opt)

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state):
        for opt, saved in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(saved)


def build_optimizer(params, cfg, lr=0.0, traceable=False):
    """The configured optimizer over `params`; its LR is set every step by the schedule.

    Fused kernels by default (they take the LR tensor on the device); `traceable` picks the foreach
    ones instead, which torch.compile traces into a whole step (it will not trace a fused kernel), and
    for Adam the capturable form (its step count a device tensor, read without a host sync). The state
    is allocated at zero up front rather than at the first step: the same numbers (momentum 0 * m + g = g,
    Adam's moments and step count start at zero anyway) and a state whose layout never changes, which a
    compiled step and its warm-up rely on.
    """
    t = cfg["training"]
    params = [p for p in params if p.requires_grad]
    lr = torch.tensor(float(lr), dtype=torch.float32, device=params[0].device)
    kernels = {"foreach": True} if traceable else {"fused": True}
    if t["optimizer"] == "adam":
        adam = {"capturable": True} if traceable else {}
        return allocate_state(torch.optim.AdamW(params, lr=lr, betas=(t["momentum"], 0.999),
                                                weight_decay=t["weight_decay"], **kernels, **adam))
    sgd = dict(lr=lr, momentum=t["momentum"], nesterov=True, weight_decay=t["weight_decay"], **kernels)
    if t["optimizer"] == "sgd":
        return allocate_state(torch.optim.SGD(params, **sgd))
    from .muon import Muon  # Muon orthogonalises the conv filters' updates; SGD trains the rest
    filters = [p for p in params if p.ndim == 4]
    return OptimizerGroup([allocate_state(Muon(filters, lr=lr, momentum=t["momentum"], nesterov=True)),
                           allocate_state(torch.optim.SGD([p for p in params if p.ndim != 4], **sgd))])


def allocate_state(optimizer):
    """`optimizer` with its per-parameter state allocated at zero: Adam's moments and step count (a
    float32 tensor on the parameter's device, as the fused and capturable forms keep it), or the
    momentum buffer of SGD and Muon."""
    adam = isinstance(optimizer, ADAM_TYPES)
    for group in optimizer.param_groups:
        for p in group["params"]:
            zeros = torch.zeros_like(p, memory_format=torch.preserve_format)
            if adam:
                optimizer.state[p].update(step=torch.zeros((), dtype=torch.float32, device=p.device),
                                          exp_avg=zeros, exp_avg_sq=torch.zeros_like(zeros))
            else:
                optimizer.state[p]["momentum_buffer"] = zeros
    return optimizer


def set_lr(optimizer, lr):
    """Write `lr` (a float or a 0-d tensor) into every param group: a group's LR tensor is written in
    place (no host sync, and a compiled step keeps reading the same tensor). A group holding a float
    takes a float, or becomes a tensor on its parameters' device when given one (a checkpoint from
    before LR tensors); so does one whose tensor is on another device (a checkpoint from another one)."""
    for group in optimizer.param_groups:
        held, device = group["lr"], group["params"][0].device
        if not torch.is_tensor(held) and not torch.is_tensor(lr):
            group["lr"] = lr
            continue
        if not torch.is_tensor(held) or held.device != device:
            group["lr"] = torch.tensor(float(held), dtype=torch.float32, device=device)
        if torch.is_tensor(lr):
            group["lr"].copy_(lr)
        else:
            group["lr"].fill_(lr)


def load_state_in_place(optimizer, saved):
    """Load `saved` (this optimizer's own state_dict) by copying into the tensors it holds, where
    load_state_dict would put new ones: a step compiled over them (a CUDA graph above all) keeps reading
    the same memory. The state's layout must be the one saved (build_optimizer allocates it up front)."""
    if isinstance(optimizer, OptimizerGroup):
        for part, part_saved in zip(optimizer.optimizers, saved["optimizers"]):
            load_state_in_place(part, part_saved)
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if set(saved["state"]) != set(range(len(params))):
        raise ValueError("the saved optimizer state covers other parameters than this optimizer's")
    for index, state in saved["state"].items():
        held = optimizer.state[params[index]]
        if set(held) != set(state):
            raise ValueError(f"optimizer state {sorted(held)} cannot take saved {sorted(state)} in place")
        for key, value in state.items():
            if torch.is_tensor(value):
                held[key].copy_(value)
            else:
                held[key] = value
    for group, group_saved in zip(optimizer.param_groups, saved["param_groups"]):
        for key, value in group_saved.items():
            if key == "params":
                continue
            if torch.is_tensor(group[key]):
                group[key].copy_(value)
            else:
                group[key] = value


def step_tensors(optimizer):
    """Every tensor a step updates in place besides the parameters: the state and the LR tensors."""
    if isinstance(optimizer, OptimizerGroup):
        return [tensor for part in optimizer.optimizers for tensor in step_tensors(part)]
    held = [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
    return held + [group["lr"] for group in optimizer.param_groups if torch.is_tensor(group["lr"])]


def traced_update(optimizer):
    """The optimizer's update as plain tensor ops under no_grad, for a whole step compiled as one graph:
    torch's step() methods break the graph around themselves. SGD and Adam (built `traceable`) and Muon."""
    from .muon import Muon
    if isinstance(optimizer, (OptimizerGroup, Muon)):
        return optimizer.update()
    if not isinstance(optimizer, (torch.optim.SGD, *ADAM_TYPES)):
        raise ValueError(f"a whole-step graph updates with SGD, Adam and Muon only, not {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        grads, states = [p.grad for p in params], [optimizer.state[p] for p in params]
        if isinstance(optimizer, torch.optim.SGD):
            sgd_update(params, grads, [state["momentum_buffer"] for state in states],
                       weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                       dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
                       foreach=True)
            continue
        beta1, beta2 = group["betas"]
        adamw_update(params, grads, [state["exp_avg"] for state in states], [state["exp_avg_sq"] for state in states],
                     [], [state["step"] for state in states], foreach=True, capturable=True, amsgrad=False,
                     beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                     maximize=group["maximize"])


class WeightAverage:
    """An exponential moving average of the weights (decay 0: the weights themselves).

    Its decay warms up as min(decay, (1 + n) / (10 + n)) at the n-th update, so that the average of a
    short run is not held near the initial weights: at 0.99 a plain average of 80 steps still gives
    them 45%. The warm-up is over after 890 updates; in a 24-epoch run (2,328 updates) the average
    differs from the plain one by under 1e-6 of its weight. The update's weight is a device tensor
    that `advance` sets before each step from the schedule's step counter, outside a compiled step,
    like the LR: no host value is baked into a graph, and the count needs no state of its own (an
    in-place write to a 0-d state inside a whole-step graph went wrong with torch 2.13, as the LR's did)."""

    def __init__(self, model, decay):
        self.model, self.decay = model, decay
        self.average = copy.deepcopy(model) if decay else None
        self.weight = torch.zeros((), device=next(model.parameters()).device)
        if self.average is not None:  # the tensor lists once, not a state_dict walk every step
            pairs = [(a, m) for a, m in zip(self.average.state_dict().values(), model.state_dict().values())
                     if a.is_floating_point()]
            self._targets, self._sources = [a for a, _ in pairs], [m for _, m in pairs]

    @torch.no_grad()
    def advance(self, updates):
        """Set the weight (1 - decay) of the coming update, the `updates`-th (a device tensor)."""
        if self.average is not None:
            decay = torch.clamp((1 + updates) / (10 + updates), max=self.decay)
            self.weight.copy_(1.0 - decay.view(()))

    @torch.no_grad()
    def update(self):
        if self.average is not None:
            deltas = torch._foreach_sub(self._sources, self._targets)  # lerp would read its weight on the host
            torch._foreach_mul_(deltas, self.weight)
            torch._foreach_add_(self._targets, deltas)

    def net(self):
        return self.average if self.average is not None else self.model

    def tensors(self):
        """The tensors `update` reads or writes besides the weights (none without an average)."""
        return [*self._targets, self.weight] if self.average is not None else []
