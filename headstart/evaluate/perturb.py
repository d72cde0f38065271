"""Controlled perturbations that mimic production: for images, lighting, focus, sensor noise, framing and
compression; for texts, typos, casing and truncation. Each is deterministic given (seed, example index)."""

from __future__ import annotations

import io
import random
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def darker(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(0.6)


def brighter(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.4)


def lower_contrast(image: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(0.6)


def blur(image: Image.Image, rng: random.Random) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=max(0.5, 0.01 * max(image.size))))


def noise(image: Image.Image, rng: random.Random) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + np.random.default_rng(rng.getrandbits(32)).normal(0, 0.05 * 255, pixels.shape)
    return Image.fromarray(noisy.clip(0, 255).round().astype(np.uint8))


def rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    fill = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0))  # no black corners: the mean colour
    return image.rotate(rng.choice((-5, 5)), resample=Image.BILINEAR, fillcolor=fill)


def crop(image: Image.Image, rng: random.Random) -> Image.Image:
    """Keep 90% of each side at a random offset (the model resizes it back)."""
    w, h = image.size
    cw, ch = max(1, round(0.9 * w)), max(1, round(0.9 * h))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return image.crop((left, top, left + cw, top + ch))


def jpeg(image: Image.Image, rng: random.Random) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=30)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


IMAGE: dict[str, tuple[Callable, str]] = {
    "darker": (darker, "brightness x0.6"),
    "brighter": (brighter, "brightness x1.4"),
    "lower_contrast": (lower_contrast, "contrast x0.6"),
    "blur": (blur, "Gaussian blur, radius 1% of the image side"),
    "noise": (noise, "Gaussian noise, sigma 5% of the range"),
    "rotate": (rotate, "rotation by 5 degrees, either way"),
    "crop": (crop, "crop to 90% of each side, random offset"),
    "jpeg": (jpeg, "JPEG compression, quality 30"),
}


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double a letter


def typos(text: str, rng: random.Random) -> str:
    """One typo in about 1 word of 10 (words of 4 letters or more)."""
    return " ".join(_typo(w, rng) if len(w) >= 4 and rng.random() < 0.1 else w for w in text.split(" "))


def lower(text: str, rng: random.Random) -> str:
    return text.lower()


def upper(text: str, rng: random.Random) -> str:
    return text.upper()


def truncate(text: str, rng: random.Random) -> str:
    words = text.split()
    return " ".join(words[:max(1, len(words) // 2)])


def first_sentence(text: str, rng: random.Random) -> str:
    stripped = text.strip()
    cut = min((i for i in (stripped.find(". "), stripped.find("\n")) if i > 0), default=len(stripped))
    return stripped[:cut + 1]


TEXT: dict[str, tuple[Callable, str]] = {
    "typos": (typos, "a typo (swap, drop or double a letter) in about 1 word of 10"),
    "lowercase": (lower, "all lower case"),
    "uppercase": (upper, "all upper case"),
    "truncate_half": (truncate, "only the first half of the words"),
    "first_sentence": (first_sentence, "only the first sentence or line"),
}


def perturbations(modality: str) -> dict[str, tuple[Callable, str]]:
    return IMAGE if modality == "image" else TEXT


def apply(name: str, modality: str, inputs: list, seed: int, offset: int = 0) -> list:
    """Perturbed copies of `inputs` (images are opened from their paths); example i uses seed (seed, name, i). A
    text the perturbation leaves empty (its first half was zero-width characters) stays as it was."""
    from headstart.data.images import open_rgb
    from headstart.data.validate import visible

    function = perturbations(modality)[name][0]
    out = []
    for i, item in enumerate(inputs):
        rng = random.Random(f"{seed}:{name}:{offset + i}")
        if modality == "image":
            out.append(function(open_rgb(item), rng))
        else:
            text = function(item, rng)
            out.append(text if visible(text) else item)
    return out
