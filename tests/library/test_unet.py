"""Tests for ddpm_lite.unet: shape contracts, zero-init, time conditioning, trace, bf16."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from ddpm_lite.unet import (
    AttentionBlock,
    ResidualBlock,
    UNet,
    UNetConfig,
    count_parameters,
    format_trace,
    group_norm,
    timestep_embedding,
    trace,
)
from ddpm_lite.book.unet_drawing import draw_unet, unet_layout


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# A config small enough that every test runs in well under a second on 2 CPU cores.
TINY = dict(base_channels=16, channel_mult=(1, 2), num_heads=2)


def randomize_zero_init(model: nn.Module) -> nn.Module:
    """Re-initialise every conv with PyTorch's default init, undoing zero_module, so that
    every block (and the output) depends on its input; the test then probes a 'trained' net."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
    return model


@pytest.mark.parametrize(
    "size, channels, learn_sigma",
    [(8, 1, False), (8, 3, True), (16, 1, True), (16, 3, False), (32, 1, False), (32, 3, True)],
)
def test_output_shape(size, channels, learn_sigma):
    # two levels (one downsample) up to 16x16, three levels for 32x32; attention at 8x8 or 4x4
    channel_mult = (1, 2, 2) if size == 32 else (1, 2)
    config = UNetConfig(image_channels=channels, image_size=size, base_channels=16, num_heads=2,
                        channel_mult=channel_mult, attention_resolutions=(min(size // 2, 8),),
                        learn_sigma=learn_sigma)
    model = randomize_zero_init(UNet(config))
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size), torch.tensor([0, 999]))
    assert out.shape == (2, config.out_channels, size, size)
    assert config.out_channels == channels * (2 if learn_sigma else 1)


def test_non_square_input_and_scalar_t():
    model = UNet(UNetConfig(**TINY))
    assert model(torch.randn(3, 1, 8, 12), 5).shape == (3, 1, 8, 12)
    assert model(torch.randn(3, 1, 8, 8), torch.tensor(5)).shape == (3, 1, 8, 8)


def test_bad_image_size_names_valid_sizes():
    model = UNet(UNetConfig(**TINY, image_size=16, attention_resolutions=()))
    with pytest.raises(ValueError, match=r"image size 9 is not divisible by 2.*such as 8, 10, 12"):
        model(torch.randn(1, 1, 9, 8), 0)
    deep = UNetConfig(base_channels=16, channel_mult=(1, 2, 2), num_heads=2, image_size=16, attention_resolutions=())
    with pytest.raises(ValueError, match=r"image size 10 is not divisible by 4.*2 times.*such as 8, 12, 16"):
        UNet(deep)(torch.randn(1, 1, 10, 16), 0)
    with pytest.raises(ValueError, match=r"image size 10 is not divisible by 4"):
        UNetConfig(image_size=10, channel_mult=(1, 2, 2))


