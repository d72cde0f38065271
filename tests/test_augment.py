"""Image augmentation: seeded per example, in range, and top-bottom flips only when asked for."""

import torch

from headstart.data.augment import augment_batch


def _images(count=16, size=24):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_an_example_augments_the_same_in_any_batch():
    images, seeds = _images(), list(range(100, 116))
    whole = augment_batch(images, seeds)
    alone = torch.cat([augment_batch(images[i:i + 1], seeds[i:i + 1]) for i in (3, 7)])
    assert torch.allclose(whole[[3, 7]], alone, atol=1e-6)
    assert whole.min() >= 0 and whole.max() <= 1
    assert not torch.allclose(whole, images, atol=1e-3)


def test_vertical_flip_turns_about_half_the_images_upside_down():
    images = _images(64)
    seeds = list(range(64))
    plain = augment_batch(images, seeds)
    flipped = augment_batch(images, seeds, vertical_flip=True)
    same = [torch.allclose(flipped[i], plain[i], atol=1e-6) for i in range(64)]
    upside_down = [torch.allclose(flipped[i], plain[i].flip(-2), atol=1e-6) for i in range(64)]
    assert all(s or u for s, u in zip(same, upside_down))  # the other draws are those of the same seed without it
    assert 16 <= sum(upside_down) <= 48
