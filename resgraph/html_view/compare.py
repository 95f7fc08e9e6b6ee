"""Which blocks and nodes of two networks differ, for the diff page's marks.

Stages pair by position, as `resgraph diff` pairs them; blocks by position in their stage;
a block's nodes by their name inside the block; stem and head nodes by name. A node differs
when its op, attributes, shape or role do, or when the other side has no counterpart.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from resgraph.ir import Block, Network, Node


@dataclass(frozen=True)
class Changed:
    """One side's blocks and nodes that differ from the other side's."""

    blocks: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()


UNCHANGED = Changed()  # a page of one network marks nothing


def _same(a: Node, b: Node) -> bool:
    return (a.op, a.attrs, a.shape, a.role) == (b.op, b.attrs, b.shape, b.role)


def _changed_nodes(a: Mapping[str, Node], b: Mapping[str, Node]) -> tuple[set[str], set[str]]:
    """Keys (local names) of `a` and of `b` whose node differs or has no counterpart."""
    differ = {k for k in a.keys() & b.keys() if not _same(a[k], b[k])}
    return differ | (a.keys() - b.keys()), differ | (b.keys() - a.keys())


def _local(network: Network, block: Block) -> dict[str, Node]:
    return {name[len(block.name) + 1 :]: network.nodes[name] for name in block.nodes}


def _outside(network: Network, roles: tuple[str, ...]) -> dict[str, Node]:
    """The nodes outside blocks with one of `roles` (the input and stem, or the head)."""
    return {name: node for name, node in network.nodes.items() if node.role in roles}


def changes(a: Network, b: Network) -> tuple[Changed, Changed]:
    """What differs in A from B, and in B from A."""
    nodes_a, nodes_b = set(), set()
    blocks_a, blocks_b = set(), set()
    for roles in (("input", "stem"), ("head",)):
        only_a, only_b = _changed_nodes(_outside(a, roles), _outside(b, roles))
        nodes_a |= only_a
        nodes_b |= only_b
    for stage_a, stage_b in itertools.zip_longest(a.stages, b.stages):
        pairs = itertools.zip_longest(
            stage_a.blocks if stage_a else (), stage_b.blocks if stage_b else ()
        )
        for name_a, name_b in pairs:
            block_a = a.blocks[name_a] if name_a else None
            block_b = b.blocks[name_b] if name_b else None
            local_a = _local(a, block_a) if block_a else {}
            local_b = _local(b, block_b) if block_b else {}
            only_a, only_b = _changed_nodes(local_a, local_b)
            nodes_a |= {f"{name_a}.{k}" for k in only_a}
            nodes_b |= {f"{name_b}.{k}" for k in only_b}
            differ = bool(only_a or only_b) or (
                block_a is not None
                and block_b is not None
                and (block_a.template.type_name, block_a.shortcut.kind)
                != (block_b.template.type_name, block_b.shortcut.kind)
            )
            if differ and name_a:
                blocks_a.add(name_a)
            if differ and name_b:
                blocks_b.add(name_b)
    return (
        Changed(frozenset(blocks_a), frozenset(nodes_a)),
        Changed(frozenset(blocks_b), frozenset(nodes_b)),
    )