def test_bad_inputs_raise():
    model = UNet(UNetConfig(**TINY))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        model(torch.randn(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must be \(B, 1, H, W\)"):
        model(torch.randn(4, 3, 8, 8), 0)


def test_config_validation():
    with pytest.raises(ValueError, match=r"'additive', 'scale_shift', 'none'.*'film'"):
        UNetConfig(injection="film")
    with pytest.raises(ValueError, match=r"feature-map sizes \(8, 4\)"):
        UNetConfig(attention_resolutions=(2,))
    with pytest.raises(ValueError, match="num_heads"):
        UNetConfig(base_channels=32, num_heads=5)
    with pytest.raises(ValueError, match="image_channels"):
        UNetConfig(image_channels=0)
    with pytest.raises(ValueError, match="dropout"):
        UNetConfig(dropout=1.0)


@pytest.mark.parametrize("channels, groups", [(16, 4), (32, 8), (48, 12), (64, 16), (96, 24), (128, 32), (256, 32), (2, 1)])
def test_group_norm_groups(channels, groups):
    """<= 32 groups of >= 4 channels, so GroupNorm cannot cancel a per-channel time bias."""
    assert group_norm(channels).num_groups == groups


def test_timestep_embedding():
    t = torch.arange(10)
    emb = timestep_embedding(t, 16)
    assert emb.shape == (10, 16) and emb.dtype == torch.float32
    # t = 0: sin(0) = 0 in the first half, cos(0) = 1 in the second half, exactly.
    assert torch.equal(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    assert torch.cdist(emb, emb).add(torch.eye(10)).min() > 0.1  # distinct t -> distinct rows
    odd = timestep_embedding(t, 7)
    assert odd.shape == (10, 7) and torch.equal(odd[:, -1], torch.zeros(10))
    assert torch.allclose(timestep_embedding(t.float(), 16), emb)


def test_fresh_model_outputs_zero():
    """The output conv is zero-initialised, so an untrained eps_theta predicts 0 exactly."""
    model = UNet(UNetConfig(**TINY))
    assert torch.equal(model(torch.randn(2, 1, 8, 8), torch.tensor([3, 7])), torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("injection", ["additive", "scale_shift", "none"])
def test_fresh_blocks_are_identity_modulo_skip(injection):
    x, temb = torch.randn(2, 16, 4, 4), torch.randn(2, 64)
    same = ResidualBlock(16, 16, time_dim=64, injection=injection)
    assert torch.equal(same(x, temb), x)
    wider = ResidualBlock(16, 32, time_dim=64, injection=injection)
    assert torch.equal(wider(x, temb), wider.skip(x))
    assert torch.equal(AttentionBlock(16, num_heads=4)(x), x)


@pytest.mark.parametrize("injection", ["additive", "scale_shift", "none"])
def test_network_uses_t(injection):
    model = randomize_zero_init(UNet(UNetConfig(**TINY, injection=injection))).eval()
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)  # the same image twice
    with torch.no_grad():
        out = model(x, torch.tensor([10, 500]))
    if injection == "none":
        assert model.time_embed is None
        assert torch.equal(out[0], out[1])
    else:
        assert (out[0] - out[1]).abs().max() > 1e-3


def test_trace_covers_blocks_and_parameters():
    model = UNet(UNetConfig(**TINY, num_res_blocks=2))
    x = torch.randn(2, 1, 8, 8)
    rows = trace(model, x, torch.tensor([1, 2]))
    assert [r["name"] for r in rows] == ["input_conv", "time_embed", "down.0", "down.1", "mid", "up.0", "up.1", "out"]
    assert [r["type"] for r in rows][2:6] == ["DownBlock", "DownBlock", "MidBlock", "UpBlock"]
    assert rows[0]["input_shape"] == x.shape and rows[-1]["output_shape"] == x.shape
    assert rows[2]["output_shape"] == (2, 16, 4, 4) and rows[4]["output_shape"] == (2, 32, 4, 4)
    assert sum(r["params"] for r in rows) == count_parameters(model) == sum(p.numel() for p in model.parameters())
    table = format_trace(rows)
    assert "UpBlock" in table and f"{count_parameters(model):,}" in table.splitlines()[-1]
    assert not model._forward_hooks and not model.up[0]._forward_hooks  # hooks removed


def test_skip_bookkeeping():
    """The up path consumes exactly the skips the down path produced, num_res_blocks + 1 per level."""
    model = UNet(UNetConfig(**TINY, num_res_blocks=2))
    produced = [16] + [c for block in model.down for c in block.skip_channels]
    assert produced == [16, 16, 16, 16, 32, 32]  # input conv; down.0: 2 res + downsample; down.1: 2 res
    consumed = [c for block in model.up for c in block.skip_channels]
    assert consumed == produced[::-1]


def test_default_config_size():
    assert 300_000 <= count_parameters(UNet()) <= 1_500_000


def test_bf16_autocast_close_to_fp32():
    model = randomize_zero_init(UNet(UNetConfig(**TINY))).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 100, 999])
    with torch.no_grad():
        reference = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
    # bf16 keeps 8 significant bits (relative rounding ~2**-9 = 0.2% per op); through ~20
    # conv/matmul layers with fp32 accumulation the errors add up to about 1% in relative
    # L2 norm, so 5% catches real bugs (a wrong dtype path, a dropped term) without flaking.
    assert torch.isfinite(low).all()
    relative_error = (low.float() - reference).norm() / reference.norm()
    assert relative_error < 0.05, relative_error


def test_float64_model_matches_float32():
    model = randomize_zero_init(UNet(UNetConfig(**TINY))).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 100, 999])
    with torch.no_grad():
        reference = model(x, t)
        double = model.double()(x.double(), t)  # the time embedding follows the weights' dtype
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), reference, rtol=1e-4, atol=1e-5)  # float32 rounding only


