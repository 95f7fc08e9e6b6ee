"""The ops, one definition each: read by the front end, the passes and every backend.

Adding an op means one new module here, registered below, plus its tests.
"""

from __future__ import annotations

from resgraph.ops.add import AddOp
from resgraph.ops.base import Op
from resgraph.ops.bn import BatchNormOp
from resgraph.ops.conv import ConvOp
from resgraph.ops.drop_path import DropPathOp
from resgraph.ops.head import FlattenOp, GlobalAvgPoolOp, InputOp
from resgraph.ops.linear import LinearOp
from resgraph.ops.pool import AvgPoolOp, MaxPoolOp
from resgraph.ops.relu import ReLUOp
from resgraph.ops.se import SqueezeExciteOp
from resgraph.ops.zero_pad import ZeroPadOp

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        ConvOp(),
        BatchNormOp(),
        ReLUOp(),
        MaxPoolOp(),
        AvgPoolOp(),
        LinearOp(),
        AddOp(),
        SqueezeExciteOp(),
        ZeroPadOp(),
        DropPathOp(),
        GlobalAvgPoolOp(),
        FlattenOp(),
        InputOp(),
    )
}
LANGUAGE = {name: op for name, op in OPS.items() if op.language is not None}  # spec keywords
