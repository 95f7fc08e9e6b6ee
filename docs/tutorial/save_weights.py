"""Build the tutorial's generated module, run it once and save its weights (docs/tutorial.md)."""

import sys

import torch

sys.path.insert(0, "build")  # where `resgraph compile --out-dir build` wrote se_resnet20.py
from se_resnet20 import build_model

torch.manual_seed(0)
model = build_model().eval()
print("parameters:", sum(p.numel() for p in model.parameters()))
print("logits:", tuple(model(torch.randn(8, 3, 32, 32)).shape))
torch.save(model.state_dict(), "build/se_resnet20.pt")
print("saved build/se_resnet20.pt")
