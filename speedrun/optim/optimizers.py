"""Optimizers: the configured one over a net's parameters in its param groups, LR setting, a moving
average of weights and lookahead.

The LR lives in a 0-d float32 tensor on the parameters' device, one per param group, written in place
each step: an eager step reads it without a host sync (fused SGD and AdamW take a tensor LR), and a
compiled or CUDA-graph step does not bake a value in. A run's LRs, every group's at every step, are one
table built on the host before it starts (`group_lr_table`) and read on the device.
"""

import copy

import torch
from torch import nn
from torch.optim.adamw import adamw as adamw_update
from torch.optim.sgd import sgd as sgd_update

from speedrun.nets.record_net import RecordNet

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


def param_groups(net, cfg):
    """The configured optimizer's param groups over `net`'s trained parameters, in its order: dicts of
    params, lr_scale (times the schedule's LR), weight_decay and lr_epochs (trained in the first lr_epochs
    epochs only; 0 = all). With muon the conv filters' group, Muon's, comes first.

    `training.bias_lr_scale` multiplies the LR of the batch-norm biases and of the record net's whitening
    bias and divides their weight decay by as much, so that their decay a step (lr x weight_decay) stays
    as it was: airbench94 trains its BatchNorm biases so, with a scaler of 64. `training.head_lr_scale`
    multiplies the linear head's LR; `training.whiten_bias_epochs` trains the whitening bias in the first
    epochs only. Parameters alike in all three share a group, so that a run with none of them set has
    the groups, and the optimizer state, it always had. `net` may also be an iterable of parameters (a
    benchmark's), which take those groups.
    """
    t = cfg["training"]
    bias, decay = t["bias_lr_scale"], t["weight_decay"]
    settings = {
        "bias": (bias, decay / bias, 0),
        "whiten bias": (bias, decay / bias, t["whiten_bias_epochs"]),
        "head": (t["head_lr_scale"], decay, 0),
        "other": (1.0, decay, 0),
    }
    groups = {}
    if t["optimizer"] == "muon":  # Muon orthogonalises the conv filters' updates, without weight decay
        groups["filters"] = {"params": [], "lr_scale": 1.0, "weight_decay": 0.0, "lr_epochs": 0}
    for p, role in parameter_roles(net, t).items():
        if t["optimizer"] == "muon" and p.ndim == 4:
            groups["filters"]["params"].append(p)
            continue
        scale, weight_decay, epochs = settings[role]
        groups.setdefault(
            settings[role], {"params": [], "lr_scale": scale, "weight_decay": weight_decay, "lr_epochs": epochs}
        )["params"].append(p)
    return list(groups.values())


def parameter_roles(net, training):
    """{parameter: its role} for `net`'s trained parameters in order: "bias" (a batch-norm bias),
    "whiten bias" (the record net's whitening bias), "head" (a linear layer's) or "other"."""
    if not isinstance(net, nn.Module):
        if training["bias_lr_scale"] != 1 or training["head_lr_scale"] != 1 or training["whiten_bias_epochs"]:
            raise ValueError("per-group LRs need the net, not its parameters alone")
        return {p: "other" for p in net if p.requires_grad}
    if training["whiten_bias_epochs"] and not isinstance(net, RecordNet):
        raise ValueError("--training.whiten_bias_epochs needs the record net's whitening layer (--model.arch record)")
    roles = {}
    for module in net.modules():
        if isinstance(module, nn.Linear):
            roles.update((p, "head") for p in module.parameters(recurse=False))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.bias is not None:
            roles[module.bias] = "bias"
    if isinstance(net, RecordNet):
        roles[net.whiten.bias] = "whiten bias"
    return {p: roles.get(p, "other") for p in net.parameters() if p.requires_grad}


def group_lr_table(lrs, groups, steps_per_epoch, device=None):
    """Every param group's LR at every step, a float32 tensor [len(lrs), len(groups)] on `device`: the
    schedule's `lrs` (one a step) times each group's lr_scale, and 0 from a group's lr_epochs on (a zero
    LR leaves a parameter as it is, whatever its momentum). Built on the host once: each step reads its
    row on the device (schedule.DeviceSchedule) and `set_lr` writes it into the groups."""

    def lr(group, step, base):
        trained = not group["lr_epochs"] or step < group["lr_epochs"] * steps_per_epoch
        return base * group["lr_scale"] if trained else 0.0

    return torch.tensor(
        [[lr(group, step, base) for group in groups] for step, base in enumerate(lrs)],
        dtype=torch.float32,
        device=device,
    )


