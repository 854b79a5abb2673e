"""The benchmark's stages up to the net: the device's ceilings, writing betons, loading them onto the
device, and the augmentation kernel against its torch reference."""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from bench_common import (
    CPU_CONV_BATCH,
    CPU_MATMULS,
    FIFTY_K,
    INTERPRETER_BATCH,
    MATMUL_CALL_LIMIT_S,
    MATMUL_REPEAT_S,
    SIZES,
    throughput,
)

from speedrun.data import augment
from speedrun.data.betons import load_beton
from speedrun.nets.model import build_model
from write_beton import write_betons


def matmul_tflops(bench, n, dtype, calls):
    """An n-cubed product's rate, at most `calls` calls a repeat, fewer where they would pass
    MATMUL_REPEAT_S (one call, timed after a warm-up one, says how long a call takes)."""
    a, b = (torch.randn(n, n, device=bench.device, dtype=dtype) for _ in range(2))
    once = bench.measure(lambda: a @ b, calls=1, repeats=1)["median_s"]
    timing = bench.measure(lambda: a @ b, calls=max(1, min(calls, round(MATMUL_REPEAT_S / once))))
    return {**timing, "matmul_size": n, "dtype": str(dtype), "tflops": 2 * n**3 / timing["median_s"] / 1e12}


def best_matmul(bench, sizes, dtype, calls):
    """The fastest of square matrix products of `sizes`, ascending, with every size's record. A size
    whose product already took over MATMUL_CALL_LIMIT_S stops the climb (a CPU emulating bf16)."""
    tried = []
    for n in sizes:
        tried.append(matmul_tflops(bench, n, dtype, calls))
        if tried[-1]["median_s"] > MATMUL_CALL_LIMIT_S:
            break
    return {**max(tried, key=lambda record: record["tflops"]), "sizes": tried}


def conv_shapes(bench):
    """(in channels, out channels, height, width) of every distinct 3x3 convolution of the configured
    net, read from one image's forward pass: the shapes the step's arithmetic is spent on."""
    model, shapes = build_model(bench.cfg, torch.zeros(1, 32, 32, 3, dtype=torch.uint8)), []

    def record(conv, inputs, output):
        shapes.append((conv.in_channels, conv.out_channels, *inputs[0].shape[2:]))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return sorted(set(shapes))


