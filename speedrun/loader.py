"""The on-device loader: shuffled, augmented training batches drawn from images in device memory."""
import torch

from . import augment


def make_batcher(data, cfg, device, rank=0, world=1, dtype=torch.float32):
    """A function (epoch, step) -> (inputs, targets): this rank's share of the step's global batch,
    normalised into `dtype` (the device policy's input dtype).

    Every rank draws the same permutation and augmentation for the whole global batch and keeps its
    slice, so N processes see exactly the batches one process would.
    """
    a, t = cfg["augment"], cfg["training"]
    images, labels = data.train_images, data.train_labels
    if t["train_subset"]:  # a fixed random subset, whatever order the beton holds
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(t["seed"]))
        chosen = chosen[: t["train_subset"]].sort().values.to(images.device)
        images, labels = images[chosen], labels[chosen]
    batch, local = t["batch_size"], t["batch_size"] // world
    if batch > len(images):
        raise ValueError(f"batch size {batch} exceeds the {len(images)} training images")
    table = augment.normalize_table(augment.CIFAR10_MEAN, augment.CIFAR10_STD, dtype, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(t["seed"])
    alternate = torch.randint(0, 2, (len(images),), generator=generator, device=device, dtype=torch.int32)
    out = torch.empty(local, 32, 32, 3, dtype=dtype, device=device).permute(0, 3, 1, 2)
    cache = {"epoch": None, "order": None}

    def next_batch(epoch, step):
        if cache["epoch"] != epoch:  # one permutation per epoch
            cache["epoch"] = epoch
            cache["order"] = torch.randperm(len(images), generator=generator, device=device)
        index = cache["order"][step * batch + rank * local: step * batch + (rank + 1) * local]
        params = augment.draw_params(batch, generator, device, pad=a["pad"], cutout=a["cutout"],
                                     flip=a["flip"])[rank * local: (rank + 1) * local]
        if a["flip_mode"] == "alternate":  # each image flips every other epoch instead of at random
            params[:, 2] = alternate[index] ^ (epoch % 2)
        inputs = augment.augment_batch(images, index, params, table, pad_mode=a["pad_mode"], pad=a["pad"],
                                       cutout=a["cutout"], impl=a["impl"], out=out)
        return inputs, labels[index]

    next_batch.steps_per_epoch = len(images) // batch  # the last partial batch is dropped: fixed shapes
    next_batch.num_images = len(images)
    next_batch.generator, next_batch.table, next_batch.cache = generator, table, cache
    return next_batch
