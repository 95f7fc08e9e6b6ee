"""Image transforms: batched tensor ops for in-memory data, PIL ops for image folders.

Randomness always comes from an explicit generator, so a resumed run draws the same crops.
"""

from __future__ import annotations

import hashlib

import torch
from PIL import Image

from resgraph.errors import Location
from resgraph.train import TrainError

Tensor = torch.Tensor
FIT_CHUNK = 256  # images resized at once by `fit`


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from a tuple such as ("order", seed, epoch), independent of others."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def fit(images: Tensor, channels: int, height: int, width: int) -> Tensor:
    """Resize uint8 images (N, C, H, W) to the spec's input size and channel count."""
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
        else:
            raise TrainError(
                f"cannot turn {images.shape[1]}-channel images into {channels} channels "
                f"(only into 1 or {images.shape[1]})",
                Location("spec input.channels"),
            )
    if images.shape[2:] == (height, width):
        return images.contiguous()
    out = torch.empty((len(images), images.shape[1], height, width), dtype=torch.uint8)
    for begin in range(0, len(images), FIT_CHUNK):  # float copies of a chunk only
        resized = torch.nn.functional.interpolate(
            images[begin : begin + FIT_CHUNK].float(),
            size=(height, width),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out[begin : begin + FIT_CHUNK] = resized.round().clamp(0, 255)
    return out


def crop_flip(images: Tensor, pad: int, flip: bool, rng: torch.Generator) -> Tensor:
    """Zero-pad by `pad`, take a random crop of the original size, and flip half the images."""
    n, _, h, w = images.shape
    out = images
    if pad:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=rng).to(images.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=rng).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=rng) < 0.5).to(images.device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def normalize(images: Tensor, mean: Tensor) -> Tensor:
    """uint8 images to floats in [0, 1] minus the per-pixel mean of the training set."""
    return images.float().div_(255).sub_(mean)


# AlexNet's colour augmentation (Krizhevsky, Sutskever and Hinton 2012, Sec. 4.1): the
# eigenvalues and eigenvectors (columns) of the 3x3 covariance of ImageNet's RGB pixel values,
# for values in [0, 1], as published with fb.resnet.torch (datasets/imagenet.lua, `pca`), the
# reference reimplementation of the ResNet paper's training.
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def lighting_offsets(count: int, std: float, rng: torch.Generator) -> Tensor:
    """One RGB offset per image, V @ (alpha * lambda) with alpha ~ N(0, std^2): (count, 3)."""
    alpha = torch.randn(count, 3, generator=rng, dtype=torch.float64) * std
    eigenvalues = torch.tensor(IMAGENET_EIGENVALUES, dtype=torch.float64)
    eigenvectors = torch.tensor(IMAGENET_EIGENVECTORS, dtype=torch.float64)
    return (alpha * eigenvalues) @ eigenvectors.T


def lighting(images: Tensor, std: float, rng: torch.Generator) -> Tensor:
    """Add each image's PCA lighting offset to all its pixels (float RGB images in [0, 1] units).

    Subtracting a mean is linear, so the offset may be added before or after it.
    """
    if std == 0:
        return images
    offsets = lighting_offsets(len(images), std, rng).to(images.device, images.dtype)
    return images + offsets[:, :, None, None]


def to_tensor(image: Image.Image) -> Tensor:
    """A PIL image as a uint8 (C, H, W) tensor."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, len(image.getbands())).permute(2, 0, 1).contiguous()


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is `size` (the paper's scale augmentation and test resize)."""
    scale = size / min(image.size)
    target = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    return image.resize(target, Image.BILINEAR)


def random_crop(
    image: Image.Image, height: int, width: int, flip: bool, rng: torch.Generator
) -> Image.Image:
    """A random crop of the given size, flipped left-right with probability 1/2 if asked."""
    top = int(torch.randint(0, image.height - height + 1, (1,), generator=rng))
    left = int(torch.randint(0, image.width - width + 1, (1,), generator=rng))
    image = image.crop((left, top, left + width, top + height))
    if flip and float(torch.rand(1, generator=rng)) < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The central crop of the given size."""
    top, left = (image.height - height) // 2, (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))


def ten_crops(image: Tensor, height: int, width: int) -> Tensor:
    """The paper's 10-crop testing: four corners and the centre, and their mirror images."""
    _, h, w = image.shape
    top, left = (h - height) // 2, (w - width) // 2
    corners = [(0, 0), (0, w - width), (h - height, 0), (h - height, w - width), (top, left)]
    crops = torch.stack([image[:, y : y + height, x : x + width] for y, x in corners])
    return torch.cat([crops, crops.flip(3)])
