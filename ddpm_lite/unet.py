"""The noise-prediction network eps_theta(x_t, t): a small time-conditioned U-Net.

Architecture (Ho et al. 2020, Appendix B; a U-Net after Ronneberger et al. 2015)::

    x (B, C, H, W) -> input conv -> DownBlock x L -> MidBlock -> UpBlock x L -> out -> (B, C', H, W)
                          |_________ skip tensors (concatenated on the channel axis) _____^

* Every level is ``num_res_blocks`` x (ResidualBlock [+ AttentionBlock]); all but the
  last level of the down path end in a stride-2 Downsample, the up path mirrors it.
* The time step t is embedded sinusoidally (Vaswani et al. 2017), passed through an MLP,
  and injected into every ResidualBlock: added as a per-channel bias (original DDPM), or
  as a FiLM scale and shift after GroupNorm (Nichol & Dhariwal 2021, "scale_shift").
* Skip bookkeeping follows improved-diffusion: the input conv output, every residual
  block output and every Downsample output of the down path is a skip tensor; the up
  path pops them back in reverse order, ``num_res_blocks + 1`` per level.
* The last conv of every block is zero-initialised, so at init each block is the identity
  (modulo its skip conv) and the whole network outputs exactly zero.
"""

import math
from dataclasses import dataclass
from typing import Literal, Optional, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

Injection = Literal["additive", "scale_shift", "none"]
INJECTIONS = get_args(Injection)  # ("additive", "scale_shift", "none")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`. Defaults suit 8x8 digits on a laptop CPU."""

    image_channels: int = 1  # C of the images (1 = grey, 3 = RGB)
    image_size: int = 8  # H = W of the training images; attention_resolutions refer to it
    base_channels: int = 32  # channels of the first level; also the sinusoid size
    channel_mult: tuple[int, ...] = (1, 2)  # level i has base_channels * channel_mult[i] channels
    num_res_blocks: int = 1  # ResidualBlocks per level on the down path (+1 on the up path)
    attention_resolutions: tuple[int, ...] = (4,)  # feature-map sizes that get an AttentionBlock
    num_heads: int = 4  # heads of every AttentionBlock
    dropout: float = 0.0  # dropout inside ResidualBlocks (Ho et al. use 0.1 on CIFAR-10)
    injection: Injection = "scale_shift"  # how t enters a ResidualBlock; "none" = ablation
    learn_sigma: bool = False  # also output v for Sigma_theta (Nichol & Dhariwal 2021)
    num_classes: Optional[int] = None  # class-conditional with this many classes (plus a null class); None: not

    def __post_init__(self):
        for name in ("channel_mult", "attention_resolutions"):  # lists from JSON -> tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {self.injection!r}")
        if self.num_classes is not None:
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
                raise ValueError(f"num_classes must be a positive int (or None: unconditional), got {self.num_classes!r}")
            if self.injection == "none":
                raise ValueError("num_classes needs the time-step path (the class joins the time embedding): "
                                 "use injection 'scale_shift' or 'additive'")
        for name in ("image_channels", "image_size", "base_channels", "num_res_blocks", "num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be non-empty positive ints, got {self.channel_mult}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_image_size(self.image_size, len(self.channel_mult))
        if not set(self.attention_resolutions) <= set(self.resolutions):
            raise ValueError(f"attention_resolutions {self.attention_resolutions} must be among "
                             f"the feature-map sizes {self.resolutions}")
        # Attention runs at these levels and always in the MidBlock (the deepest level).
        attn_levels = [i for i, r in enumerate(self.resolutions) if r in self.attention_resolutions]
        for i in set(attn_levels) | {len(self.channel_mult) - 1}:
            channels = self.base_channels * self.channel_mult[i]
            if channels % self.num_heads:
                raise ValueError(f"{channels} channels (level {i}) not divisible by num_heads={self.num_heads}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size at each level, e.g. (8, 4) for image_size 8 and two levels."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mult)))

    @property
    def time_dim(self) -> int:
        """Width of the time embedding fed to every ResidualBlock (4 x base_channels)."""
        return 4 * self.base_channels

    @property
    def out_channels(self) -> int:
        """C (predict eps) or 2C (eps, then the variance interpolation v) with learn_sigma."""
        return self.image_channels * (2 if self.learn_sigma else 1)


