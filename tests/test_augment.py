"""GPU augmentation: the Triton kernel (interpreted on CPU) against the torch reference, bit for bit,
and the reference against a plain per-image implementation (F.pad + slicing + flip)."""

import os

# Triton reads this when it is first imported (its own library functions are wrapped then), so one
# process runs either the interpreter or compiled kernels: the CUDA test below starts its own.
os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from speedrun.data import augment as aug
from speedrun.data.augment import (
    augment_batch,
    augment_reference,
    augment_triton,
    bytes_moved,
    draw_params,
    normalize_table,
)

needs_triton = pytest.mark.skipif(aug.triton is None, reason="triton is not installed")
DTYPES = [torch.float32, torch.bfloat16]


def random_images(count=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 32, 32, 3), dtype=torch.uint8, generator=generator)


def random_batch(batch_size, seed=0, pad=4, cutout=8):
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, 40, (batch_size,), generator=generator)
    return indices, draw_params(batch_size, generator, "cpu", pad=pad, cutout=cutout)


def augment(images, indices, generator, table, pad=4, cutout=8, flip=True, **options):
    """Draw a batch's parameters with `generator`, then augment it, as the loader does."""
    params = draw_params(
        indices.shape[0], generator, images.device, pad=pad, cutout=cutout, flip=flip, image_size=images.shape[1]
    )
    return augment_batch(images, indices, params, table, pad=pad, cutout=cutout, **options)


def border_params():
    """Every extreme crop offset and flip, with cutout corners clipped at each border or inside."""
    rows = []
    corners = [(-7, -7), (-4, 31), (31, -4), (31, 31), (0, 24), (12, 3)]
    for dy in (0, 8):
        for dx in (0, 8):
            for flip in (0, 1):
                for cy0, cx0 in corners:
                    rows.append((dy, dx, flip, cy0, cx0))
    return torch.tensor(rows, dtype=torch.int32)


def slow_augment(image, params, table, pad_mode, pad=4, cutout=8):
    """One image the obvious way: normalise, pad, crop, flip, cut out. Returns [3, 32, 32]."""
    dy, dx, flip, cy0, cx0 = params.tolist()
    normalised = table[torch.arange(3)[:, None, None], image.permute(2, 0, 1).long()]
    padded = F.pad(normalised, (pad,) * 4, mode=pad_mode, value=0.0)
    result = padded[:, dy : dy + 32, dx : dx + 32]
    if flip:
        result = result.flip(-1)
    result = result.clone()
    result[:, max(cy0, 0) : max(cy0 + cutout, 0), max(cx0, 0) : max(cx0 + cutout, 0)] = 0.0
    return result


@needs_triton
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 7, 33])
def test_triton_matches_reference_random(pad_mode, dtype, batch_size):
    images, table = random_images(), normalize_table(dtype=dtype)
    indices, params = random_batch(batch_size, seed=batch_size)
    expected = augment_reference(images, indices, params, table, pad_mode)
    assert torch.equal(augment_triton(images, indices, params, table, pad_mode), expected)


@needs_triton
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_matches_reference_at_borders(pad_mode, dtype):
    images, table, params = random_images(), normalize_table(dtype=dtype), border_params()
    indices = torch.arange(params.shape[0]) % 40
    expected = augment_reference(images, indices, params, table, pad_mode)
    assert torch.equal(augment_triton(images, indices, params, table, pad_mode), expected)