def build_optimizer(net, cfg, lr=0.0, traceable=False):
    """The configured optimizer over `net` (see `param_groups`); its LR is set every step by the schedule,
    here `lr` times each group's lr_scale, in a tensor of the group's own.

    Fused kernels by default (they take the LR tensor on the device); `traceable` picks the foreach
    ones instead, which torch.compile traces into a whole step (it will not trace a fused kernel), and
    for Adam the capturable form (its step count a device tensor, read without a host sync). The state
    is allocated at zero up front rather than at the first step: the same numbers (momentum 0 * m + g = g,
    Adam's moments and step count start at zero anyway) and a state whose layout never changes, which a
    compiled step and its warm-up rely on.
    """
    t = cfg["training"]
    groups = param_groups(net, cfg)
    device = next(p for group in groups for p in group["params"]).device
    for group in groups:
        group["lr"] = torch.tensor(float(lr) * group["lr_scale"], dtype=torch.float32, device=device)
    kernels = {"foreach": True} if traceable else {"fused": True}
    if t["optimizer"] == "adam":
        adam = {"capturable": True} if traceable else {}
        return allocate_state(torch.optim.AdamW(groups, betas=(t["momentum"], 0.999), **kernels, **adam))
    sgd = dict(momentum=t["momentum"], nesterov=True, **kernels)
    if t["optimizer"] == "sgd":
        return allocate_state(torch.optim.SGD(groups, **sgd))
    from speedrun.optim.muon import Muon

    filters, *rest = groups
    return OptimizerGroup(
        [
            allocate_state(Muon([filters], lr=filters["lr"], momentum=t["momentum"], nesterov=True)),
            allocate_state(torch.optim.SGD(rest, **sgd)),
        ]
    )


def allocate_state(optimizer):
    """`optimizer` with its per-parameter state allocated at zero: Adam's moments and step count (a
    float32 tensor on the parameter's device, as the fused and capturable forms keep it), or the
    momentum buffer of SGD and Muon."""
    adam = isinstance(optimizer, ADAM_TYPES)
    for group in optimizer.param_groups:
        for p in group["params"]:
            zeros = torch.zeros_like(p, memory_format=torch.preserve_format)
            if adam:
                optimizer.state[p].update(
                    step=torch.zeros((), dtype=torch.float32, device=p.device),
                    exp_avg=zeros,
                    exp_avg_sq=torch.zeros_like(zeros),
                )
            else:
                optimizer.state[p]["momentum_buffer"] = zeros
    return optimizer


def set_lr(optimizer, lr):
    """Write `lr` into the param groups: a float or a 0-d tensor (the schedule's LR) into every group
    times its lr_scale, or a 1-D tensor (a row of `group_lr_table`) entry by entry, one a group. A group's
    LR tensor is written in place (no host sync, and a compiled step keeps reading the same tensor). A
    group holding a float takes a float, or becomes a tensor on its parameters' device when given one (a
    checkpoint from before LR tensors); so does one whose tensor is on another device (a checkpoint from
    another one)."""
    groups = optimizer.param_groups
    if torch.is_tensor(lr) and lr.ndim == 1:
        if len(lr) != len(groups):
            raise ValueError(f"an LR table row of {len(lr)} LRs for an optimizer of {len(groups)} param groups")
        lrs = lr.unbind(0)
    else:  # a group without lr_scale: from a checkpoint written before the groups had one
        lrs = [lr if group.get("lr_scale", 1.0) == 1 else lr * group["lr_scale"] for group in groups]
    for group, lr in zip(groups, lrs):
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
            if torch.is_tensor(group[key]) and torch.is_tensor(value):
                group[key].copy_(value)
            elif torch.is_tensor(group[key]):  # the LR, a float in a checkpoint from before LR tensors
                group[key].fill_(value)
            else:
                group[key] = value


def load_optimizer_state(optimizer, saved):
    """Load a checkpoint's optimizer state in place (load_state_in_place), so that a step compiled over
    the optimizer keeps its tensors; a state of another layout (a checkpoint from before the state was
    allocated up front) the way torch loads it, into new tensors (a whole step is pinned after)."""
    try:
        load_state_in_place(optimizer, saved)
    except (ValueError, KeyError):
        optimizer.load_state_dict(saved)