def check_image_size(size: int, num_levels: int) -> None:
    """Raise ValueError unless ``size`` survives the ``num_levels - 1`` halvings."""
    factor = 2 ** (num_levels - 1)
    if size % factor:
        low = max(factor, size // factor * factor)
        examples = ", ".join(str(low + k * factor) for k in range(3))
        raise ValueError(f"image size {size} is not divisible by {factor} (the U-Net downsamples "
                         f"{num_levels - 1} times); use a multiple of {factor} such as {examples}")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of time steps (Vaswani et al. 2017; Ho et al. 2020, Appendix B).

    t: (B,) int or float time-step indices 0..T-1 (index 0 is the paper's t = 1).
    Returns (B, dim) float32: ``[sin(t * f_0..f_{k-1}), cos(t * f_0..f_{k-1})]`` with
    k = dim // 2 and frequencies f_i = max_period ** (-i / k) — sines first, then cosines;
    an odd ``dim`` gets one zero column at the end.
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (k,)
    args = t.to(torch.float32)[:, None] * freqs[None, :]  # (B, k)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, 2k)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups that divide ``channels``, at most 32 and with at least
    4 channels per group: 128 -> 32 as in Ho et al., 64 -> 16, 48 -> 12, 16 -> 4.

    One channel per group would be instance norm, which subtracts a per-channel bias right
    back out, i.e. would silently erase the "additive" time injection."""
    groups = next(g for g in range(max(1, min(32, channels // 4)), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` and return it (improved-diffusion's zero_module)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def count_parameters(model: nn.Module) -> int:
    """Number of scalars in all parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


class TimeEmbedding(nn.Module):
    """t: (B,) -> sinusoid (B, channels) -> Linear -> SiLU -> Linear -> (B, time_dim)."""

    def __init__(self, channels: int, time_dim: int):
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.channels)  # float32
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # a model cast with .double() gets float64


class ResidualBlock(nn.Module):
    """x: (B, in_ch, H, W), temb: (B, time_dim) -> (B, out_ch, H, W).

    GroupNorm -> SiLU -> conv3x3 -> [inject t] -> GroupNorm -> SiLU -> dropout -> conv3x3,
    plus a skip (identity, or a 1x1 conv when in_ch != out_ch). ``injection``:
    "additive" adds Linear(SiLU(temb)) as a per-channel bias after the first conv (Ho et al.);
    "scale_shift" applies norm2(h) * (1 + scale) + shift (FiLM, Nichol & Dhariwal 2021);
    "none" ignores t. The last conv is zero-initialised, so the block starts as its skip.
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float = 0.0,
                 injection: Injection = "scale_shift"):
        super().__init__()
        self.injection = injection
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if injection != "none":
            per_channel = 2 if injection == "scale_shift" else 1  # (scale, shift) or a bias
            self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, per_channel * out_ch))
        self.norm2, self.dropout = group_norm(out_ch), nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    @classmethod
    def from_config(cls, in_ch: int, out_ch: int, config: UNetConfig) -> "ResidualBlock":
        return cls(in_ch, out_ch, config.time_dim, config.dropout, config.injection)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        if self.injection == "additive":
            h = self.norm2(h + rearrange(self.time_proj(temb), "b c -> b c 1 1"))
        elif self.injection == "scale_shift":
            scale, shift = rearrange(self.time_proj(temb), "b (two c) -> two b c 1 1", two=2)
            h = self.norm2(h) * (1 + scale) + shift  # scale, shift: (B, out_ch, 1, 1)
        else:
            h = self.norm2(h)
        h = self.conv2(self.dropout(F.silu(h)))  # (B, out_ch, H, W)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """x: (B, C, H, W) -> (B, C, H, W): multi-head self-attention over the H*W positions.

    GroupNorm -> 1x1 conv to q, k, v -> softmax(q k^T / sqrt(d)) v per head -> 1x1 conv
    (zero-initialised, so the block starts as the identity) -> + x.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        q, k, v = rearrange(qkv, "b (three h d) x y -> three b h (x y) d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d) with d = C / heads
        out = rearrange(out, "b h (x y) d -> b (h d) x y", x=height, y=width)  # (B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """x: (B, C, H, W) -> (B, C, H/2, W/2) with a stride-2 conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """x: (B, C, H, W) -> (B, C, 2H, 2W): nearest-neighbour x2, then conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """One level of the down path: h (B, in_ch, H, W) -> (B, out_ch, H', W') and skips.

    ``num_res_blocks`` x (ResidualBlock [+ AttentionBlock]); the first residual block
    changes in_ch -> out_ch. Then a Downsample (H' = H/2) unless this is the last level.
    Returns the output and its skip tensors: every residual step's output, plus the
    Downsample output — ``self.skip_channels`` lists their channel counts (all out_ch).
    """

    def __init__(self, in_ch: int, out_ch: int, config: UNetConfig, use_attention: bool, downsample: bool):
        super().__init__()
        n = config.num_res_blocks
        self.res = nn.ModuleList(ResidualBlock.from_config(in_ch if i == 0 else out_ch, out_ch, config)
                                 for i in range(n))
        self.attn = nn.ModuleList(AttentionBlock(out_ch, config.num_heads) if use_attention
                                  else nn.Identity() for _ in range(n))
        self.downsample = Downsample(out_ch) if downsample else None
        self.out_channels = out_ch
        self.skip_channels = [out_ch] * (n + int(downsample))

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None):
        skips = []
        for res, attn in zip(self.res, self.attn):
            h = attn(res(h, temb))  # (B, out_ch, H, W)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)  # (B, out_ch, H/2, W/2)
            skips.append(h)
        return h, skips


class MidBlock(nn.Module):
    """h: (B, C, H, W) -> (B, C, H, W): ResidualBlock, AttentionBlock, ResidualBlock."""

    def __init__(self, channels: int, config: UNetConfig):
        super().__init__()
        self.res1 = ResidualBlock.from_config(channels, channels, config)
        self.attn = AttentionBlock(channels, config.num_heads)
        self.res2 = ResidualBlock.from_config(channels, channels, config)

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        return self.res2(self.attn(self.res1(h, temb)), temb)


class UpBlock(nn.Module):
    """One level of the up path: h (B, in_ch, H, W) -> (B, out_ch, H', W').

    For each entry ``skip_ch`` of ``skip_channels`` (``num_res_blocks + 1`` of them, in
    the order they are popped): concatenate a popped skip, h = cat([h, skip], dim=1) with
    h_ch + skip_ch channels, then ResidualBlock(h_ch + skip_ch -> out_ch) [+ AttentionBlock].
    Then an Upsample (H' = 2H) unless this is the top level (H' = H).
    """

    def __init__(self, in_ch: int, skip_channels: list[int], out_ch: int, config: UNetConfig,
                 use_attention: bool, upsample: bool):
        super().__init__()
        h_channels = [in_ch] + [out_ch] * (len(skip_channels) - 1)  # h entering each step
        self.res = nn.ModuleList(ResidualBlock.from_config(h_ch + skip_ch, out_ch, config)
                                 for h_ch, skip_ch in zip(h_channels, skip_channels))
        self.attn = nn.ModuleList(AttentionBlock(out_ch, config.num_heads) if use_attention
                                  else nn.Identity() for _ in skip_channels)
        self.upsample = Upsample(out_ch) if upsample else nn.Identity()
        self.skip_channels = skip_channels

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor | None) -> torch.Tensor:
        """Pops ``len(self.skip_channels)`` tensors off the end of ``skips`` (in place)."""
        for res, attn in zip(self.res, self.attn):
            h = torch.cat([h, skips.pop()], dim=1)  # (B, h_ch + skip_ch, H, W)
            h = attn(res(h, temb))  # (B, out_ch, H, W)
        return self.upsample(h)


class UNet(nn.Module):
    """eps_theta: x (B, C, H, W), t (B,) or scalar -> (B, config.out_channels, H, W).

    With ``learn_sigma`` the output is (B, 2C, H, W): channels [:C] are the predicted noise
    eps and channels [C:] the variance interpolation v of Nichol & Dhariwal 2021.
    H and W may be any multiple of 2 ** (len(channel_mult) - 1), not only image_size.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        ch = config.base_channels
        self.input_conv = nn.Conv2d(config.image_channels, ch, 3, padding=1)
        self.time_embed = TimeEmbedding(ch, config.time_dim) if config.injection != "none" else None
        # A class is one more condition on the time step's path: its learned embedding is added to the time
        # embedding (improved-diffusion's label_emb); row num_classes is the null class of classifier-free guidance.
        self.class_embed = nn.Embedding(config.num_classes + 1, config.time_dim) if config.num_classes else None
        skip_channels = [ch]  # the input conv output is the first skip
        self.down = nn.ModuleList()
        num_levels = len(config.channel_mult)
        use_attention = [r in config.attention_resolutions for r in config.resolutions]  # per level
        for level, mult in enumerate(config.channel_mult):
            block = DownBlock(ch, config.base_channels * mult, config, use_attention[level],
                              downsample=level < num_levels - 1)
            self.down.append(block)
            skip_channels += block.skip_channels
            ch = block.out_channels
        self.mid = MidBlock(ch, config)
        self.up = nn.ModuleList()
        for level in reversed(range(num_levels)):
            popped = [skip_channels.pop() for _ in range(config.num_res_blocks + 1)]  # mirrors forward
            out_ch = config.base_channels * config.channel_mult[level]
            self.up.append(UpBlock(ch, popped, out_ch, config, use_attention[level], upsample=level > 0))
            ch = out_ch
        assert not skip_channels, "every skip tensor must be consumed by the up path"
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, config.out_channels, 3, padding=1)))

    @property
    def null_class(self) -> int | None:
        """The label of the null class ("no class": classifier-free guidance's unconditional model), or None."""
        return self.config.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor | None = None) -> torch.Tensor:
        """y: (B,) class labels 0 ... num_classes - 1, or num_classes (the null class), of a class-conditional
        U-Net; None gives it the null class. An unconditional U-Net takes no y."""
        if x.ndim != 4 or x.shape[1] != self.config.image_channels:
            raise ValueError(f"x must be (B, {self.config.image_channels}, H, W), got {tuple(x.shape)}")
        for size in x.shape[-2:]:
            check_image_size(size, len(self.down))
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])  # one time step for the whole batch
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")

        h = self.input_conv(x)  # (B, base_channels, H, W)
        temb = self.time_embed(t) if self.time_embed is not None else None  # (B, time_dim)
        if self.class_embed is not None:
            temb = temb + self.class_embed(self._labels(y, x))  # (B, time_dim): time and class on one path
        elif y is not None:
            raise ValueError("this U-Net is unconditional (UNetConfig.num_classes is None) and takes no class labels; "
                             "train one with num_classes set to condition on a class")
        skips = [h]
        for block in self.down:
            h, block_skips = block(h, temb)
            skips += block_skips
        h = self.mid(h, temb)  # (B, C_deepest, H / 2**(L-1), W / 2**(L-1))
        for block in self.up:
            h = block(h, skips, temb)  # consumes num_res_blocks + 1 skips
        return self.out(h)  # (B, out_channels, H, W)


    def _labels(self, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """y checked, or the null class for every sample when None: (B,) int64 on x's device."""
        k = self.config.num_classes
        if y is None:
            return torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        y = torch.as_tensor(y, device=x.device)
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.shape != (x.shape[0],):
            raise ValueError(f"y must be an integer tensor of shape ({x.shape[0]},), one class per sample, got "
                             f"{y.dtype} {tuple(y.shape)}")
        if y.numel() and bool(((y < 0) | (y > k)).any()):
            raise ValueError(f"class labels must lie in 0 ... {k - 1} (or {k}, the null class), got values from "
                             f"{int(y.min())} to {int(y.max())}")
        return y.long()


def trace(model: UNet, x: torch.Tensor, t: torch.Tensor | int, y: torch.Tensor | None = None) -> list[dict]:
    """Run one forward pass and record, per top-level block in execution order: name,
    block type, input shape (of its first argument), output shape, parameter count. y: class labels (B,) of a
    class-conditional U-Net (its null class when None)."""
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            blocks += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        else:
            blocks.append((name, child))
    rows = []

    def record(name):
        def hook(module, args, output):
            output = output[0] if isinstance(output, tuple) else output  # DownBlock: (h, skips)
            rows.append(dict(name=name, type=type(module).__name__, input_shape=tuple(args[0].shape),
                             output_shape=tuple(output.shape), params=count_parameters(module)))
        return hook

    handles = [block.register_forward_hook(record(name)) for name, block in blocks]
    try:
        with torch.no_grad():
            model(x, t) if y is None else model(x, t, y)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def format_trace(rows: list[dict]) -> str:
    """Plain-text table of :func:`trace` rows, with a total parameter count."""
    header = ("block", "type", "input", "output", "params")
    lines = [(r["name"], r["type"], str(r["input_shape"]), str(r["output_shape"]), f"{r['params']:,}")
             for r in rows]
    lines.append(("total", "", "", "", f"{sum(r['params'] for r in rows):,}"))
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]

    def fmt(line):  # left-align text columns, right-align the parameter count
        return "  ".join(c.rjust(w) if i == 4 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))

    return "\n".join(fmt(line).rstrip() for line in [header, ["-" * w for w in widths], *lines])
