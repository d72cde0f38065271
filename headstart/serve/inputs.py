"""Reading the inputs of a /predict request: JSON texts, JSON base64 images, or multipart image uploads.

Every problem is a `BadInput` with a 4xx status and a message that names the input and says what to send; nothing
is predicted or logged for a request that has one. Each input also gets its fingerprint (sha256), a summary (text
length or image size) and a compact sketch for drift detection (see `sketch_text`, `sketch_image`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from headstart.data.validate import visible

SKETCH_SIZE = 32  # text: hashed word buckets; images: a 4x4 RGB thumbnail (48 values)
WORD = re.compile(r"\w+")

MAX_PIXELS = 50 * 10**6  # per image: a small compressed file can decode to gigabytes
MAX_REQUEST_PIXELS = 4 * MAX_PIXELS  # per request: decoding takes about 1 s per 100 million pixels


class BadInput(Exception):
    """A request the service refuses: HTTP `status` and a message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Item:
    """One input, ready for the model, with what the prediction log records about it."""

    value: object                      # a text, or an image file's bytes (decoded again batch by batch)
    fingerprint: str                   # sha256 of the text (UTF-8) or of the image file's bytes
    text_length: int | None = None
    image_size: tuple[int, int] | None = None
    sketch: list[float] = field(default_factory=list)


def sketch_text(text: str) -> list[float]:
    """Word counts hashed into 32 buckets (a stable hash), L2-normalised: a model-independent input embedding."""
    vector = np.zeros(SKETCH_SIZE)
    for word in WORD.findall(text.lower()):
        vector[zlib.crc32(word.encode()) % SKETCH_SIZE] += 1
    norm = np.linalg.norm(vector)
    return [round(float(v), 4) for v in (vector / norm if norm else vector)]


def sketch_image(image) -> list[float]:
    """The image shrunk to 4x4 RGB, values in [0, 1]: a model-independent input embedding."""
    small = np.asarray(image.resize((4, 4)), dtype=np.float64) / 255
    return [round(float(v), 4) for v in small.reshape(-1)]


def text_items(texts, max_inputs: int) -> list[Item]:
    items = []
    for i, text in enumerate(_strings(texts, "texts", max_inputs, "a string")):
        if not visible(text):
            raise BadInput(422, f"texts[{i}] is empty (no visible characters): give some text to classify.")
        try:
            digest = hashlib.sha256(text.encode()).hexdigest()
        except UnicodeEncodeError:  # JSON allows an unpaired surrogate escape such as "\ud800"; UTF-8 does not
            raise BadInput(422, f"texts[{i}] holds an unpaired UTF-16 surrogate: send valid Unicode text.") from None
        items.append(Item(text, digest, text_length=len(text), sketch=sketch_text(text)))
    return items


def image_item(data: bytes, where: str, budget: list[int]) -> Item:
    """The item of one image file, checked by decoding it; `budget`: [pixels the request may still hold]. The
    decoded image is not kept: a request of many large images would hold gigabytes."""
    from PIL import Image

    from headstart.data.images import DECODE_ERRORS, open_file, open_rgb

    try:
        with open_file(data) as probe:  # reads the header only: the size before any decoding
            width, height = probe.size
        if width * height > MAX_PIXELS:
            raise BadInput(413, f"{where} is {width}x{height} pixels; at most {MAX_PIXELS // 10**6} million are "
                                "accepted. Send a smaller image.")
        budget[0] -= width * height
        if budget[0] < 0:
            raise BadInput(413, f"The images up to {where} hold over {MAX_REQUEST_PIXELS // 10**6} million pixels, "
                                "the most accepted in one request. Split the request.")
        image = open_rgb(data)
    except Image.DecompressionBombError:  # Pillow's own limit, above ours: the header declares a huge image
        raise BadInput(413, f"{where} is over {MAX_PIXELS // 10**6} million pixels, the most accepted. Send a "
                            "smaller image.") from None
    except DECODE_ERRORS as exc:
        raise BadInput(422, f"{where} is not a readable image ({type(exc).__name__}: not an image file that can "
                            "be decoded, or one cut short). Send PNG, JPEG, BMP, TIFF, WebP or GIF.") from None
    return Item(data, hashlib.sha256(data).hexdigest(), image_size=image.size, sketch=sketch_image(image))


