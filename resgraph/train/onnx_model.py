"""An ONNX file (float32, fp16 or int8) run by onnxruntime, called like the PyTorch module.

`evaluate --onnx` scores it on the same batches as the run's checkpoint, so the two
results differ only by what the ONNX file computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from resgraph.errors import Location
from resgraph.extras import require
from resgraph.train import TrainError


class OnnxModel:
    """A CPU onnxruntime session taking (N, C, H, W) float tensors, returning the logits."""

    def __init__(self, path: Path, shape: tuple[int, int, int]) -> None:
        require("onnxruntime", "onnx")
        import onnxruntime as ort

        self.path = path
        where = Location(str(path))
        if not path.is_file():
            raise TrainError("no such ONNX file", where)
        options = ort.SessionOptions()
        # no spinning between runs: the PyTorch model shares the cores, batch by batch
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own kinds for bad files
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainError(f"onnxruntime cannot load this file: {detail}", where) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(self.session.get_outputs()) != 1:
            raise TrainError("expected a classifier: one input and one output", where)
        self.input = inputs[0].name
        batch, *found = inputs[0].shape
        if tuple(found) != shape:
            expected = "x".join(map(str, shape))
            raise TrainError(
                f"the model's input is {'x'.join(map(str, found))}, the run's is {expected}",
                where,
            )
        self.static_batch = batch if isinstance(batch, int) else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a float batch; a static-batch model gets it in padded chunks."""
        x = images.detach().cpu().float().numpy()
        step = self.static_batch or len(x)
        out = []
        for begin in range(0, len(x), step):
            chunk = x[begin : begin + step]
            padded = np.resize(chunk, (step, *chunk.shape[1:]))  # repeats rows to fill
            out.append(self.session.run(None, {self.input: padded})[0][: len(chunk)])
        return torch.from_numpy(np.concatenate(out))