@needs_triton
@pytest.mark.parametrize("pad, cutout", [(0, 0), (2, 5), (4, 0), (0, 8)])
def test_triton_matches_reference_other_sizes(pad, cutout):
    images, table = random_images(), normalize_table(dtype=torch.bfloat16)
    indices, params = random_batch(9, seed=pad + cutout, pad=pad, cutout=cutout)
    for pad_mode in ("reflect", "constant"):
        expected = augment_reference(images, indices, params, table, pad_mode, cutout, pad=pad)
        got = augment_triton(images, indices, params, table, pad_mode, cutout, pad=pad)
        assert torch.equal(got, expected)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_reference_matches_per_image_implementation(pad_mode):
    images, table = random_images(), normalize_table()
    indices, params = random_batch(6)
    params = torch.cat([params, border_params()[::5]])
    indices = torch.cat([indices, torch.arange(params.shape[0] - 6)])
    out = augment_reference(images, indices, params, table, pad_mode)
    for i in range(params.shape[0]):
        expected = slow_augment(images[indices[i]], params[i], table, pad_mode)
        assert torch.equal(out[i], expected), f"image {i}, params {params[i].tolist()}"


def test_reflect_and_constant_differ_only_in_padding():
    images, table = random_images(), normalize_table()
    indices = torch.arange(2)
    params = torch.tensor([[0, 0, 0, -99, -99], [4, 4, 1, -99, -99]], dtype=torch.int32)
    reflect = augment_reference(images, indices, params, table, "reflect")
    constant = augment_reference(images, indices, params, table, "constant")
    assert torch.equal(constant[0, :, :4, :], torch.zeros(3, 4, 32))  # padding rows come out as the mean
    assert not torch.equal(reflect[0, :, :4, :], constant[0, :, :4, :])
    assert torch.equal(reflect[0, :, 4:, 4:], constant[0, :, 4:, 4:])
    assert torch.equal(reflect[1], constant[1])  # centred crop: no padding used


def test_draw_params_ranges():
    params = draw_params(4096, torch.Generator().manual_seed(0), "cpu", pad=4, cutout=8)
    assert params.dtype == torch.int32 and params.shape == (4096, 5)
    dy, dx, flip, cy0, cx0 = params.unbind(1)
    for offsets in (dy, dx):
        assert set(offsets.tolist()) == set(range(9))
    assert set(flip.tolist()) == {0, 1}
    for corner in (cy0, cx0):
        assert set(corner.tolist()) == set(range(-4, 28))  # centre anywhere in 0..31, minus 8 // 2


def test_draw_params_switches_off():
    params = draw_params(64, torch.Generator().manual_seed(0), "cpu", pad=0, cutout=0, flip=False)
    assert torch.equal(params[:, :3], torch.zeros(64, 3, dtype=torch.int32))
    assert (params[:, 3:] + 32 < 0).all()  # the cutout box lies far outside the image


def test_draw_params_flip_override():
    flips = torch.tensor([1, 0, 1, 1, 0])
    params = draw_params(5, torch.Generator().manual_seed(0), "cpu", flip=flips)
    assert torch.equal(params[:, 2], flips.int())


def test_same_seed_same_batch_different_seed_different():
    images, table = random_images(), normalize_table()
    indices = torch.arange(8)

    def batch(seed):
        generator = torch.Generator().manual_seed(seed)
        params = draw_params(8, generator, "cpu")
        return params, augment(images, indices, torch.Generator().manual_seed(seed), table)

    (params_a, out_a), (params_b, out_b), (params_c, out_c) = batch(1), batch(1), batch(2)
    assert torch.equal(params_a, params_b) and torch.equal(out_a, out_b)
    assert not torch.equal(params_a, params_c) and not torch.equal(out_a, out_c)


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_layout_and_out_buffer(impl, dtype):
    images, table = random_images(), normalize_table(dtype=dtype)
    indices = torch.arange(3)
    out = augment(images, indices, torch.Generator().manual_seed(0), table, impl=impl)
    assert out.shape == (3, 3, 32, 32) and out.dtype == dtype
    assert out.stride() == (3072, 1, 96, 3)  # channels_last: physically NHWC
    buffer = torch.empty_like(out)
    result = augment(images, indices, torch.Generator().manual_seed(0), table, impl=impl, out=buffer)
    assert result is buffer and torch.equal(buffer, out)


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=needs_triton)])
def test_no_augmentation_is_just_normalisation(impl):
    images, table = random_images(), normalize_table()
    indices = torch.tensor([5, 0, 39])
    out = augment(images, indices, torch.Generator().manual_seed(0), table, pad=0, cutout=0, flip=False, impl=impl)
    mean, std = torch.tensor(aug.CIFAR10_MEAN), torch.tensor(aug.CIFAR10_STD)
    expected = ((images[indices].float() / 255 - mean) / std).permute(0, 3, 1, 2)
    assert torch.allclose(out, expected, atol=1e-6)


