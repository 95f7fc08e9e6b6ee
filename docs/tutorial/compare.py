"""Run the same weights in PyTorch and in onnxruntime and compare the logits (docs/tutorial.md)."""

import sys

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, "build")
from se_resnet20 import build_model

model = build_model().eval()
model.load_state_dict(torch.load("build/se_resnet20.pt", weights_only=True))
session = ort.InferenceSession("build/se_resnet20.onnx", providers=["CPUExecutionProvider"])

images = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
(onnx_logits,) = session.run(["logits"], {"input": images})
with torch.no_grad():
    torch_logits = model(torch.from_numpy(images)).numpy()
print("logits:", onnx_logits.shape)
print("same as PyTorch within 1e-4:", bool(np.allclose(onnx_logits, torch_logits, atol=1e-4)))
