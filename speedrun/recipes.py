"""Recipes: named sets of config values laid over the defaults before the user's own.

`seed` is the product's default and its correctness anchor: the seed's Custom ResNet for 24 epochs.
`speedrun` is the record attempt: its own net, optimizer and a short schedule.
"""
RECIPES = {
    # Adam, as in the seed: on the JPEG copy of CIFAR-10 (NVIDIA H200, 24 epochs, seed 0) Adam at its
    # range-test pick reached 90.01%; SGD-Nesterov 83.22% at its pick and 88.44% at its best multiple
    # of it (8x). Runs: benchmarks/results/nvidia-h200/runs/lr_grid.
    "seed": {"training": {"optimizer": "adam"}},
    "speedrun": {
        "model": {"arch": "record"},
        "training": {"epochs": 10, "batch_size": 1024, "optimizer": "muon", "label_smoothing": 0.2,
                     "weight_decay": 5e-4, "momentum": 0.85, "tta": 2, "ema": 0.0},
        "lr": {"lr_max": 0.2, "div_factor": 5.0, "peak_epoch": 2, "anneal_to_zero": True},
        "lr_test": {"enabled": False},
        "augment": {"pad": 2, "cutout": 0, "flip_mode": "alternate"},
    },
}


def recipe_config(name):
    """The nested overrides a recipe lays over the defaults."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