@pytest.mark.parametrize("injection", ["additive", "scale_shift"])
def test_gradients_reach_every_parameter(injection):
    model = randomize_zero_init(UNet(UNetConfig(**TINY, injection=injection, learn_sigma=True)))
    out = model(torch.randn(2, 1, 8, 8), torch.tensor([5, 50]))
    (out * torch.randn_like(out)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_import_pulls_no_plotting_libraries():
    code = "import sys, ddpm_lite.unet; print(any(m.startswith('matplotlib') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("num_res_blocks, channel_mult", [(1, (1, 2)), (2, (1, 2, 2))])
def test_unet_layout_matches_the_modules(num_res_blocks, channel_mult):
    """The diagram's nodes are the blocks in execution order; its skips pair producer and consumer channels."""
    config = UNetConfig(base_channels=16, num_heads=2, image_size=16, channel_mult=channel_mult,
                        num_res_blocks=num_res_blocks, attention_resolutions=(8,))
    model = UNet(config)
    layout = unet_layout(model)
    nodes, skips = layout["nodes"], layout["skips"]
    levels = len(channel_mult)
    # input conv, (res x n + downsample) per level but the last, mid, (res x (n + 1) + upsample) per level but the top, out
    assert len(nodes) == 1 + levels * num_res_blocks + (levels - 1) + 1 + levels * (num_res_blocks + 1) + (levels - 1) + 1
    assert [n["kind"] for n in nodes][:2] == ["conv_in", "res"] and nodes[-1]["kind"] == "conv_out"
    assert len(skips) == len([c for block in model.down for c in block.skip_channels]) + 1
    for (p0, c0), (p1, c1) in zip(skips, skips[1:]):  # last in, first out: the arcs nest
        assert p1 < p0 < c0 < c1
    for producer, consumer in skips:
        assert nodes[consumer]["skip_ch"] == nodes[producer]["out_ch"]
        assert nodes[consumer]["size"] == nodes[producer]["size"]  # concatenated at the same resolution
        assert nodes[consumer]["in_ch"] == nodes[consumer - 1]["out_ch"] + nodes[consumer]["skip_ch"]
    # the sizes agree with a real forward pass: the trace's outputs of every down block and of the mid block
    rows = {r["name"]: r for r in trace(model, torch.randn(1, 1, 16, 16), 0)}
    by_name = {n["name"]: n for n in nodes}
    assert by_name["mid"]["size"] == rows["mid"]["output_shape"][-1]
    assert by_name["down.0.downsample"]["size"] == rows["down.0"]["output_shape"][-1]
    assert [n["attention"] for n in nodes if n["kind"] == "res" and n["size"] == 8] == \
        [True] * sum(1 for n in nodes if n["kind"] == "res" and n["size"] == 8)


def test_draw_unet_draws_every_block_and_skip():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = UNet(UNetConfig(**TINY))
    layout = unet_layout(model)
    ax = draw_unet(model)
    n = len(layout["nodes"])
    assert len(ax.patches) == n + (n - 1) + len(layout["skips"])  # boxes, main-path arrows, skip arcs
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "Mid" in texts and "32+16" in texts  # an up block's h + skip channels
    plt.close(ax.figure)