def base64_items(images, max_inputs: int) -> list[Item]:
    items, budget = [], [MAX_REQUEST_PIXELS]
    for i, encoded in enumerate(_strings(images, "images", max_inputs, "a base64 string")):
        if encoded.startswith("data:") and "," not in encoded:
            raise BadInput(422, f"images[{i}] is a data URL without data: data:image/png;base64,<base64>.")
        payload = encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded  # data URLs too
        try:  # line-wrapped base64 (the base64 command, MIME) too, but no other stray characters
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(422, f"images[{i}] is not valid base64. Encode the image file's bytes with "
                                "base64.") from None
        items.append(image_item(data, f"images[{i}]", budget))
    return items


JSON_KINDS = {bool: "true or false", int: "a number", float: "a number", dict: "an object", list: "a list",
              type(None): "null"}  # what Python reads JSON values as, named as JSON names them


def _strings(values, key: str, max_inputs: int, kind: str) -> list[str]:
    """`values` if it is a list of 1 to `max_inputs` strings."""
    if not isinstance(values, list):
        raise BadInput(422, f'"{key}" must be a list, e.g. {{"{key}": ["...", "..."]}}.')
    if not values:
        raise BadInput(422, f'"{key}" is empty: send at least one input.')
    if len(values) > max_inputs:
        raise BadInput(413, f"{len(values)} inputs in one request; at most {max_inputs} are accepted (--max-inputs). "
                            "Split the request.")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise BadInput(422, f"{key}[{i}] is {JSON_KINDS.get(type(value), 'something else')}, not {kind}.")
    return values


def parse_json(body: bytes, modality: str, max_inputs: int) -> list[Item]:
    """Items of a JSON body: {"texts": [...]} for a text model, {"images": [base64, ...]} for an image model."""
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a number of over 4300 digits
        raise BadInput(400, f"The request body is not valid JSON ({exc}).") from None
    except RecursionError:
        raise BadInput(400, "The request body nests JSON too deeply.") from None
    key, other = ("texts", "images") if modality == "text" else ("images", "texts")
    mixed = isinstance(payload, dict) and payload.get(other) is not None  # the schema allows an explicit null
    if not isinstance(payload, dict) or key not in payload or mixed:
        hint = f" This model classifies {modality}s, not {other}." if mixed else ""
        raise BadInput(422, f'Send a JSON object {{"{key}": [...]}}.{hint}')
    return text_items(payload[key], max_inputs) if key == "texts" else base64_items(payload[key], max_inputs)


async def parse_multipart(request, modality: str, max_inputs: int, max_bytes: int) -> list[Item]:
    """Items of a multipart upload: one image file per part (any field name, `images` by convention)."""
    if modality != "image":
        raise BadInput(422, 'This model classifies texts: send JSON {"texts": [...]} with Content-Type '
                            "application/json.")
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=max_inputs, max_part_size=max_bytes)
    except HTTPException as exc:  # Starlette's parser stops at the first file or part over a limit
        if exc.status_code == 413:  # BodyLimit, counting a body sent without a length
            raise BadInput(413, exc.detail) from None
        if "Too many files" in str(exc.detail):
            raise BadInput(413, f"The multipart upload was refused ({exc.detail}): at most {max_inputs} files "
                                "(--max-inputs) within --max-body-mb are accepted. Split the request.") from None
        raise BadInput(400, f"The multipart upload is malformed: {exc.detail}") from None
    try:
        files = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise BadInput(422, "The multipart upload holds no files: attach each image as a file part (named "
                                "'images' by convention).")
        budget, items = [MAX_REQUEST_PIXELS], []
        for key, upload in files:
            data = await upload.read()
            items.append(await asyncio.to_thread(image_item, data, f"{key} file '{upload.filename}'", budget))
        return items
    finally:
        await form.close()
