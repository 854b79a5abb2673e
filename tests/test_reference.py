"""The airbench adapter: the export it reads, the install hint, and run_reference's plumbing."""

import json
import os
import sys
import types
from collections import namedtuple

import pytest
import torch

from speedrun import reference
from speedrun.leaderboard import make_entry
from speedrun.reference import CIFAR10_CLASSES, export_for_airbench, run_reference
from speedrun.system.device import device_name

Data = namedtuple("Data", "train_images train_labels test_images test_labels")


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    return Data(
        torch.randint(0, 256, (12, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (12,), generator=generator),
        torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (6,), generator=generator),
    )


def test_export_round_trips(data, tmp_path):
    folder = export_for_airbench(data, str(tmp_path / "cifar10"))
    assert sorted(os.listdir(folder)) == ["test.pt", "train.pt"]
    for filename, images, labels in [
        ("train.pt", data.train_images, data.train_labels),
        ("test.pt", data.test_images, data.test_labels),
    ]:
        saved = torch.load(os.path.join(folder, filename))
        assert saved["images"].dtype == torch.uint8 and saved["images"].shape == images.shape
        assert torch.equal(saved["images"], images)
        assert saved["labels"].dtype == torch.int64 and torch.equal(saved["labels"], labels)
        assert saved["classes"] == CIFAR10_CLASSES


def test_export_of_real_betons_keeps_pixels_and_labels(tiny_betons, tmp_path):
    from speedrun.data.betons import load_cifar_betons

    data = load_cifar_betons(*tiny_betons, device="cpu")
    folder = export_for_airbench(data, str(tmp_path))
    saved = torch.load(os.path.join(folder, "test.pt"))
    assert torch.equal(saved["images"], data.test_images) and torch.equal(saved["labels"], data.test_labels)
    assert len(saved["labels"]) == 128 and saved["classes"] == CIFAR10_CLASSES


def test_export_takes_numpy_and_narrower_labels(data, tmp_path):
    numpy_data = Data(
        data.train_images.numpy(),
        data.train_labels.int().numpy(),
        data.test_images.numpy(),
        data.test_labels.int().numpy(),
    )
    saved = torch.load(os.path.join(export_for_airbench(numpy_data, str(tmp_path)), "train.pt"))
    assert torch.equal(saved["images"], data.train_images) and saved["labels"].dtype == torch.int64


def test_export_rejects_non_uint8_nhwc(data, tmp_path):
    with pytest.raises(ValueError, match="uint8 NHWC"):
        export_for_airbench(data._replace(train_images=data.train_images.float()), str(tmp_path))
    with pytest.raises(ValueError, match="uint8 NHWC"):
        export_for_airbench(data._replace(test_images=data.test_images.permute(0, 3, 1, 2)), str(tmp_path))


def test_missing_airbench_gives_install_hint(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "airbench", None)  # makes `import airbench` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'speedrun\[reference\]'"):
        run_reference("train94", data, str(tmp_path), seed=0, device="cuda")


def test_unknown_reference_name(data, tmp_path):
    with pytest.raises(ValueError, match="train94"):
        run_reference("train95", data, str(tmp_path))


def test_a_device_airbench_cannot_train_on_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "airbench", types.ModuleType("airbench"))
    monkeypatch.setitem(sys.modules, "airbench.lib_airbench94", types.ModuleType("airbench.lib_airbench94"))
    with pytest.raises(RuntimeError, match="CUDA or, as a proxy, on a CPU"):
        run_reference("train94", data, str(tmp_path), device="meta")
    if not torch.cuda.is_available():  # the campaign's probe asks for CUDA: it says why in one line
        with pytest.raises(RuntimeError, match="airbench cannot train on 'cuda': torch sees no CUDA device"):
            reference.check_available("cuda")


def test_on_cpu_makes_airbenchs_cuda_calls_cpu_ones_for_the_block_only(monkeypatch):
    library = types.ModuleType("fake_airbench_utils")
    made = []

    class CifarLoader:
        def __init__(self, path, train=True, gpu=0):
            made.append(gpu)

    CifarLoader.__module__ = library.__name__
    library.CifarLoader = CifarLoader
    monkeypatch.setitem(sys.modules, library.__name__, library)
    airbench = types.SimpleNamespace(CifarLoader=CifarLoader)
    tensor, module = torch.zeros(2), torch.nn.Linear(1, 1)
    event_class, synchronize = torch.cuda.Event, torch.cuda.synchronize
    module_methods = (torch.nn.Module.cuda, torch.nn.Module.half)
    with reference.on_cpu(airbench):
        assert tensor.cuda() is tensor and module.cuda() is module and module.half().cuda() is module
        assert tensor.half().dtype == module.weight.dtype == torch.float32  # float16 is float32 on a CPU
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        end.record()
        assert start.elapsed_time(end) >= 0
        library.CifarLoader("cifar10", train=False)  # the training call's own test loader: no device given
        library.CifarLoader("cifar10", gpu="cpu")
    assert made == ["cpu", "cpu"]
    assert "cuda" not in vars(torch.Tensor) and "half" not in vars(torch.Tensor)  # inherited again
    assert (torch.nn.Module.cuda, torch.nn.Module.half) == module_methods
    assert tensor.half().dtype == torch.float16 and module.half().weight.dtype == torch.float16
    assert library.CifarLoader is CifarLoader
    assert (torch.cuda.Event, torch.cuda.synchronize) == (event_class, synchronize)


