"""PNG plots of a run: loss and accuracy curves, the LR schedule, a grid of augmented images."""

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history, path):
    """Train/test loss and accuracy against epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        ax_loss.plot(epochs, [h[key] for h in history], marker=".", label=label)
    for key, label in (("train_acc", "train"), ("test_acc", "test")):
        ax_acc.plot(epochs, [100 * h[key] for h in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_schedule(lrs, steps_per_epoch, path):
    """The learning rate of every step, with epochs on the x axis."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([i / steps_per_epoch for i in range(len(lrs))], lrs)
    ax.set(xlabel="epoch", ylabel="learning rate", title="One-cycle schedule")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_image_grid(batch, mean, std, path, labels=None, classes=None, columns=8):
    """Show normalised NCHW images as the net sees them (de-normalised for display)."""
    images = batch[: columns * 4].float().cpu()
    images = images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    images = images.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.35), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if labels is not None and classes is not None:
                ax.set_title(classes[int(labels[i])], fontsize=7)
    fig.suptitle("Augmented training images")
    _save(fig, path)
