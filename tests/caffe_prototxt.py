"""Deploy prototxts of the form of Kaiming He's ResNet-50/101/152 (the paper's Caffe models).

Written from the originals' facts, not from resgraph: tab-indented `layer { bottom top name
type }` blocks, conv + BatchNorm + Scale (+ ReLU) written in place, projections named
res2a_branch1, branches res2a_branch2a/2b/2c, the stride on the 1x1 convs of the first
block of stages 3-5, blocks lettered a, b, c, ... in ResNet-50 and a, b1, b2, ... in
stages 3 and 4 of ResNet-101/152, conv1 with a bias in ResNet-50 only.
"""

from __future__ import annotations

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
WIDTHS = (64, 128, 256, 512)


def resnet_deploy_prototxt(depth: int) -> str:
    """The deploy prototxt of the paper's ResNet-`depth` (50, 101 or 152) at 1x3x224x224."""
    parts = [f'name: "ResNet-{depth}"\ninput: "data"\n']
    parts += [f"input_dim: {size}\n" for size in (1, 3, 224, 224)]
    conv1 = {"num_output": 64, "kernel_size": 7, "pad": 3, "stride": 2}
    if depth != 50:
        conv1["bias_term"] = "false"
    parts.append(_layer("conv1", "Convolution", ["data"], "conv1", {"convolution_param": conv1}))
    parts += _bn_scale("conv1", "_conv1", relu="conv1_relu")
    pool1 = {"kernel_size": 3, "stride": 2, "pool": "MAX"}
    parts.append(_layer("pool1", "Pooling", ["conv1"], "pool1", {"pooling_param": pool1}))
    blob = "pool1"
    for stage, (count, width) in enumerate(zip(BLOCKS[depth], WIDTHS, strict=True), start=2):
        for index in range(count):
            name = f"{stage}{_letter(depth, stage, index)}"
            stride = 2 if stage > 2 and index == 0 else 1
            parts += _block(name, blob, width, stride, projection=index == 0)
            blob = f"res{name}"
    pool5 = {"kernel_size": 7, "stride": 1, "pool": "AVE"}
    parts.append(_layer("pool5", "Pooling", [blob], "pool5", {"pooling_param": pool5}))
    fc = {"inner_product_param": {"num_output": 1000}}
    parts.append(_layer("fc1000", "InnerProduct", ["pool5"], "fc1000", fc))
    parts.append(_layer("prob", "Softmax", ["fc1000"], "prob", {}))
    return "".join(parts)


def _letter(depth: int, stage: int, index: int) -> str:
    if depth == 50 or stage in (2, 5) or index == 0:
        return "abcdefghijklmnopqrstuvwxyz"[index]
    return f"b{index}"


def _block(name: str, bottom: str, width: int, stride: int, projection: bool) -> list[str]:
    """A bottleneck: res{name}_branch2a/2b/2c (+ branch1), the Eltwise res{name}, its ReLU."""
    parts: list[str] = []
    shortcut = bottom
    if projection:
        parts += _conv(f"res{name}_branch1", bottom, 4 * width, 1, stride)
        parts += _bn_scale(f"res{name}_branch1", f"{name}_branch1")
        shortcut = f"res{name}_branch1"
    previous = bottom
    for branch, (out, kernel, step) in zip(
        "abc", ((width, 1, stride), (width, 3, 1), (4 * width, 1, 1)), strict=True
    ):
        conv = f"res{name}_branch2{branch}"
        parts += _conv(conv, previous, out, kernel, step)
        relu = f"{conv}_relu" if branch != "c" else None
        parts += _bn_scale(conv, f"{name}_branch2{branch}", relu=relu)
        previous = conv
    parts.append(_layer(f"res{name}", "Eltwise", [shortcut, previous], f"res{name}", {}))
    parts.append(_layer(f"res{name}_relu", "ReLU", [f"res{name}"], f"res{name}", {}))
    return parts


def _conv(name: str, bottom: str, out: int, kernel: int, stride: int) -> list[str]:
    param = {
        "num_output": out,
        "kernel_size": kernel,
        "pad": (kernel - 1) // 2,
        "stride": stride,
        "bias_term": "false",
    }
    return [_layer(name, "Convolution", [bottom], name, {"convolution_param": param})]


def _bn_scale(blob: str, suffix: str, relu: str | None = None) -> list[str]:
    """bn{suffix} and scale{suffix} in place on `blob` (and a ReLU named `relu`)."""
    parts = [
        _layer(
            f"bn{suffix}",
            "BatchNorm",
            [blob],
            blob,
            {"batch_norm_param": {"use_global_stats": "true"}},
        ),
        _layer(f"scale{suffix}", "Scale", [blob], blob, {"scale_param": {"bias_term": "true"}}),
    ]
    if relu:
        parts.append(_layer(relu, "ReLU", [blob], blob, {}))
    return parts


def _layer(name: str, kind: str, bottoms: list[str], top: str, params: dict[str, dict]) -> str:
    lines = ["layer {"]
    lines += [f'\tbottom: "{bottom}"' for bottom in bottoms]
    lines += [f'\ttop: "{top}"', f'\tname: "{name}"', f'\ttype: "{kind}"']
    for section, fields in params.items():
        lines.append(f"\t{section} {{")
        lines += [f"\t\t{key}: {value}" for key, value in fields.items()]
        lines.append("\t}")
    return "\n".join(lines) + "\n}\n\n"