def step_tensors(optimizer):
    """Every tensor a step updates in place besides the parameters: the state and the LR tensors."""
    if isinstance(optimizer, OptimizerGroup):
        return [tensor for part in optimizer.optimizers for tensor in step_tensors(part)]
    held = [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
    return held + [group["lr"] for group in optimizer.param_groups if torch.is_tensor(group["lr"])]


def traced_update(optimizer):
    """The optimizer's update as plain tensor ops under no_grad, for a whole step compiled as one graph:
    torch's step() methods break the graph around themselves. SGD and Adam (built `traceable`) and Muon."""
    from speedrun.optim.muon import Muon

    if isinstance(optimizer, (OptimizerGroup, Muon)):
        return optimizer.update()
    if not isinstance(optimizer, (torch.optim.SGD, *ADAM_TYPES)):
        raise ValueError(f"a whole-step graph updates with SGD, Adam and Muon only, not {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        grads, states = [p.grad for p in params], [optimizer.state[p] for p in params]
        if isinstance(optimizer, torch.optim.SGD):
            sgd_update(
                params,
                grads,
                [state["momentum_buffer"] for state in states],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                foreach=True,
            )
            continue
        beta1, beta2 = group["betas"]
        adamw_update(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            [state["step"] for state in states],
            foreach=True,
            capturable=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


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
            self._targets, self._sources = floating_tensors(self.average, model)

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


def floating_tensors(copied, model):
    """([copied's], [model's]) floating-point weights and buffers, in state_dict order: what a copy of
    the weights follows (an integer buffer, batch norm's batch count, is left as it is)."""
    pairs = [
        (c, m)
        for c, m in zip(copied.state_dict(keep_vars=True).values(), model.state_dict(keep_vars=True).values())
        if c.is_floating_point()
    ]
    return [c for c, _ in pairs], [m for _, m in pairs]


class Lookahead:
    """Lookahead (period K, 0 = off), as airbench94 trains with (K = 5): every K-th step, after the
    update, a slow copy s of the weights and buffers moves toward them and the weights are set to it,
    s <- s + (1 - d)(w - s); w <- s, with d = 0.95**K * (step / total_steps)**3 (steps from 1): the slow
    copy follows the weights closely early and holds them back late in the run. At the last step the
    weights take s once more, without moving it.

    `update` runs on the device every step, the same operations whether due or not, from device weights
    that `advance` sets before each step from the schedule's step counter, as WeightAverage's is: `move`,
    (1 - d) on a K-th step and 0 otherwise, and `take`, 1 when the weights take s and 0 otherwise (`keep`
    is 1 - take). The weights become w * keep + s * take: exactly s, or exactly w."""

    def __init__(self, model, period, total_steps, decay=0.95):
        self.model, self.period, self.total_steps, self.decay = model, period, total_steps, decay
        self.slow = copy.deepcopy(model) if period else None
        device = next(model.parameters()).device
        self.move, self.take, self.keep = (torch.zeros((), device=device) for _ in range(3))
        if self.slow is not None:
            self._slow, self._weights = floating_tensors(self.slow, model)

    @torch.no_grad()
    def advance(self, step):
        """Set the weights of the coming update, the `step`-th (a device tensor, from 1)."""
        if self.slow is not None:
            due = step % self.period == 0
            d = self.decay**self.period * (step / self.total_steps) ** 3
            take = due | (step == self.total_steps)
            self.move.copy_((due * (1 - d)).view(()))
            self.take.copy_(take.view(()))
            self.keep.copy_((~take).view(()))

    @torch.no_grad()
    def update(self):
        if self.slow is not None:
            deltas = torch._foreach_sub(self._weights, self._slow)
            torch._foreach_mul_(deltas, self.move)
            torch._foreach_add_(self._slow, deltas)
            torch._foreach_mul_(self._weights, self.keep)
            torch._foreach_add_(self._weights, torch._foreach_mul(self._slow, self.take))

    def state_dict(self):
        """The slow copy's state (empty when off), for checkpoints and the warm-up."""
        return self.slow.state_dict() if self.slow is not None else {}

    def load_state_dict(self, state):
        """Copy `state` (a state_dict of the slow copy, or of the net: a fresh start) into the slow copy."""
        if self.slow is not None:
            self.slow.load_state_dict(state)

    def tensors(self):
        """The tensors `update` reads or writes besides the weights (none when off)."""
        return [*self._slow, self.move, self.take, self.keep] if self.slow is not None else []