def best_conv(bench, batch, calls):
    """The fastest forward convolution among the net's shapes, at `batch` images, channels-last, in
    the training precision (the policy's autocast)."""
    tried = []
    for c_in, c_out, h, w in conv_shapes(bench):
        conv = bench.policy.prepare(torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
        x = torch.randn(batch, c_in, h, w, device=bench.device)
        x = x.to(memory_format=torch.channels_last) if bench.policy.channels_last else x

        def forward(conv=conv, x=x):
            with torch.no_grad(), bench.policy.autocast():
                conv(x)

        timing = bench.measure(forward, calls=calls)
        flops = 2 * batch * c_in * c_out * 9 * h * w
        tried.append({**timing, "shape": [batch, c_in, c_out, h, w], "tflops": flops / timing["median_s"] / 1e12})
    return {**max(tried, key=lambda record: record["tflops"]), "shapes": tried}


def stage_ceilings(bench):
    """The measured bf16 and float32 matrix-product rates, each the best over several sizes, the best
    forward 3x3 convolution of the net's own shapes, and the bandwidth of a device-to-device copy (bytes
    read and written). `tflops`, the peak every FLOP rate is a fraction of, is the best of the matrix
    product and the convolutions in the precision training computes in (the device policy's): one size
    alone can sit well under what the device reaches (a 1024-cubed bf16 product ran at 0.62 TFLOP/s
    on a 2-core Xeon with AMX, 2048-cubed at 1.07 and the net's convolutions at 2.62), and a step would
    then read near or above 100%."""
    on_cuda = bench.device.type == "cuda"
    size = bench.size if on_cuda else SIZES["small"]  # a CPU needs minutes for the GPU sizes
    sizes = size["matmul"] if on_cuda or bench.size is SIZES["small"] else CPU_MATMULS
    rates = {
        name: best_matmul(bench, sizes, dtype, size["kernel_calls"])
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
    }
    used = "bf16" if bench.policy.bf16 else "fp32"
    conv = best_conv(bench, bench.cfg["training"]["batch_size"] if on_cuda else CPU_CONV_BATCH, size["kernel_calls"])
    source = torch.ones(size["copy_bytes"], dtype=torch.uint8, device=bench.device)
    target = torch.empty_like(source)
    copy = bench.measure(lambda: target.copy_(source), calls=size["kernel_calls"])
    moved = 2 * source.numel()
    return {
        **rates[used],
        "tflops": max(rates[used]["tflops"], conv["tflops"]),
        "peak_from": "conv" if conv["tflops"] > rates[used]["tflops"] else "matmul",
        "matmul_tflops": rates[used]["tflops"],
        "conv_tflops": conv["tflops"],
        "bf16_tflops": rates["bf16"]["tflops"],
        "fp32_tflops": rates["fp32"]["tflops"],
        "matmuls": rates,
        "conv": conv,
        "copy": {**copy, "bytes": moved},
        "gbps": moved / copy["median_s"] / 1e9,
    }


def write_synthetic_source(folder, n_train, n_test, seed=0):
    """An extracted binary-version CIFAR-10 folder of random images a net can still learn (each class
    its own colour plus noise): five train batches and a test batch of [label, R, G, B planes]."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 192, (10, 3, 1), dtype=np.uint8)
    folder.mkdir(parents=True)
    counts = [len(part) for part in np.array_split(np.arange(n_train), 5)] + [n_test]
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, count in zip(names, counts):
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        planes = palette[labels] + rng.integers(0, 64, (count, 3, 1024), dtype=np.uint8)
        records = np.concatenate([labels[:, None], planes.reshape(count, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return folder


def stage_write_beton(bench):
    """write_betons from --source, or from a synthetic source in a temporary folder."""
    data = bench.cfg["data"]
    source = bench.given.get("data", {}).get("source")
    origin = source or "synthetic"
    source = source or write_synthetic_source(
        bench.tmp / "source", bench.size["train_images"], bench.size["test_images"]
    )
    folders = []

    def write():
        if folders:
            shutil.rmtree(folders[-1])  # keep one pair of betons on disk, not one per repeat
        folders.append(bench.tmp / f"betons{len(folders)}")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            write_betons(
                str(source),
                folders[-1] / "train.beton",
                folders[-1] / "test.beton",
                data["cache_dir"],
                data["trust_pickles"],
                data["num_workers"],
            )

    timing = bench.measure(write, calls=1, repeats=bench.size["write_repeats"], host_clock=True)
    paths = [str(folders[-1] / name) for name in ("train.beton", "test.beton")]
    images = sum(json.loads(Path(path + ".json").read_text())["count"] for path in paths)
    bench.written = (*paths, origin)
    return {**throughput(timing, images), "source": origin, "num_workers": data["num_workers"]}


def stage_beton_to_device(bench):
    """load_beton of the train beton, from the file to images on the device."""
    train_path = bench.betons()[0]
    count = [0]

    def load():
        count[0] = len(load_beton(train_path, bench.device)[1])

    timing = bench.measure(load, calls=1, host_clock=True)
    record = throughput(timing, count[0])
    return {**record, "seconds_per_50k": FIFTY_K / record["images_per_s"], "beton": train_path}


def time_augment(bench, impl, batch):
    """One implementation on one batch: timing, bytes moved, GB/s, and agreement with the reference."""
    w, device, a = bench.workload(), bench.device, bench.cfg["augment"]
    images, table = w.data.train_images, w.batcher.table
    generator = torch.Generator(device=device).manual_seed(0)
    indices = torch.randint(0, len(images), (batch,), generator=generator, device=device)
    params = augment.draw_params(batch, generator, device, pad=a["pad"], cutout=a["cutout"], flip=a["flip"])
    out = torch.empty(batch, 3, 32, 32, dtype=table.dtype, device=device, memory_format=torch.channels_last)

    def run(impl=impl, out=out):
        return augment.augment_batch(
            images, indices, params, table, pad_mode=a["pad_mode"], pad=a["pad"], cutout=a["cutout"], impl=impl, out=out
        )

    timing = bench.measure(run, calls=bench.size["kernel_calls"])
    moved = augment.bytes_moved(batch, table.dtype)
    return {
        **timing,
        "batch_size": batch,
        "bytes": moved,
        "gbps": moved / timing["median_s"] / 1e9,
        "matches_reference": torch.equal(run(), run("torch", None)),
    }


def stage_augment(bench):
    """The Triton kernel against the torch reference, at the training batch (`impls`) and at a batch
    large enough that launch overhead does not hide the kernel's speed (`large_batch`): 512 images move
    4.7 MB, about 2 us at 3 TB/s, less than a launch. The headline figures are the large batch's, of the
    implementation training uses (Triton on CUDA); the interpreter times only a few images."""
    on_cuda, size = bench.device.type == "cuda", bench.size
    batches = {"torch": size["augment_batch"]}
    if augment.triton is not None and (on_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        batches["triton"] = size["augment_batch"] if on_cuda else INTERPRETER_BATCH
    impls = {impl: time_augment(bench, impl, batch) for impl, batch in batches.items()}
    large = {
        impl: time_augment(bench, impl, size["augment_large_batch"]) for impl in batches if on_cuda or impl == "torch"
    }
    used = "triton" if on_cuda and "triton" in impls else "torch"
    both = "triton" in large or ("triton" in impls and batches["triton"] == batches["torch"])
    compared = large if "triton" in large else impls
    speedup = compared["torch"]["median_s"] / compared["triton"]["median_s"] if both else None
    return {**large[used], "impl": used, "speedup_over_torch": speedup, "impls": impls, "large_batch": large}
