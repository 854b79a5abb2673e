"""The on-device loader: shuffled, augmented training batches drawn from images in device memory."""

import torch

from speedrun.data import augment


def train_subset(images, labels, size, seed):
    """A fixed random `size` of the images and their labels, drawn by `seed` whatever order the beton
    holds, kept in beton order (the reference trainer draws the same for the same seed)."""
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    chosen = chosen[:size].sort().values.to(images.device)
    return images[chosen], labels[chosen]


class Loader:
    """`loader(epoch, step)` -> (inputs, targets): this rank's share of the step's global batch,
    normalised into `dtype` (the device policy's input dtype).

    Every rank draws the same permutation and augmentation for the whole global batch and keeps its
    slice, so N processes see exactly the batches one process would. Its state is the random generator,
    the epoch drawn last and that epoch's order; `state_dict` and `load_state_dict` save and restore it
    (the warm-up and checkpoints go through them).
    """

    def __init__(self, data, cfg, device, rank=0, world=1, dtype=torch.float32):
        self.options, t = cfg["augment"], cfg["training"]
        images, labels = data.train_images, data.train_labels
        if t["train_subset"]:
            images, labels = train_subset(images, labels, t["train_subset"], t["seed"])
        self.batch, self.local = t["batch_size"], t["batch_size"] // world
        if self.batch > len(images):
            raise ValueError(f"batch size {self.batch} exceeds the {len(images)} training images")
        self.images, self.labels, self.rank, self.seed = images, labels, rank, t["seed"]
        self.device = torch.device(device)
        self.table = augment.normalize_table(augment.CIFAR10_MEAN, augment.CIFAR10_STD, dtype, device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)
        self.alternate = torch.randint(0, 2, (len(images),), generator=self.generator, device=device, dtype=torch.int32)
        self.out = torch.empty(self.local, 32, 32, 3, dtype=dtype, device=device).permute(0, 3, 1, 2)
        self.epoch, self.order = None, None
        self.steps_per_epoch = len(images) // self.batch  # the last partial batch is dropped: fixed shapes
        self.num_images = len(images)

    def __call__(self, epoch, step):
        a, batch, local, rank = self.options, self.batch, self.local, self.rank
        if not 0 <= step < self.steps_per_epoch:  # past the end a slice is silently short, or empty
            raise IndexError(f"step {step} is outside an epoch of {self.steps_per_epoch} steps")
        if self.epoch != epoch:  # one permutation per epoch
            self.epoch = epoch
            self.order = torch.randperm(self.num_images, generator=self.generator, device=self.device)
        index = self.order[step * batch + rank * local : step * batch + (rank + 1) * local]
        params = augment.draw_params(
            batch, self.generator, self.device, pad=a["pad"], cutout=a["cutout"], flip=a["flip"]
        )[rank * local : (rank + 1) * local]
        if a["flip_mode"] == "alternate":  # each image flips every other epoch instead of at random
            params[:, 2] = self.alternate[index] ^ (epoch % 2)
        inputs = augment.augment_batch(
            self.images,
            index,
            params,
            self.table,
            pad_mode=a["pad_mode"],
            pad=a["pad"],
            cutout=a["cutout"],
            impl=a["impl"],
            out=self.out,
        )
        return inputs, self.labels[index]

    def state_dict(self):
        """The loader's state: generator state (and the device type it is for), last epoch, its order."""
        return {
            "generator": self.generator.get_state(),
            "device": self.device.type,
            "epoch": self.epoch,
            "order": self.order,
        }

    def load_state_dict(self, state):
        """Continue from `state`. Without an order (a checkpoint's, written at an epoch's end), the next
        batch draws a new one. Returns None, or a line to tell the user when the generator was reseeded
        (a state saved on another device type; see `continue_stream`)."""
        order = state.get("order")
        self.epoch, self.order = (state["epoch"], order.to(self.device)) if order is not None else (None, None)
        first = 0 if state["epoch"] is None else state["epoch"] + 1
        return continue_stream(self.generator, state["generator"], state["device"], self.device.type, self.seed, first)


def continue_stream(generator, saved, saved_device, device_type, seed, epoch):
    """Continue the saved random stream; across device types, whose generators hold different states
    (a CUDA state cannot be loaded into a CPU generator, nor the reverse), reseed from (seed, epoch),
    `epoch` being the first one drawn from here.

    Returns the line to tell the user in that case, else None.
    """
    if saved_device == device_type:
        generator.set_state(saved)
        return None
    generator.manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return (
        f"speedrun: resuming a {saved_device} run on {device_type}: batches from epoch {epoch + 1} on are "
        f"drawn from a generator reseeded from (seed, epoch), so the run is valid but not bit-identical "
        f"to the uninterrupted one"
    )
