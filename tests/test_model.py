import pytest
import torch
from torch import nn

from speedrun.nets.model import CustomResNet, conv_bn_relu
from speedrun.summary import format_summary, forward_flops, layer_table, main


@pytest.fixture(scope="module")
def narrow_rows():
    return {row["name"]: row for row in layer_table(CustomResNet(width=4))}


def test_parameter_count_at_full_width():
    model = CustomResNet()
    assert sum(p.numel() for p in model.parameters()) == 6_573_130
    assert sum(row["params"] for row in layer_table(model)) == 6_573_130


def test_forward_flops_of_the_seed_net():
    assert forward_flops(CustomResNet()) == 758_523_904  # 2 x the multiply-adds of the 8 convs and the FC


def test_structure():
    model = CustomResNet(width=8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(conv.bias is None for conv in convs)
    assert [conv.out_channels for conv in convs] == [8, 16, 16, 16, 32, 64, 64, 64]
    assert model.fc.in_features == 64 and model.fc.bias is not None
    block = conv_bn_relu(3, 5, pool=True)
    assert [type(m) for m in block] == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]


def test_forward_shapes_and_channels_last():
    torch.manual_seed(0)
    model = CustomResNet(num_classes=7, width=4).eval()
    x = torch.randn(5, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (5, 7)
    model_cl = model.to(memory_format=torch.channels_last)
    logits_cl = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-5)


def test_train_mode_backward():
    model = CustomResNet(width=4)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_receptive_fields_by_hand(narrow_rows):
    # (r, j, start) from r += (k-1)*j; j *= s; start += ((k-1)/2 - p)*j with start_in = 0.5
    expected = {
        "prep.0": (3, 1, 0.5),  # 3x3 conv, pad 1
        "prep.2": (3, 1, 0.5),  # ReLU keeps the field
        "layer1.0.0": (5, 1, 0.5),
        "layer1.0.1": (6, 2, 1.0),  # 2x2 pool: r += 1, j doubles, centre of pixels 0-1
        "layer1.1.block.0.0": (10, 2, 1.0),
        "layer1.1.block.1.0": (14, 2, 1.0),
        "layer1.1": (14, 2, 1.0),  # residual sum: the deeper branch's field
        "layer2.0": (18, 2, 1.0),
        "layer2.1": (20, 4, 2.0),
        "layer3.0.1": (32, 8, 4.0),
        "layer3.1": (64, 8, 4.0),
        "pool": (88, 32, 16.0),  # 4x4 pool: r = 64 + 3*8
        "fc": (88, 32, 16.0),
    }
    for name, field in expected.items():
        row = narrow_rows[name]
        assert (row["r"], row["j"], row["start"]) == field, name


def test_table_kinds_and_shapes(narrow_rows):
    rows = list(narrow_rows.values())
    assert rows[0]["name"] == "prep.0" and rows[-1]["name"] == "fc"
    kinds = {row["kind"] for row in rows}
    assert kinds == {"conv", "pool", "bn", "relu", "add", "flatten", "fc"}
    assert narrow_rows["layer1.1"]["kind"] == "add"
    assert narrow_rows["layer1.0.1"]["output_shape"] == (8, 16, 16)
    assert narrow_rows["pool"]["output_shape"] == (32, 1, 1)
    assert narrow_rows["fc"]["output_shape"] == (10,)


def test_layer_table_leaves_model_untouched():
    model = CustomResNet(width=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_table(model)
    assert model.training
    assert not model._forward_hooks and not model.prep[0]._forward_hooks
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_format_summary():
    text = format_summary(layer_table(CustomResNet()))
    assert text.splitlines()[-1] == "Total params: 6,573,130"
    assert "Trainable params: 6,573,130" in text
    assert "88x88" in text and "exceeds the 32x32" in text


def test_main_prints_summary(capsys):
    main(["--model.width", "4"])
    out = capsys.readouterr().out
    total = sum(p.numel() for p in CustomResNet(width=4).parameters())
    assert f"Total params: {total:,}" in out