def test_airbench_gets_a_normalize_where_torchvision_does_not_import(monkeypatch):
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    seen = {}

    def importing(name):
        if name == "torchvision":
            raise ImportError("no torchvision")
        seen["Normalize"] = sys.modules["torchvision"].transforms.Normalize  # as airbench's import finds it
        return types.ModuleType(name)

    monkeypatch.setattr(reference.importlib, "import_module", importing)  # torchvision fails to import
    reference.import_airbench()
    assert "torchvision" not in sys.modules and "torchvision.transforms" not in sys.modules  # for the import only
    images = torch.rand(3, 3, 4, 4).half()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normalized = seen["Normalize"](mean, std)(images)
    expected = (images - torch.tensor(mean).half().view(-1, 1, 1)) / torch.tensor(std).half().view(-1, 1, 1)
    assert normalized.dtype == torch.float16 and torch.equal(normalized, expected)


def test_airbench_widths_scale_as_our_width():
    widths = {"block1": 64, "block2": 256, "block3": 256}
    assert reference.scaled_widths(widths, 16) == {"block1": 16, "block2": 64, "block3": 64}
    assert reference.scaled_widths(widths, 64) == widths and reference.scaled_widths(widths, 1)["block1"] == 1


def test_each_seed_trains_on_the_subset_our_run_of_it_draws(data):
    from speedrun.data.loader import train_subset

    assert reference.seed_data(data, 0, 3) is data
    for seed in (0, 1):
        chosen = reference.seed_data(data, 5, seed)
        images, labels = train_subset(data.train_images, data.train_labels, 5, seed)
        assert torch.equal(chosen.train_images, images) and torch.equal(chosen.train_labels, labels)
        assert chosen.test_images is data.test_images
    assert not torch.equal(reference.seed_data(data, 5, 0).train_images, reference.seed_data(data, 5, 1).train_images)


def test_airbench_import_leaves_cudnn_settings_alone(monkeypatch):
    airbench = types.ModuleType("airbench")
    monkeypatch.setitem(sys.modules, "airbench", None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)

    def importing(name):  # like airbench 0.1.8, whose modules switch autotuning on at import
        torch.backends.cudnn.benchmark = True
        return airbench

    monkeypatch.setattr(reference.importlib, "import_module", importing)
    assert reference.import_airbench() is airbench
    assert torch.backends.cudnn.benchmark is False


# Seconds the fake airbench's training call spends in each region, on a fake clock.
SETUP, NET, WHITENING, LOOP = 1.0, 2.0, 3.0, 4.0
STEPS = 7  # the fake's steps in a whole run


