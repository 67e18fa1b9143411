"""One image file to an 8-bit greyscale or RGB picture, whatever mode and bit depth it was saved in.

Pillow's ``convert`` is right for most modes but not all: it clips 16-bit greyscale to 255
(a 16-bit PNG becomes a white square) and drops alpha, leaving whatever colour the encoder
kept under transparent pixels. Those cases are converted here; a file that cannot be decoded
is refused with one sentence that names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gan_lightning.errors import DataError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Transparent pixels become this colour, the page an image viewer shows them on.
BACKGROUND = (255, 255, 255)


def read_image(path: Path, channels: int) -> Image.Image:
    """The image at ``path`` as mode ``L`` (channels 1) or ``RGB`` (channels 3), 8 bits a channel.

    Raises:
        DataError: the file is not a readable image, or its pixels have no 8-bit meaning.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decodes now, so a truncated file fails here and not in a transform
            picture = _to_8bit(image, path)
            return picture.convert("L" if channels == 1 else "RGB")
    except DataError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"The image file {path} (under --data.root) is unreadable ({reason}); remove or replace it.") from err


def _to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """``image`` in a mode whose ``convert("L")`` and ``convert("RGB")`` keep its look."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _scale_16bit(np.asarray(image), path, mode)
    if mode == "F":
        raise DataError(f"The image file {path} (under --data.root) holds floating-point pixels (mode F), whose range is unknown; save it as an 8- or 16-bit image.")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


def _scale_16bit(pixels: np.ndarray, path: Path, mode: str) -> Image.Image:
    # Mode I is how Pillow opens some 16-bit PNGs too; values outside 16 bits have no 8-bit meaning.
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(
            f"The image file {path} (under --data.root) holds 32-bit integer pixels ({pixels.min()} to {pixels.max()}), "
            "outside the 0 to 65535 of a 16-bit image; save it as an 8- or 16-bit image."
        )
    # 65535 / 257 = 255: the full 16-bit range onto the full 8-bit range.
    return Image.fromarray(np.round(pixels.astype(np.float64) / 257).astype(np.uint8))
