"""docs/api.md's example: the shipped models, a checked network, a module, a located error."""

import torch

import resgraph

print(resgraph.list_models("cifar_resnet*"))

net = resgraph.compile("cifar_resnet", n=18)  # as `resgraph summary cifar_resnet --set n=18`
print(f"{net.name}: {net.params:,} params, {net.macs:,} MACs, {len(net.layers)} layers")
print(net.layers[0])

model = resgraph.create_model("cifar_resnet20", num_classes=100).eval()
print(type(model).__name__, tuple(model(torch.zeros(1, 3, 32, 32)).shape))

try:
    resgraph.compile("extends: cifar_resnet\nname: mine\nshortcut: D\n")
except resgraph.SpecError as exc:
    print(exc)