def fake_airbench(monkeypatch, calls, make_net_parameter=True, built=None):
    """airbench stand-in that reads files like the real one (relative 'cifar10' test path included) and,
    like airbench 0.1.8's training call: test loader, net (`make_net`), whitening (the loader's first
    normalize), epochs (the second normalize, then the steps); the warm-up mode returns after one step.
    Each region advances a fake clock by its seconds, which is all `reference` reads."""
    airbench = types.ModuleType("airbench")
    library = types.ModuleType("airbench.lib_airbench94")
    clock, built = [100.0], [] if built is None else built
    monkeypatch.setattr(reference, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    class CifarLoader:
        def __init__(self, path, train=True, batch_size=500, aug=None, altflip=False, gpu=0):
            saved = torch.load(os.path.join(path, "train.pt" if train else "test.pt"))
            self.images, self.labels, self.train = saved["images"], saved["labels"], train
            self.normalize = lambda images: images.float() / 255

    def make_net94(widths=None):
        clock[0] += NET
        built.append(widths)
        return torch.nn.Identity()

    def train(train_loader, run, verbose, make_net):
        test_loader = CifarLoader("cifar10", train=False)  # as airbench does, relative to the cwd
        assert torch.backends.cudnn.benchmark
        clock[0] += SETUP
        net = make_net()
        train_loader.normalize(train_loader.images[:5])  # the whitening layer's initialisation
        clock[0] += WHITENING
        train_loader.normalize(train_loader.images)  # the first epoch starts
        steps = 1 if run == "warmup" and verbose else STEPS
        clock[0] += LOOP
        calls.append(
            (run, verbose, torch.randint(0, 1000, ()).item(), len(train_loader.images), len(test_loader.images), steps)
        )
        return None if steps < STEPS else net

    CifarLoader.__module__ = __name__  # where on_cpu finds the loader the training call builds
    if make_net_parameter:

        def train94(train_loader=None, run=0, verbose=True, make_net=make_net94):
            return train(train_loader, run, verbose, make_net)
    else:

        def train94(train_loader=None, run=0, verbose=True):
            return train(train_loader, run, verbose, make_net94)

    airbench.CifarLoader = CifarLoader
    airbench.evaluate = lambda net, loader, tta_level=0: 0.95 if tta_level else 0.94
    library.train94 = train94
    library.hyp = {"opt": {"batch_size": 4, "train_epochs": 9.9}, "aug": {"flip": True}, "net": {"tta_level": 2}}
    monkeypatch.setitem(sys.modules, "airbench", airbench)
    monkeypatch.setitem(sys.modules, "airbench.lib_airbench94", library)


def test_run_reference_plumbing(data, tmp_path, monkeypatch):
    calls = []
    fake_airbench(monkeypatch, calls)
    cwd = os.getcwd()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    summaries = [run_reference("train94", data, str(tmp_path), seed=seed, device="cpu") for seed in (3, 3)]
    assert os.getcwd() == cwd and torch.backends.cudnn.benchmark is False
    assert [call[:2] for call in calls] == [(0, False), (0, False)] * 2  # warm-up, then the timed run
    assert all(call[3:5] == (12, 6) for call in calls)  # our export, train and test, was what it read
    assert calls[1][2] == calls[3][2]  # seeded: same seed, same random stream
    result = summaries[0]
    assert result["final_test_acc"] == 0.95 and result["test_acc_without_tta"] == 0.94
    assert result["seed"] == 3 and result["device"] == device_name("cpu") and result["train_seconds"] >= 0
    assert result["history"] == [{"epoch": 9.9, "train_seconds": result["train_seconds"], "test_acc": 0.95}]
    made = make_entry(summaries, name="airbench train94", kind="reference", target=0.94, session="s")
    assert made["time_to_target"] == [result["train_seconds"], summaries[1]["train_seconds"]]
    calls.clear()  # a later seed of a sweep: no second warm-up
    assert run_reference("train94", data, str(tmp_path), seed=3, device="cpu", warmup=False)["compile_seconds"] == 0
    assert [call[:2] for call in calls] == [(0, False)]


def test_a_narrower_reference_builds_its_net_at_scaled_widths_warm_up_included(data, tmp_path, monkeypatch):
    calls, built = [], []
    fake_airbench(monkeypatch, calls, built=built)
    sys.modules["airbench.lib_airbench94"].hyp["net"]["widths"] = {"block1": 64, "block2": 256, "block3": 256}
    result = run_reference("train94", data, str(tmp_path), seed=0, device="cpu", width=16)
    assert built == [{"block1": 16, "block2": 64, "block3": 64}] * 2  # the warm-up's net, then the timed one's
    assert result["config"]["reference"]["widths"] == built[0] and result["config"]["reference"]["width"] == 16
    assert result["prepare_seconds"] == NET + WHITENING  # the scaled build is still the marked one
    built.clear()
    run_reference("train94", data, str(tmp_path), seed=0, device="cpu", warmup=False)
    assert built == [None]  # full width: airbench's own make_net, as it is


def test_warm_up_is_one_whole_untimed_training_call(data, tmp_path, monkeypatch):
    calls = []
    fake_airbench(monkeypatch, calls)
    result = run_reference("train94", data, str(tmp_path), seed=0, device="cpu")
    warm_up, timed_run = calls
    assert warm_up[:2] == (0, False) and warm_up[5] == STEPS == timed_run[5]  # as many steps as the timed run
    assert result["compile_seconds"] >= 0  # the warm-up's own seconds, outside every region below
    assert (result["prepare_seconds"], result["train_seconds"]) == (NET + WHITENING, LOOP)


def test_reference_clock_regions(data, tmp_path, monkeypatch):
    calls = []
    fake_airbench(monkeypatch, calls)
    result = run_reference("train94", data, str(tmp_path), seed=0, device="cpu", warmup=False)
    assert result["clock_split"] is True
    assert result["setup_seconds"] == SETUP  # test loader and schedule: charged to neither
    assert result["prepare_seconds"] == NET + WHITENING  # the fresh net and the whitening: charged
    assert result["train_seconds"] == LOOP  # the epochs: the loop
    assert result["total_seconds"] == NET + WHITENING + LOOP
    made = make_entry(
        [result], name="airbench train94", kind="reference", target=0.94, session="s", clock=reference.CLOCK
    )
    assert made["prepare_seconds"] == [NET + WHITENING] and made["total_seconds"] == [NET + WHITENING + LOOP]
    assert made["train_seconds"] == [LOOP] and made["clock"].startswith("airbench:")


def test_reference_clock_unsplit_counts_the_whole_call(data, tmp_path, monkeypatch):
    calls = []
    fake_airbench(monkeypatch, calls, make_net_parameter=False)  # no make_net to mark the net build with
    result = run_reference("train94", data, str(tmp_path), seed=0, device="cpu", warmup=False)
    whole = SETUP + NET + WHITENING + LOOP
    assert result["clock_split"] is False and result["prepare_seconds"] is None
    assert result["train_seconds"] == result["total_seconds"] == whole


def test_marked_call_puts_the_loaders_normalize_back(data, tmp_path, monkeypatch):
    calls = []
    fake_airbench(monkeypatch, calls)
    airbench = sys.modules["airbench"]
    export_for_airbench(data, str(tmp_path / "cifar10"))
    loader = airbench.CifarLoader(str(tmp_path / "cifar10"))
    normalize = loader.normalize
    with reference.working_directory(str(tmp_path)), reference.cudnn_benchmark(True):
        _, regions = reference.marked_call(sys.modules["airbench.lib_airbench94"].train94, loader, "cpu")
    assert loader.normalize is normalize
    assert regions == {
        "setup": SETUP,
        "prepare": NET + WHITENING,
        "training": LOOP,
        "call": SETUP + NET + WHITENING + LOOP,
    }


def real_airbench():
    """airbench itself (through import_airbench, as a run imports it), or the test is skipped."""
    try:
        return reference.import_airbench()
    except ImportError:
        pytest.skip("airbench not installed (optional: pip install 'speedrun[reference]')")


def test_airbench_loader_reads_our_export_identically(data, tmp_path):
    airbench = real_airbench()
    folder = export_for_airbench(data, str(tmp_path))
    for train, images, labels in [
        (True, data.train_images, data.train_labels),
        (False, data.test_images, data.test_labels),
    ]:
        loader = airbench.CifarLoader(folder, train=train, batch_size=4, gpu="cpu")
        expected = (images.half() / 255).permute(0, 3, 1, 2)  # airbench's own uint8 -> NCHW half
        assert torch.equal(loader.images, expected)
        assert torch.equal(loader.labels, labels) and loader.classes == CIFAR10_CLASSES


def test_airbench_trains_on_the_cpu_at_a_scaled_width_and_leaves_torch_as_it_was(tmp_path):
    """airbench's own train94, on 1,024 random images (one batch an epoch) at width 4, on the CPU."""
    real_airbench()
    generator = torch.Generator().manual_seed(0)
    data = Data(
        torch.randint(0, 256, (1024, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (1024,), generator=generator),
        torch.randint(0, 256, (50, 32, 32, 3), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (50,), generator=generator),
    )
    cuda_calls = (torch.nn.Module.cuda, torch.cuda.synchronize, torch.cuda.Event)
    summary = run_reference("train94", data, str(tmp_path), seed=0, device="cpu", warmup=False, width=4)
    assert 0 <= summary["final_test_acc"] <= 1 and 0 <= summary["test_acc_without_tta"] <= 1
    assert summary["clock_split"] and summary["prepare_seconds"] > 0 and summary["train_seconds"] > 0
    assert summary["config"]["reference"]["widths"] == {"block1": 4, "block2": 16, "block3": 16}
    assert (torch.nn.Module.cuda, torch.cuda.synchronize, torch.cuda.Event) == cuda_calls
    assert "cuda" not in vars(torch.Tensor) and torch.zeros(1).half().dtype == torch.float16


def test_reference_command_writes_each_seeds_summary(data, tmp_path, monkeypatch, capsys):
    calls = []
    fake_airbench(monkeypatch, calls)
    monkeypatch.setattr("speedrun.data.betons.load_cifar_betons", lambda train, test, device: data)
    reference.main(
        ["--name", "train94", "--seeds", "0-1", "--training.device", "cpu", "--logging.folder", str(tmp_path / "runs")]
    )
    for seed in (0, 1):
        saved = json.loads((tmp_path / "runs" / f"seed{seed}" / "summary.json").read_text())
        assert saved["seed"] == seed and saved["final_test_acc"] == 0.95 and saved["test_acc_without_tta"] == 0.94
    assert [call[:2] for call in calls] == [(0, False)] * 3  # one warm-up, then the two seeds
    assert "train94 seed 1: test acc 0.9500 (0.9400 without tta)" in capsys.readouterr().out


def test_reference_command_says_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit):
        reference.main(["--name", "train94", "--data.train_dataset", str(tmp_path / "missing.beton")])
    assert "speedrun.reference: error: beton" in capsys.readouterr().err
