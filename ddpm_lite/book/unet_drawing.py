"""The U-Net drawn from its modules: :func:`unet_layout` reads the blocks and skips, :func:`draw_unet` draws them.

matplotlib is imported inside :func:`draw_unet`, so importing this module stays light.
"""
from __future__ import annotations

from ..unet import AttentionBlock, UNet, Upsample

def unet_layout(model: UNet) -> dict:
    """The blocks of ``model`` in execution order, with their level and channels, and the skip connections.

    Read from the modules themselves (not from the config), so the diagram shows the network that exists.
    Returns {"nodes": [...], "skips": [(producer, consumer), ...]}: each node is a dict with "name" (e.g.
    "down.0.res.0"), "kind" ("conv_in", "res", "downsample", "mid", "upsample", "conv_out"), "level" (0 = full
    resolution), "size" (H = W of its output for an image of ``config.image_size``), "in_ch", "out_ch",
    "attention" (bool) and, for an up-path ResidualBlock, "skip_ch" (its in_ch is h_ch + skip_ch). A skip
    (i, j) says node j concatenates the output of node i; they pair up last-in, first-out, like the forward pass.
    """
    sizes = model.config.resolutions
    nodes, skips, stack = [], [], []

    def add(name, kind, level, in_ch, out_ch, attention=False, **extra):
        nodes.append(dict(name=name, kind=kind, level=level, size=sizes[level], in_ch=in_ch, out_ch=out_ch,
                          attention=attention, **extra))
        return len(nodes) - 1

    conv = model.input_conv
    stack.append(add("input_conv", "conv_in", 0, conv.in_channels, conv.out_channels))
    for level, block in enumerate(model.down):
        for i, (res, attn) in enumerate(zip(block.res, block.attn)):
            stack.append(add(f"down.{level}.res.{i}", "res", level, res.conv1.in_channels, res.conv1.out_channels,
                             isinstance(attn, AttentionBlock)))
        if block.downsample is not None:
            ch = block.downsample.conv.out_channels
            stack.append(add(f"down.{level}.downsample", "downsample", level + 1, ch, ch))
    deepest = len(model.down) - 1
    add("mid", "mid", deepest, model.mid.res1.conv1.in_channels, model.mid.res2.conv1.out_channels, True)
    for k, block in enumerate(model.up):
        level = deepest - k
        for i, (res, attn, skip_ch) in enumerate(zip(block.res, block.attn, block.skip_channels)):
            node = add(f"up.{k}.res.{i}", "res", level, res.conv1.in_channels, res.conv1.out_channels,
                       isinstance(attn, AttentionBlock), skip_ch=skip_ch)
            skips.append((stack.pop(), node))
        if isinstance(block.upsample, Upsample):
            ch = block.upsample.conv.out_channels
            add(f"up.{k}.upsample", "upsample", level - 1, ch, ch)
    conv = model.out[-1]
    add("out", "conv_out", 0, conv.in_channels, conv.out_channels)
    return {"nodes": nodes, "skips": skips}


def draw_unet(model: UNet, ax=None):
    """Draw ``model`` as a U: one box per block (from :func:`unet_layout`), rows by resolution, the main path
    as arrows and every skip connection as an arc labelled with its channels. Returns the matplotlib axis."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    layout = unet_layout(model)
    nodes = layout["nodes"]
    row_gap, width, height = 2.2, 0.86, 1.0
    if ax is None:
        _, ax = plt.subplots(figsize=(1.15 * len(nodes) + 1, 2.2 + row_gap * (1 + max(n["level"] for n in nodes))))
    colours = {"conv_in": "#dddddd", "conv_out": "#dddddd", "res": "#cfe2f3", "downsample": "#f4cccc",
               "upsample": "#d9ead3", "mid": "#fff2cc"}
    titles = {"conv_in": "conv in", "conv_out": "out", "downsample": "Downsample", "upsample": "Upsample",
              "mid": "Mid\nRes+Attn+Res"}
    centres = []
    for x, node in enumerate(nodes):
        y = -row_gap * node["level"]
        centres.append((x, y))
        if node["kind"] == "res":
            title = "Res+Attn" if node["attention"] else "Res"
            if "skip_ch" in node:
                channels = f"{node['in_ch'] - node['skip_ch']}+{node['skip_ch']}\n→{node['out_ch']}"
            else:
                channels = f"{node['in_ch']}→{node['out_ch']}"
        else:
            title = titles[node["kind"]]
            channels = f"{node['in_ch']}→{node['out_ch']}"
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
                                    facecolor=colours[node["kind"]], edgecolor="k", lw=0.8))
        ax.text(x, y + 0.08, f"{title}\n{channels}", ha="center", va="center", fontsize=9)
        ax.text(x, y - height / 2 - 0.12, f"{node['size']}×{node['size']}", ha="center", va="top", fontsize=9,
                color="0.35")
    for (x0, y0), (x1, y1) in zip(centres[:-1], centres[1:]):  # the main path
        ax.add_patch(FancyArrowPatch((x0 + width / 2, y0), (x1 - width / 2, y1), arrowstyle="-|>",
                                     mutation_scale=8, lw=0.8, color="k"))
    for producer, consumer in layout["skips"]:  # skip connections: arcs above the row, nested last-in first-out
        (x0, y0), (x1, _) = centres[producer], centres[consumer]
        ax.add_patch(FancyArrowPatch((x0, y0 + height / 2), (x1, y0 + height / 2), arrowstyle="-|>",
                                     mutation_scale=7, lw=0.8, color="tab:purple", ls="--",
                                     connectionstyle=f"arc3,rad=-{0.12 + 0.5 / (x1 - x0):.3f}"))
    levels = 1 + max(n["level"] for n in nodes)
    ax.text(-0.5, -row_gap * levels + 0.35, "dashed arcs: skip connections, concatenated on the channel axis "
            "(an up-path box shows h + skip → out channels)", fontsize=9, ha="left", va="center", color="tab:purple")
    ax.text(-0.5, -row_gap * levels + 0.0, f"t → sinusoid({model.config.base_channels}) → MLP → "
            f"{model.config.time_dim} channels, into every Res block (injection: {model.config.injection})",
            fontsize=9, ha="left", va="center")
    ax.set_xlim(-0.7, len(nodes) - 0.3)
    ax.set_ylim(-row_gap * levels, 0.6 + 0.06 * len(nodes) + height)
    ax.set_axis_off()
    return ax
