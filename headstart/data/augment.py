"""Image augmentation on batches, with torch operations only: flips, small rotations, brightness and contrast,
noise. Every image of a batch draws its own parameters from torch's global generator (seeded per epoch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(images: torch.Tensor, max_degrees: float = 10.0, brightness: float = 0.2,
                  contrast: float = 0.2, noise: float = 0.03) -> torch.Tensor:
    """images: float (B, C, H, W) in [0, 1] -> augmented copy, still in [0, 1]."""
    b = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(b, device=device).uniform_(low, high)

    flip = torch.rand(b, device=device) < 0.5
    images = torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)

    angle = uniform(-max_degrees, max_degrees) * math.pi / 180
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(b, device=device)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * uniform(1 - contrast, 1 + contrast).view(b, 1, 1, 1) + mean
    images = images + uniform(-brightness, brightness).view(b, 1, 1, 1)
    images = images + torch.randn_like(images) * uniform(0, noise).view(b, 1, 1, 1)
    return images.clamp(0, 1)
