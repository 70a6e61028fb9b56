"""Encoding numpy arrays as PNG (Pillow when present, else a small built-in encoder) or JPEG (Pillow)."""

from __future__ import annotations

import struct
import zlib
from typing import Any


def _png(arr: Any) -> bytes:
    import numpy as np

    a = np.asarray(arr)
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
        else:
            a = a.astype(np.uint8)
    if a.ndim == 2:
        color = 0
        a = a[:, :, None]
    elif a.ndim == 3 and a.shape[2] in (1, 3, 4):
        color = {1: 0, 3: 2, 4: 6}[a.shape[2]]
    else:
        raise ValueError(f"save_image: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {a.shape}")
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def encode_image(image: Any, to: str) -> bytes:
    ext = to.rsplit(".", 1)[-1].lower() if "." in to else "png"
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if ext == "png":
        return _png(image)
    if ext in ("jpg", "jpeg"):
        try:
            import io

            import numpy as np
            from PIL import Image
        except ImportError:
            raise ImportError("save_image to JPEG needs Pillow: pip install pillow") from None
        a = np.asarray(image)
        if a.dtype.kind == "f":
            a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
        bio = io.BytesIO()
        Image.fromarray(a.squeeze() if a.ndim == 3 and a.shape[2] == 1 else a).save(bio, format="JPEG")
        return bio.getvalue()
    raise ValueError(f"save_image: unsupported image format {ext!r} (use .png, .jpg or .jpeg)")
