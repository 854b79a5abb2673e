"""CIFAR-10 in: read from wherever a user has it, written to betons, loaded into device memory, drawn
in batches and augmented on the device."""
