"""GPU data augmentation: random crop, horizontal flip, cutout and normalisation in one pass.

The training set sits in device memory as uint8 NHWC images [N, H, W, 3]. Each step turns a batch of
indices into the net's input, a [B, 3, H, W] tensor in channels_last memory format (physically NHWC),
bf16 on CUDA, float32 on CPU. Two implementations share one signature and agree bit for bit:

- `augment_reference`: plain batched torch (index grids + gather), runs anywhere;
- `augment_triton`: one fused Triton kernel that reads the source bytes and writes each output element
  once; runs on CPU tensors under TRITON_INTERPRET=1.

Random parameters are drawn on the device by `draw_params`, one int32 row per image:
(dy, dx, flip, cy0, cx0). Output pixel (y, x), channel c, is computed in this order:

1. flip:   x' = W-1-x if flip else x
2. crop:   source position in the padded image is (y+dy, x'+dx), dy, dx in [0, 2*pad], i.e. the
           original pixel (y+dy-pad, x'+dx-pad); out of range it follows `pad_mode`: 'reflect' mirrors
           without repeating the edge (like F.pad(mode='reflect')), 'constant' gives output 0.0
           (the mean colour after normalisation);
3. cutout: in OUTPUT coordinates, cy0 <= y < cy0+cutout and cx0 <= x < cx0+cutout gives 0.0;
           the corner is centre - cutout//2 with the centre uniform over all H x W positions, so the
           box clips at the borders;
4. normalise: the value is table[c, byte], a [3, 256] lookup table (`normalize_table`) computed once
           in float32 and cast to the output dtype. Looking values up instead of doing arithmetic in
           each implementation is what makes them bit-exact.

Memory traffic per 32x32 image: 3072 B read (uint8 source) + 6144 B written (bf16 output; 12288 B in
float32), i.e. 9216 B per image in bf16; `bytes_moved` gives the total for a batch.
"""

from __future__ import annotations  # lets the kernel signature name tl.constexpr without triton

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch path still works without triton
    triton = tl = None

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32
NO_CUTOUT = -(1 << 16)  # a cutout corner so far outside that the box never touches the image


def bytes_moved(batch_size, out_dtype, image_size=IMAGE_SIZE):
    """Bytes read (uint8 source) plus written (output) by one augmented batch, for GB/s figures."""
    pixels = image_size * image_size * 3
    return batch_size * pixels * (1 + torch.empty((), dtype=out_dtype).element_size())


def normalize_table(mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype=torch.float32, device="cpu"):
    """[3, 256]: the output value for each channel and uint8 value, in float32 then cast to dtype.

    Computed on the CPU so the table, and so the output, is the same on every device.
    """
    levels = torch.arange(256, dtype=torch.float32) / 255
    mean = torch.tensor(mean, dtype=torch.float32)[:, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None]
    return ((levels - mean) / std).to(dtype).to(device)


def normalize(images, table):
    """uint8 NHWC images -> the net's input, NCHW in channels-last memory, by table lookup."""
    channels = torch.arange(3, device=images.device)
    return table[channels, images.long()].permute(0, 3, 1, 2)


def draw_params(batch_size, generator, device, pad=4, cutout=8, flip=True, image_size=IMAGE_SIZE):
    """int32 [B, 5] of (dy, dx, flip, cy0, cx0), drawn on `device` with `generator`.

    `flip` is a bool (random flips or none) or an int tensor [B] of explicit flip bits.
    """
    shape = (batch_size, 2)
    crop = torch.randint(0, 2 * pad + 1, shape, generator=generator, device=device)
    if isinstance(flip, torch.Tensor):
        flips = flip.to(device=device, dtype=torch.int64).reshape(batch_size, 1)
    elif flip:
        flips = torch.randint(0, 2, (batch_size, 1), generator=generator, device=device)
    else:
        flips = torch.zeros((batch_size, 1), dtype=torch.int64, device=device)
    if cutout > 0:
        corner = torch.randint(0, image_size, shape, generator=generator, device=device) - cutout // 2
    else:
        corner = torch.full(shape, NO_CUTOUT, dtype=torch.int64, device=device)
    return torch.cat([crop, flips, corner], dim=1).to(torch.int32)


