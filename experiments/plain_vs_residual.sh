#!/bin/sh
# Plain vs residual networks at 20 and 56 layers on the digits data, like the paper's
# Fig. 6 and Fig. 7 in miniature. Writes runs under $1 (default runs/digits-depth) and
# the figures beside them. Inputs are resized to 16x16 (the CIFAR nets' 32x32 would only
# upsample 8x8 digits further, at four times the cost).
set -eu
out=${1:-runs/digits-depth}
for net in plain20 resnet20 plain56 resnet56; do
    resgraph train "specs/cifar_$net.yaml" --recipe digits-depth \
        --set input.height=16 --set input.width=16 --seed 0 --out "$out/$net"
done
resgraph plot "$out/plain20" "$out/plain56" -o "$out/plain.png"
resgraph plot "$out/resnet20" "$out/resnet56" -o "$out/residual.png"
resgraph analyze responses "$out/plain20" "$out/plain56" "$out/resnet20" \
    "$out/resnet56" --checkpoint last -o "$out/std.png"
