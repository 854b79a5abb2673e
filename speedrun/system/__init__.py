"""The machine under a run: the device and how to compute on it, torchrun's processes, files written whole,
checkpoints, run folders and clocks. Nothing here knows CIFAR-10, nets or recipes."""
