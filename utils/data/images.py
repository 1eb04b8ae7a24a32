"""Reading images and masks (spec 1.4).

Images become 3-channel BGR uint8 (grey replicated, alpha dropped, palette expanded, 16-bit reduced to its high
byte, all as ``cv2.imread`` does; a 12-bit image stored as 16-bit is scaled from its own depth, with a warning);
masks become single-channel uint8 in which every non-zero pixel stays non-zero (a 16-bit mask of 0/1 would read
as all zero through ``cv2.imread(path, 0)``). Errors raise :class:`utils.data.records.DatasetError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from utils.data.records import DatasetError

logger = logging.getLogger(__name__)


def _decode(path: Path) -> np.ndarray:
    """Decode an image file as stored (any depth and channels). Raises DatasetError for a missing, empty or
    undecodable file."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"{path} cannot be read ({error.strerror or error}); check that it exists and is "
                           "readable") from error
    if data.size == 0:
        raise DatasetError(f"{path} is empty (0 bytes); replace it with the original file")
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DatasetError(f"{path} is not an image OpenCV can decode ({data.size} bytes); replace it or convert it "
                           "to PNG")
    return array


def _to_uint8(array: np.ndarray, keep_nonzero: bool) -> np.ndarray:
    """Bring any pixel type to uint8: 16-bit keeps its high byte (as ``cv2.imread`` does), floats in [0, 1] are
    scaled by 255, other floats clipped to [0, 255]. With ``keep_nonzero`` (masks), a non-zero pixel never
    becomes 0."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        out = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        out = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    else:
        out = np.clip(array, 0, 255).astype(np.uint8)
    if keep_nonzero:
        out[(out == 0) & (array != 0)] = 1
    return out


def to_bgr_uint8(array: np.ndarray) -> np.ndarray:
    """A decoded image as ``[H, W, 3]`` BGR uint8: grey is replicated, grey+alpha and BGRA lose their alpha.

    This is what the authors' ``cv2.imread(path)`` returns for 8- and 16-bit PNG, JPEG and TIFF files.
    """
    array = _to_uint8(array, keep_nonzero=False)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(array[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    return array


def to_gray_uint8(array: np.ndarray) -> np.ndarray:
    """A decoded mask as ``[H, W]`` uint8 in which every non-zero pixel stays non-zero.

    Grey masks keep their values (what ``cv2.imread(path, 0)`` gives, so the bilinear resize then ``> 0`` matches
    the authors'); a colour mask takes the maximum over its colour channels (alpha ignored), so no coloured
    pixel rounds to 0 as it can in a luminance conversion.
    """
    array = _to_uint8(array, keep_nonzero=True)
    if array.ndim == 3:
        colour = array[:, :, :1] if array.shape[2] <= 2 else array[:, :, :3]
        array = colour.max(axis=2)
    return np.ascontiguousarray(array)


_LOW_DEPTH_WARNED: set = set()


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``[H, W, 3]`` BGR uint8 (see :func:`to_bgr_uint8`). Raises DatasetError naming the file.

    A 16-bit image whose values use fewer bits (a 12-bit radiograph stored as 16-bit PNG, say) would be almost
    black with the high byte alone (what ``cv2.imread`` gives): it is scaled from its own bit depth instead, with
    a warning naming the file (once per file).
    """
    array = _decode(path)
    bits = _used_bits(array)
    if bits is not None:
        if str(path) not in _LOW_DEPTH_WARNED:
            _LOW_DEPTH_WARNED.add(str(path))
            logger.warning("%s is a 16-bit image whose values use %d bits (max %d): scaled by 2^-%d to 8 bits, not "
                           "cut to its high byte, which would be almost black", path, bits, int(array.max()), bits - 8)
        array = (array >> (bits - 8)).astype(np.uint8)
    return to_bgr_uint8(array)


def _used_bits(array: np.ndarray):
    """For a 16-bit array whose high byte would be at most 15 (12 bits or fewer in use), the bits in use (>= 8);
    otherwise None."""
    if array.dtype != np.uint16 or not array.size:
        return None
    top = int(array.max())
    return max(8, top.bit_length()) if top < 1 << 12 else None


def read_mask(path: Path) -> np.ndarray:
    """Read a mask as ``[H, W]`` uint8, non-zero = foreground (see :func:`to_gray_uint8`). Raises DatasetError."""
    return to_gray_uint8(_decode(path))
