"""Image augmentation on batches, with torch operations only: flips, small rotations, brightness and contrast,
noise. Each image draws its parameters from its own generator, seeded by the caller, so an augmented view of an
example is the same whichever batch it lands in (and after a resume)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(images: torch.Tensor, seeds: list[int], max_degrees: float = 10.0, brightness: float = 0.2,
                  contrast: float = 0.2, noise: float = 0.03, vertical_flip: bool = False) -> torch.Tensor:
    """images: float (B, C, H, W) in [0, 1], one seed per image -> augmented copy, still in [0, 1].
    `vertical_flip` also flips half the images top to bottom, for images with no up or down."""
    b = images.shape[0]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    params = torch.stack([torch.rand(5, generator=g) for g in generators]).to(images.device)
    flip, angle, scale, shift, sigma = params.unbind(1)

    images = torch.where((flip < 0.5).view(b, 1, 1, 1), images.flip(-1), images)

    angle = (angle * 2 - 1) * max_degrees * math.pi / 180
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * (1 + (scale * 2 - 1) * contrast).view(b, 1, 1, 1) + mean
    images = images + ((shift * 2 - 1) * brightness).view(b, 1, 1, 1)
    gaussian = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators]).to(images.device)
    images = images + gaussian * (sigma * noise).view(b, 1, 1, 1)
    if vertical_flip:  # drawn last, so the other draws match those of the same seed without it
        upside_down = torch.cat([torch.rand(1, generator=g) for g in generators]).to(images.device) < 0.5
        images = torch.where(upside_down.view(b, 1, 1, 1), images.flip(-2), images)
    return images.clamp(0, 1)


def example_seed(*parts: int) -> int:
    """A seed for one example's augmentation from (run seed, epoch or view, example index, ...)."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % (2**63 - 1)
    return seed
