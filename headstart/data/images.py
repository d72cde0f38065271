"""Decode image files into tensors, and fingerprint them for the leakage check."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]  # bytes: an image file's contents
# what IMAGE_SUFFIXES name (JPEG covers phones' multi-picture files too); Pillow would open any format it knows, EPS
# through Ghostscript among them
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")

DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, SyntaxError)
FLOAT_SLACK = 1e-3  # resampling leaves floats of a 0..1 image a rounding error outside it


class EmptyFile(ValueError):
    """An image file of 0 bytes."""


def shown_path(path: str | Path) -> str:
    """A path as an error shows it: a blank one said to be blank, not left out of the sentence."""
    return str(path) if str(path).strip() else f"{str(path)!r} (an empty path)"


def why_unreadable(exc: BaseException) -> str:
    """What one of DECODE_ERRORS raised while reading an image file says of the file, for a report naming it."""
    if isinstance(exc, FileNotFoundError):
        return "no such image file"
    if isinstance(exc, EmptyFile):
        return "an empty file (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file that can be decoded"
    if isinstance(exc, Image.DecompressionBombError):
        return (f"too large to decode safely ({exc}); downscale it below {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                "million pixels")
    return f"not a readable image ({type(exc).__name__}: {exc})"


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float images scaled to 8 bits over their own range (PIL would clip them to white)."""
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8))


def _array_eight_bit(array: np.ndarray) -> np.ndarray:
    """uint8 pixels of an array as a file would give them: floats within 0..1 times 255, other values within 0..255
    as they are (`pixels.astype(np.float32)` is the file's image); uint16 colour arrays with values above 255 their
    high byte, as Pillow reads 16-bit colour files; grey uint16 arrays and anything wider (raw sensor values) scaled
    over their own range, as 16-bit grey files are, however dark they are."""
    if array.dtype == np.uint16 and array.ndim == 3:  # 8-bit values in uint16 (`astype`) are read as they are
        return (array >> 8 if array.max() > 255 else array).astype(np.uint8)
    values = array.astype(np.float64)
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if np.issubdtype(array.dtype, np.floating) and -FLOAT_SLACK <= low and high <= 1 + FLOAT_SLACK:
        values = np.clip(values, 0, 1) * 255
    elif array.dtype == np.uint16 or not (0 <= low and high <= 255):
        values = (values - low) * (255 / (high - low)) if high > low else values * 0
    return values.round().astype(np.uint8)


def checked_array(array: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 1 / 3 / 4) array of finite values, a trailing single channel dropped; ValueError else."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or array.size == 0:
        raise ValueError(f"an image array is (height, width) or (height, width, channels) with 1, 3 or 4 channels, "
                         f"not of shape {array.shape} (a channels-first array: array.transpose(1, 2, 0))")
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        raise ValueError(f"an image array holds finite numbers; this one is {array.dtype} with "
                         f"{'non-finite values' if array.dtype.kind == 'f' else 'no numbers'}")
    return array.astype(np.uint8) * 255 if array.dtype == bool else array


# EXIF orientation -> the transpose that shows the stored pixels as viewers do (1: as stored)
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}


def _upright(image: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation, as phones store the sensor's pixels plus a tag. Only the tag is
    read: Pillow's exif_transpose writes the EXIF block back, and fails on a malformed tag elsewhere in it."""
    try:
        method = _ORIENTATIONS.get(image.getexif().get(0x0112))
    except Exception:  # a damaged EXIF block does not make the pixels unreadable
        return image
    return image.transpose(method) if method is not None else image


def open_file(source: str | Path | bytes) -> Image.Image:
    """A lazily decoded image from a path or a file's bytes, in one of `FORMATS`."""
    with warnings.catch_warnings():  # Pillow's warning above 89 million pixels: a large photo is read, not reported
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # (twice the limit is still refused)
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS)


def _on_white(image: Image.Image) -> Image.Image:
    """An image with transparency composited on white, as viewers and Hugging Face's image processors show it: the
    colours stored under transparent pixels are not the picture."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image


def open_eight_bit(image: ImageInput) -> Image.Image:
    """An 8-bit PIL image without transparency from a path, a file's bytes or a PIL image (turned upright by their
    EXIF orientation) or an HxW / HxWxC array (see `_array_eight_bit`)."""
    if isinstance(image, np.ndarray):
        image = checked_array(image)
        return _on_white(_eight_bit(Image.fromarray(image if image.dtype == np.uint8 else _array_eight_bit(image))))
    if isinstance(image, Image.Image):  # Image.open(path) keeps the file's EXIF: upright, as the path would be
        return _on_white(_eight_bit(_upright(image)))
    if not isinstance(image, (str, Path, bytes)):
        raise _not_an_input(image)
    try:
        img = open_file(image)
    except UnidentifiedImageError:  # said apart only once it failed: no stat on the way of every image read
        if len(image) == 0 if isinstance(image, bytes) else Path(image).stat().st_size == 0:
            raise EmptyFile("an empty file") from None
        raise
    with img:
        img.load()
        return _on_white(_eight_bit(_upright(img)))


def check_input(image: ImageInput) -> None:
    """Raise ValueError if `image` cannot be an image, without decoding it: an array's shape and values, the header
    of a file's contents, the type of anything else (a path is checked when it is read)."""
    if isinstance(image, np.ndarray):
        checked_array(image)
    elif isinstance(image, bytes):
        try:
            open_file(image).close()
        except UnidentifiedImageError:  # its message shows the address of a BytesIO
            raise ValueError("its bytes are no PNG, JPEG, BMP, TIFF, WebP or GIF file") from None
    elif not isinstance(image, (str, Path, Image.Image)):
        raise _not_an_input(image)


def _not_an_input(image: object) -> ValueError:
    return ValueError(f"a {type(image).__name__} is not an image input: give a file path, a file's bytes, a PIL "
                      "image or a NumPy array (a tensor: tensor.numpy(), channels last)")


def open_rgb(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, a file's bytes, a PIL image or an array (see `open_eight_bit`)."""
    return open_eight_bit(image).convert("RGB")


def to_tensor(image: ImageInput, size: int) -> torch.Tensor:
    """uint8 tensor (3, size, size), resized with bilinear antialiasing."""
    import torch  # lazily: data checks run before any model is needed

    pil = open_eight_bit(image)
    # grey images are resized before they become RGB: the same pixels, a third of the work
    if pil.mode not in ("L", "RGB"):
        pil = pil.convert("RGB")
    pil = pil.resize((size, size), Image.BILINEAR).convert("RGB")
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def difference_hash(image: Image.Image, side: int = 16) -> bytes:
    """dHash of side*side bits: brightness gradients of a small thumbnail; near-identical pictures differ in few bits.

    16x16 rather than the usual 8x8: 8x8 hashes of distinct solar cells collide (ELPV), 16x16 ones differ in >= 3 bits.
    An image of one flat tone has no gradient, so its hash would match every other flat image's: it gets none (b"").
    """
    small = np.asarray(image.convert("L").resize((side + 1, side), Image.BILINEAR), dtype=np.int16)
    if small.max() - small.min() <= 1:
        return b""
    return np.packbits(small[:, 1:] > small[:, :-1]).tobytes()


def fingerprint(path: str) -> tuple[str, bytes]:
    """(sha1 of the decoded pixels, dHash) of an image file; raises one of DECODE_ERRORS if unreadable."""
    image = open_rgb(path)
    digest = hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()
    return digest, difference_hash(image)