def _check_inputs(images, indices, params, table, pad_mode, pad, out):
    """Validate shapes and return the output buffer ([B, 3, H, W] channels_last, table's dtype)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    _, height, width, _ = images.shape
    if pad_mode == "reflect" and pad >= min(height, width):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels")
    if table.shape != (3, 256):
        raise ValueError(f"table must be [3, 256], got {list(table.shape)}")
    if params.dim() != 2 or params.shape != (indices.shape[0], 5):
        raise ValueError(f"params must be [B, 5] for B = {indices.shape[0]}, got {list(params.shape)}")
    if any(t.device != images.device for t in (indices, params, table)):
        raise ValueError(f"indices, params and table must be on the images' device ({images.device})")
    shape = (params.shape[0], 3, height, width)
    if out is None:
        return torch.empty(shape, dtype=table.dtype, device=images.device, memory_format=torch.channels_last)
    if out.shape != shape or out.dtype != table.dtype or not out.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"out must be a channels_last {table.dtype} tensor of shape {list(shape)}")
    return out


def augment_reference(images, indices, params, table, pad_mode="reflect", cutout=8, out=None, pad=4):
    """Plain batched torch: index grids, one gather, one table lookup. See the module docstring.

    `pad` must be the padding `params` were drawn with (crop offsets are in [0, 2*pad]).
    """
    out = _check_inputs(images, indices, params, table, pad_mode, pad, out)
    _, height, width, _ = images.shape
    dy, dx, flip, cy0, cx0 = params.long().unbind(1)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    flipped_cols = torch.where(flip[:, None].bool(), width - 1 - cols, cols)
    src_y = rows + dy[:, None] - pad  # [B, H]
    src_x = flipped_cols + dx[:, None] - pad  # [B, W]
    if pad_mode == "reflect":
        src_y = _reflect(src_y, height)
        src_x = _reflect(src_x, width)
    inside = ((src_y >= 0) & (src_y < height))[:, :, None] & ((src_x >= 0) & (src_x < width))[:, None, :]
    src_y, src_x = src_y.clamp(0, height - 1), src_x.clamp(0, width - 1)
    pixels = images[indices[:, None, None], src_y[:, :, None], src_x[:, None, :]]  # [B, H, W, 3]
    values = table[torch.arange(3, device=images.device), pixels.long()]
    in_box = ((rows >= cy0[:, None]) & (rows < cy0[:, None] + cutout))[:, :, None] & (
        (cols >= cx0[:, None]) & (cols < cx0[:, None] + cutout)
    )[:, None, :]
    values.masked_fill_((~inside | in_box)[..., None], 0.0)
    out.permute(0, 2, 3, 1).copy_(values)
    return out


def _reflect(position, size):
    """Mirror out-of-range positions about the edge pixel (the edge is not repeated)."""
    position = position.abs()
    return torch.where(position > size - 1, 2 * (size - 1) - position, position)


def _augment_kernel(
    images_ptr,
    indices_ptr,
    params_ptr,
    table_ptr,
    out_ptr,
    pad,
    cutout,
    HEIGHT: tl.constexpr,
    WIDTH: tl.constexpr,
    REFLECT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One program writes BLOCK consecutive output elements of one image (grid: image, block)."""
    image = tl.program_id(0).to(tl.int64)
    offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # flat NHWC offsets within the image
    valid = offsets < HEIGHT * WIDTH * 3
    y = offsets // (WIDTH * 3)
    x = offsets % (WIDTH * 3) // 3
    channel = offsets % 3
    # per-image scalars: which source image and its (dy, dx, flip, cy0, cx0)
    source = tl.load(indices_ptr + image).to(tl.int64)
    row = params_ptr + image * 5
    dy, dx, flip = tl.load(row), tl.load(row + 1), tl.load(row + 2)
    cy0, cx0 = tl.load(row + 3), tl.load(row + 4)
    src_x = tl.where(flip != 0, WIDTH - 1 - x, x) + dx - pad
    src_y = y + dy - pad
    if REFLECT:
        src_y = tl.abs(src_y)
        src_y = tl.where(src_y > HEIGHT - 1, 2 * (HEIGHT - 1) - src_y, src_y)
        src_x = tl.abs(src_x)
        src_x = tl.where(src_x > WIDTH - 1, 2 * (WIDTH - 1) - src_x, src_x)
    inside = (src_y >= 0) & (src_y < HEIGHT) & (src_x >= 0) & (src_x < WIDTH)
    in_box = (y >= cy0) & (y < cy0 + cutout) & (x >= cx0) & (x < cx0 + cutout)
    keep = valid & inside & ~in_box
    pixel_ptr = images_ptr + source * (HEIGHT * WIDTH * 3) + (src_y * WIDTH + src_x) * 3 + channel
    byte = tl.load(pixel_ptr, mask=keep, other=0).to(tl.int32)
    value = tl.load(table_ptr + channel * 256 + byte, mask=keep, other=0.0)
    tl.store(out_ptr + image * (HEIGHT * WIDTH * 3) + offsets, value, mask=valid)


_compiled_kernels = {}  # triton.jit reads TRITON_INTERPRET when it wraps, so wrap once per mode


def _kernel(interpret):
    if interpret not in _compiled_kernels:
        _compiled_kernels[interpret] = triton.jit(_augment_kernel)
    return _compiled_kernels[interpret]


def _interpreting():
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older ones read only the environment
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def augment_triton(
    images, indices, params, table, pad_mode="reflect", cutout=8, out=None, pad=4, block=1024, num_warps=4
):
    """The fused Triton kernel: same arguments and bit-identical result as `augment_reference`."""
    if triton is None:
        raise RuntimeError("augment_triton needs the triton package; use impl='torch' instead")
    interpret = _interpreting()
    if images.device.type == "cpu" and not interpret:
        raise RuntimeError("augment_triton on CPU tensors needs TRITON_INTERPRET=1 (or use impl='torch')")
    out = _check_inputs(images, indices, params, table, pad_mode, pad, out)
    if not images.is_contiguous():  # copying the whole dataset every step would defeat the point
        raise ValueError("augment_triton needs contiguous images")
    batch_size, _, height, width = out.shape
    if batch_size == 0:
        return out
    grid = (batch_size, triton.cdiv(height * width * 3, block))
    _kernel(interpret)[grid](
        images,
        indices.contiguous(),
        params.contiguous(),
        table.contiguous(),
        out,
        pad,
        cutout,
        HEIGHT=height,
        WIDTH=width,
        REFLECT=pad_mode == "reflect",
        BLOCK=block,
        num_warps=num_warps,
    )
    return out


def augment_batch(images, indices, params, table, pad_mode="reflect", pad=4, cutout=8, impl="auto", out=None):
    """Augment with already drawn `params` using the chosen implementation.

    impl: 'auto' (Triton for CUDA images when triton imports, else torch), 'triton' or 'torch'.
    """
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    if impl == "auto":
        impl = "triton" if images.is_cuda and triton is not None else "torch"
    run = augment_triton if impl == "triton" else augment_reference
    return run(images, indices, params, table, pad_mode=pad_mode, cutout=cutout, out=out, pad=pad)
