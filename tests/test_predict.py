"""speedrun.predict: image loading rules, predictions from a saved tiny net, and clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from speedrun.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, normalize_table
from speedrun.data.cifar import CIFAR10_CLASSES
from speedrun.engine.evaluate import tta_logits
from speedrun.nets.model import build_model
from speedrun.predict import ImageError, load_image, main, predict
from speedrun.runs.config import defaults
from speedrun.system import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with a checkpoint of a width-4 net, written the way training writes one."""
    folder = tmp_path_factory.mktemp("run")
    cfg = defaults()
    cfg["model"]["width"] = 4
    torch.manual_seed(0)
    net = build_model(cfg)
    checkpoint.save_checkpoint(
        str(folder),
        {"signature": checkpoint.model_signature(net), "model": net.state_dict(), "config": cfg, "epoch": 1},
    )
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Files of odd sizes and modes: RGBA, L, P and RGB, as PNG and JPEG."""
    folder = tmp_path_factory.mktemp("images")
    noise = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    rgb = Image.fromarray(noise)
    files = {
        "rgb.jpg": rgb,
        "rgba.png": rgb.convert("RGBA").resize((45, 71)),
        "grey.png": rgb.convert("L").resize((33, 200)),
        "palette.png": rgb.convert("P"),
    }
    paths = []
    for name, image in files.items():
        image.save(folder / name)
        paths.append(str(folder / name))
    return paths


def solid(size, colour, mode="RGB"):
    return Image.new(mode, size, colour)


# ---- images ------------------------------------------------------------------------------------


def test_load_image_gives_32x32_rgb_uint8_for_every_mode(images):
    for path in images:
        array = load_image(path)
        assert array.shape == (32, 32, 3) and array.dtype == np.uint8, path


def test_resize_keeps_aspect_by_centre_crop(tmp_path):
    # 64x32: green outer quarters, red then blue inner quarters. The shorter side is already 32, so the
    # centre crop is exactly the red|blue middle; squashing the whole image would bring in the green.
    stripes = np.zeros((32, 64, 3), np.uint8)
    for index, colour in enumerate((GREEN, RED, BLUE, GREEN)):
        stripes[:, 16 * index : 16 * (index + 1)] = colour
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    array = load_image(tmp_path / "wide.png")
    assert tuple(array[16, 0]) == RED and tuple(array[16, 15]) == RED
    assert tuple(array[16, 16]) == BLUE and tuple(array[16, 31]) == BLUE
    assert array[..., 1].max() == 0  # no green left


def test_resize_shrinks_shorter_side_then_crops(tmp_path):
    # 60 wide, 120 tall: top quarter green, then red, blue, green. Shorter side 60 -> 32 (scale 32/60),
    # height 64, the crop keeps its middle 32 rows: red on top, blue below.
    stripes = np.zeros((120, 60, 3), np.uint8)
    for index, colour in enumerate((GREEN, RED, BLUE, GREEN)):
        stripes[30 * index : 30 * (index + 1)] = colour
    Image.fromarray(stripes).save(tmp_path / "tall.png")
    array = load_image(tmp_path / "tall.png").astype(int)
    assert np.abs(array[2, 16] - RED).max() <= 2 and np.abs(array[29, 16] - BLUE).max() <= 2
    assert array[1:31, :, 1].max() <= 2  # green only bleeds into the edge rows through the filter
    # the same as resizing the whole image with bicubic, then cropping
    resized = np.asarray(Image.fromarray(stripes).resize((32, 64), Image.BICUBIC), dtype=int)
    assert np.abs(array - resized[16:48]).max() <= 1


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (48, 64), (33, 97), (500, 375), (7, 300), (101, 100)])
def test_resize_is_one_bicubic_resample_of_the_centre_square(tmp_path, size):
    # the shorter-side resize and the crop in one step, without rounding the longer side to whole pixels
    width, height = size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    image.save(tmp_path / "image.png")
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    expected = image.resize((32, 32), Image.BICUBIC, box=(left, top, left + side, top + side))
    assert np.array_equal(load_image(tmp_path / "image.png"), np.asarray(expected))


def test_transparency_goes_onto_black(tmp_path):
    image = solid((40, 40), (200, 100, 50, 0), "RGBA")
    image.paste((200, 100, 50, 255), (0, 0, 40, 20))  # top half opaque, bottom half transparent
    image.save(tmp_path / "alpha.png")
    array = load_image(tmp_path / "alpha.png")
    assert tuple(array[0, 16]) == (200, 100, 50) and tuple(array[31, 16]) == (0, 0, 0)


def test_greyscale_and_palette_become_rgb(tmp_path):
    solid((50, 30), 128, "L").save(tmp_path / "grey.png")
    solid((30, 50), RED).convert("P").save(tmp_path / "palette.png")
    assert (load_image(tmp_path / "grey.png") == 128).all()
    assert (load_image(tmp_path / "palette.png") == np.array(RED, np.uint8)).all()


# ---- predictions -------------------------------------------------------------------------------


def test_predict_ranks_top_classes(run_folder, images):
    results = predict(str(run_folder), images, top=3, device="cpu")
    assert [path for path, _ in results] == images
    for _, ranked in results:
        names, probs = zip(*ranked)
        assert len(ranked) == 3 and set(names) <= set(CIFAR10_CLASSES) and len(set(names)) == 3
        assert list(probs) == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6


def test_predict_full_ranking_sums_to_one_and_matches_file_and_folder(run_folder, images):
    from_folder = predict(str(run_folder), images[:1], top=10, device="cpu")
    from_file = predict(str(run_folder / checkpoint.LATEST), images[:1], top=10, device="cpu")
    assert from_folder == from_file
    assert sum(p for _, p in from_folder[0][1]) == pytest.approx(1, abs=1e-5)


def test_predict_batched_equals_one_by_one(run_folder, images):
    together = predict(str(run_folder), images, top=2, device="cpu")
    alone = [predict(str(run_folder), [path], top=2, device="cpu")[0] for path in images]
    for (_, a), (_, b) in zip(together, alone):
        assert [n for n, _ in a] == [n for n, _ in b]
        assert np.allclose([p for _, p in a], [p for _, p in b], atol=1e-5)


def test_predict_uses_the_saved_record_net_and_its_weight_average(images, tmp_path):
    # the whitening layer is fitted to images at training time: it must come from the checkpoint
    cfg = defaults()
    cfg["model"].update(arch="record", width=4)
    cfg.setdefault("training", {})["tta"] = 1
    torch.manual_seed(1)
    train_images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    net, average = build_model(cfg, train_images), build_model(cfg, train_images)
    with torch.no_grad():
        for p in average.parameters():
            p.add_(0.1 * torch.randn_like(p))
    checkpoint.save_checkpoint(
        str(tmp_path),
        {
            "signature": checkpoint.model_signature(net),
            "model": net.state_dict(),
            "average": average.state_dict(),
            "config": cfg,
        },
    )
    table = normalize_table(CIFAR10_MEAN, CIFAR10_STD, torch.float32, "cpu")
    inputs = normalize(torch.as_tensor(np.stack([load_image(p) for p in images])), table)
    expected = tta_logits(average.eval(), inputs, 1).softmax(1).max(1).values
    results = predict(str(tmp_path), images, top=1, device="cpu")
    assert np.allclose([ranked[0][1] for _, ranked in results], expected.detach().numpy(), atol=1e-5)


def test_main_prints_one_line_per_image(run_folder, images, capsys):
    main(["--checkpoint", str(run_folder), "--top", "2", "--device", "cpu", *images])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(images)
    for path, line in zip(images, lines):
        assert line.startswith(f"{path}: ") and line.count("%") == 2


def test_command_line_subprocess(run_folder, images):
    result = subprocess.run(
        [sys.executable, "-m", "speedrun.predict", "--checkpoint", str(run_folder), "--device", "cpu", images[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    name, rest = result.stdout.strip().split(": ", 1)
    assert name == images[0] and rest.count("%") == 3


# ---- errors ------------------------------------------------------------------------------------


def test_non_image_and_missing_files_are_all_listed(run_folder, images, tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("not an image")
    missing = str(tmp_path / "missing.png")
    with pytest.raises(ImageError) as error:
        predict(str(run_folder), [images[0], str(tmp_path / "notes.jpg"), missing], device="cpu")
    assert [path for path, _ in error.value.problems] == [str(tmp_path / "notes.jpg"), missing]
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(run_folder), images[0], str(tmp_path / "notes.jpg"), missing])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing classified, not even the good image
    assert "notes.jpg: not an image" in captured.err and "missing.png: no such file" in captured.err


def test_truncated_image_is_an_error(tmp_path):
    solid((64, 64), RED).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_corrupt_checkpoint_errors_without_traceback(images, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"definitely not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "speedrun.predict", "--checkpoint", str(tmp_path / "checkpoint.pt"), images[0]],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "is not a readable checkpoint" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["empty folder", "missing file", "foreign file"])
def test_checkpoint_path_errors(images, tmp_path, where, capsys):
    path = {"empty folder": tmp_path, "missing file": tmp_path / "nope.pt", "foreign file": tmp_path / "other.pt"}[
        where
    ]
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(path), images[0]])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("speedrun.predict: error:") and str(path) in err


def test_unknown_option_and_bad_top_are_usage_errors(run_folder, images, capsys):
    for argv in (
        ["--checkpoint", str(run_folder), "--topk", "2", images[0]],
        ["--checkpoint", str(run_folder), "--top", "11", images[0]],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --topk" in err and "--top must be between 1 and 10" in err


def test_library_names_import_from_the_package():
    import speedrun
    from speedrun import CustomResNet, load_beton, load_cifar_betons
    from speedrun.predict import predict
    from speedrun.train import train

    assert callable(train) and callable(load_beton) and callable(load_cifar_betons) and callable(predict)
    assert sum(p.numel() for p in CustomResNet().parameters()) == 6_573_130
    assert sorted(speedrun.__all__) == ["CustomResNet", "load_beton", "load_cifar_betons"]
