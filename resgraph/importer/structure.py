"""Find a network's stem, residual blocks and head in its layers.

A residual block is found at each add: its two inputs run back, as two chains, to the
nearest layer every path of the network passes through (a cut point); the longer chain is
the branch, the other the shortcut. Between one add and the next block's cut point lie the
first block's post-add layers (the ReLU of a post-activation block) and the next block's
layers before its projection reads (a pre-activation unit's BN and ReLU): the fewest such
layers over all blocks are the post-add ones. A network without adds (the paper's plain
nets) is cut into repeats of a library plain block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resgraph.importer.layers import Layer, Shape
from resgraph.importer.source import INPUT, ImportFailure

STRIDED = ("conv", "maxpool", "avgpool")
HEAD = ("global_avgpool", "flatten", "linear")
MAX_STEM = 64  # stems tried before a plain network's repeating unit is given up on


@dataclass
class FoundBlock:
    pre: list[Layer]  # layers before the point the shortcut reads (pre-activation units)
    branch: list[Layer]
    shortcut: list[Layer]  # empty: identity
    add: Layer | None  # None: a plain block
    post: list[Layer]
    in_shape: Shape

    @property
    def layers(self) -> list[Layer]:
        """The block type's layers in order: what a spec's block type lists."""
        return self.pre + self.branch + ([self.add] if self.add else []) + self.post

    @property
    def out_shape(self) -> Shape:
        last = self.post[-1] if self.post else self.add or self.branch[-1]
        return last.shape

    @property
    def stride(self) -> int:
        stride = 1
        for layer in self.pre + self.branch:
            if layer.kind in STRIDED:
                stride *= layer.stride
        return stride

    @property
    def excess(self) -> list[int]:
        """Per layer, its stride over the one it has by default (1 for a conv, the window for
        a pool): what a block's own stride may have multiplied."""
        out = []
        for layer in self.layers:
            if layer.kind == "conv":
                out.append(layer.stride)
            elif layer.kind in ("maxpool", "avgpool"):
                kernel = layer.attrs["kernel"]
                out.append(layer.stride // kernel if layer.stride % kernel == 0 else 1)
            else:
                out.append(1)
        return out

    @property
    def shortcut_kind(self) -> str:
        if self.add is None:
            return "none"
        if not self.shortcut:
            return "identity"
        return "zero_pad" if [s.kind for s in self.shortcut] == ["zero_pad"] else "projection"


@dataclass
class Found:
    stem: list[Layer]
    blocks: list[FoundBlock]
    head_layers: list[Layer]
    pool: Layer
    flatten: Layer
    classifier: Layer


def find(
    layers: list[Layer],
    origin: str,
    plain_units: Sequence[Sequence[tuple[str, int]]],
    first_pre: int | None = None,
) -> Found:
    """The network's parts; `plain_units` are the (kind, kernel) lists of plain block types.
    `first_pre` overrides how many layers before the first block's shortcut are its own
    (which a single block whose projection reads inside it cannot tell)."""
    if [layer.kind for layer in layers[-3:]] != list(HEAD):
        tail = ", ".join(layer.kind for layer in layers[-3:])
        raise ImportFailure(
            f"{origin}: the network must end in resgraph's head (a global average pool, a "
            f"flatten and a linear classifier); it ends in {tail}"
        )
    body, (pool, flatten, classifier) = layers[:-3], layers[-3:]
    adds = [i for i, layer in enumerate(body) if layer.kind == "add"]
    if adds:
        stem, blocks, head_layers = _residual(body, adds, origin, first_pre)
    else:
        stem, blocks, head_layers = _plain(body, origin, plain_units)
    return Found(stem, blocks, head_layers, pool, flatten, classifier)


def _cut_points(body: list[Layer]) -> list[int]:
    """Indices (-1 for the input) of the layers that every path of the network goes through."""
    last_use = {INPUT: -1} | {layer.key: -1 for layer in body}
    for i, layer in enumerate(body):
        for name in layer.inputs:
            last_use[name] = max(last_use[name], i)
    cuts = [-1]
    open_count = 1 if last_use[INPUT] >= 0 else 0
    closing = [0] * (len(body) + 1)
    if last_use[INPUT] >= 0:
        closing[last_use[INPUT]] += 1
    for i, layer in enumerate(body):
        open_count -= closing[i]
        if last_use[layer.key] > i:
            open_count += 1
            closing[last_use[layer.key]] += 1
        if (open_count == 1 and last_use[layer.key] > i) or i == len(body) - 1:
            cuts.append(i)
    return cuts


def _residual(
    body: list[Layer], adds: list[int], origin: str, first_pre: int | None = None
) -> tuple[list[Layer], list[FoundBlock], list[Layer]]:
    cuts = _cut_points(body)
    cut_set = set(cuts)
    index = {layer.key: i for i, layer in enumerate(body)} | {INPUT: -1}
    parts = []  # (divergence index, branch, shortcut, add index) per add
    for a in adds:
        d = max(c for c in cuts if c < a)
        chains = [_chain(body, index, name, d, origin, body[a]) for name in body[a].inputs]
        covered = {index[layer.key] for chain in chains for layer in chain}
        stray = [i for i in range(d + 1, a) if i not in covered]
        if stray:
            raise ImportFailure(
                f"{origin}: {body[stray[0]].describe()}: a branch that is not a residual "
                "block (resgraph's blocks join one branch and one shortcut at an add)"
            )
        branch, shortcut = _branch_and_shortcut(*chains)
        parts.append((d, branch, shortcut, a))
    # the trunk between consecutive adds: post-add layers of one, pre layers of the next.
    # An identity shortcut reads its block's input, so such a block has no pre layers.
    between = []
    for k in range(1, len(parts)):
        start, d = parts[k - 1][3], parts[k][0]
        between.append(_trunk(body, start + 1, d + 1, cut_set, origin))
    identity = [len(t) for t, part in zip(between, parts[1:], strict=True) if not part[2]]
    last_add = parts[-1][3]
    tail = _trunk(body, last_add + 1, len(body), cut_set, origin)
    if between:
        first_guess = min(identity or [len(t) for t in between])
        guesses = [first_guess, *range(min(len(t) for t in between) + 1)]
    else:
        guesses = [len(tail)]
    for post_count in dict.fromkeys(guesses):  # the first that gives every block one layout
        pres = [
            t[post_count:] if part[2] else [] for t, part in zip(between, parts[1:], strict=True)
        ]
        posts = [t[: len(t) - len(pre)] for t, pre in zip(between, pres, strict=True)]
        posts.append(tail[:post_count])
        if len({tuple(x.kind for x in post) for post in posts}) == 1:
            break
    else:
        post_count = guesses[0]
        pres = [
            t[post_count:] if part[2] else [] for t, part in zip(between, parts[1:], strict=True)
        ]
        posts = [t[: len(t) - len(pre)] for t, pre in zip(between, pres, strict=True)]
        posts.append(tail[:post_count])
    lead = _trunk(body, 0, parts[0][0] + 1, cut_set, origin)
    if first_pre is None:
        first_pre = _first_pre(parts, pres, posts, lead)
    if len(lead) < first_pre:
        first_pre = 0
    stem = lead[: len(lead) - first_pre]
    pres.insert(0, lead[len(lead) - first_pre :])
    blocks = []
    in_shape = stem[-1].shape if stem else body[0].in_shape
    for (_, branch, shortcut, a), pre, post in zip(parts, pres, posts, strict=True):
        block = FoundBlock(pre, branch, shortcut, body[a], post, in_shape)
        blocks.append(block)
        in_shape = block.out_shape
    return stem, blocks, tail[len(posts[-1]) :]


def lead_length(layers: list[Layer]) -> int:
    """How many layers come before the first add's divergence point (stem candidates)."""
    body = layers[: -len(HEAD)]
    adds = [i for i, layer in enumerate(body) if layer.kind == "add"]
    if not adds:
        return 0
    return max(c for c in _cut_points(body) if c < adds[0]) + 1


SHORTCUT_NAMES = ("downsample", "shortcut", "branch1", "proj", "skip")  # as libraries name them


def _branch_and_shortcut(
    first: list[Layer], second: list[Layer]
) -> tuple[list[Layer], list[Layer]]:
    """Which chain into an add is the shortcut: the identity, a zero padding, the one the
    source names as one (torchvision's downsample, Caffe's branch1), else the shorter (the
    add's second input when they are as long)."""

    def score(chain: list[Layer]) -> tuple[int, int, int, int]:
        padding = [x.kind for x in chain] == ["zero_pad"]  # a branch never holds one
        named = any(any(n in (x.module or "") for n in SHORTCUT_NAMES) for x in chain)
        return (int(padding), int(not chain), int(named), -len(chain))

    return (second, first) if score(first) > score(second) else (first, second)


def _first_pre(
    parts: list[tuple[int, list[Layer], list[Layer], int]],
    pres: list[list[Layer]],
    posts: list[list[Layer]],
    lead: list[Layer],
) -> int:
    """How many layers before the first block's divergence belong to it, not to the stem:
    as many as make its layers the second block's (a pre-activation unit's BN and ReLU),
    else as many as the next block whose shortcut also reads a point inside it."""
    if not parts[0][2]:
        return 0  # an identity shortcut reads the block's input: nothing before it
    if len(parts) > 1:
        second = [x.kind for x in pres[0] + parts[1][1]] + ["add"] + [x.kind for x in posts[1]]
        tail = [x.kind for x in parts[0][1]] + ["add"] + [x.kind for x in posts[0]]
        for count in range(min(len(lead), len(second)) + 1):
            if [x.kind for x in lead[len(lead) - count :]] + tail == second:
                return count
    for (_, _, shortcut, _), pre in zip(parts[1:], pres, strict=True):
        if shortcut:
            return len(pre)
    return 0


def _chain(
    body: list[Layer], index: dict[str, int], name: str, stop: int, origin: str, add: Layer
) -> list[Layer]:
    """The single-input layers from just after `stop` to `name`, in order."""
    chain: list[Layer] = []
    while index[name] != stop:
        i = index[name]
        layer = body[i] if i >= 0 else None
        if layer is None or i < stop or len(layer.inputs) != 1:
            raise ImportFailure(
                f"{origin}: {add.describe()}: an add that is not a residual block's "
                "(its inputs do not run back to one point along two chains)"
            )
        chain.append(layer)
        name = layer.inputs[0]
    return chain[::-1]


def _trunk(body: list[Layer], start: int, stop: int, cuts: set[int], origin: str) -> list[Layer]:
    """Layers start..stop-1, which must form a chain (each a cut point)."""
    for i in range(start, stop):
        if i not in cuts:
            raise ImportFailure(
                f"{origin}: {body[i].describe()}: a branch that is not a residual block"
            )
    return body[start:stop]


def _plain(
    body: list[Layer], origin: str, units: Sequence[Sequence[tuple[str, int]]]
) -> tuple[list[Layer], list[FoundBlock], list[Layer]]:
    """A network without adds: the shortest stem after which repeats of a plain block fill
    the body."""
    signature = [(layer.kind, layer.attrs.get("kernel", 0)) for layer in body]
    for start in range(len(body)):
        rest = signature[start:]
        for unit in units:
            size = len(unit)
            if (
                rest
                and len(rest) % size == 0
                and all(list(rest[i : i + size]) == list(unit) for i in range(0, len(rest), size))
            ):
                return _cut(body, start, size)
    return _repeats(body)


def _repeats(body: list[Layer]) -> tuple[list[Layer], list[FoundBlock], list[Layer]]:
    """No library plain block fits: the shortest stem after which one unit of layers
    repeats to the end (one block of the last layer at worst)."""
    signature = [(layer.kind, tuple(sorted(layer.attrs.items()))) for layer in body]
    for start in range(min(len(body), MAX_STEM)):
        rest = signature[start:]
        for size in range(1, len(rest) // 2 + 1):
            if len(rest) % size == 0 and rest == rest[:size] * (len(rest) // size):
                return _cut(body, start, size)
    return _cut(body, len(body) - 1, 1)


def _cut(
    body: list[Layer], start: int, size: int
) -> tuple[list[Layer], list[FoundBlock], list[Layer]]:
    stem = body[:start]
    blocks = []
    in_shape = stem[-1].shape if stem else body[0].in_shape
    for i in range(start, len(body), size):
        block = FoundBlock([], body[i : i + size], [], None, [], in_shape)
        blocks.append(block)
        in_shape = block.out_shape
    return stem, blocks, []