@needs_triton
def test_auto_uses_reference_on_cpu_and_matches_triton():
    images, table = random_images(), normalize_table(dtype=torch.bfloat16)
    indices = torch.arange(5)
    outs = [
        augment(images, indices, torch.Generator().manual_seed(3), table, pad_mode="constant", impl=impl)
        for impl in ("auto", "torch", "triton")
    ]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])


def test_normalize_table():
    table = normalize_table()
    assert table.shape == (3, 256) and table.dtype == torch.float32
    assert table[0, 0].item() == pytest.approx(-0.4914 / 0.2470)
    assert table[2, 255].item() == pytest.approx((1 - 0.4465) / 0.2616)
    assert torch.equal(normalize_table(dtype=torch.bfloat16), table.bfloat16())


def test_bytes_moved():
    assert bytes_moved(1, torch.bfloat16) == 3072 + 6144
    assert bytes_moved(10, torch.float32) == 10 * (3072 + 12288)


def test_bad_arguments():
    images, table = random_images(), normalize_table()
    indices, params = random_batch(4)
    with pytest.raises(ValueError, match="pad_mode"):
        augment_reference(images, indices, params, table, "wrap")
    with pytest.raises(ValueError, match="out must be"):
        augment_reference(images, indices, params, table, out=torch.empty(4, 3, 32, 32))
    with pytest.raises(ValueError, match="params"):
        augment_reference(images, indices, params[:3], table)
    with pytest.raises(ValueError, match="impl"):
        augment(images, indices, torch.Generator(), table, impl="cuda")


def test_triton_errors_are_clear(monkeypatch):
    images, table = random_images(), normalize_table()
    indices, params = random_batch(2)
    if aug.triton is not None:
        monkeypatch.setattr(aug, "_interpreting", lambda: False)
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            augment_triton(images, indices, params, table)
    monkeypatch.setattr(aug, "triton", None)
    with pytest.raises(RuntimeError, match="needs the triton package"):
        augment_triton(images, indices, params, table)


def test_module_imports_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from speedrun.data.augment import augment_batch, draw_params, normalize_table\n"
        "images = torch.zeros(4, 32, 32, 3, dtype=torch.uint8)\n"
        "params = draw_params(4, torch.Generator(), 'cpu')\n"
        "out = augment_batch(images, torch.arange(4), params, normalize_table())\n"
        "assert out.shape == (4, 3, 32, 32)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_section_defaults():
    from speedrun.runs.config import defaults

    assert defaults()["augment"] == {
        "pad": 4,
        "pad_mode": "reflect",
        "cutout": 8,
        "flip": True,
        "flip_mode": "random",
        "impl": "auto",
    }


CUDA_CHECK = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from test_augment import augment_reference, augment_triton, border_params, draw_params, normalize_table, random_images
images, table = random_images().cuda(), normalize_table(dtype=torch.bfloat16, device="cuda")
indices = torch.randint(0, 40, (1000,), device="cuda")
params = torch.cat([draw_params(1000 - 48, torch.Generator("cuda").manual_seed(0), "cuda"), border_params().cuda()])
expected = augment_reference(images, indices, params, table, sys.argv[2])
print("equal" if torch.equal(augment_triton(images, indices, params, table, sys.argv[2]), expected) else "different")
"""


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_compiled_kernel_matches_reference_on_cuda(pad_mode):
    """The real compiled kernel, in a process that imports triton without the interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run(
        [sys.executable, "-c", CUDA_CHECK, os.path.dirname(__file__), pad_mode], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "equal"
