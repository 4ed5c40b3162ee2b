"""The layout of a safetensors file, checked before a byte of it is mapped.

Serving memory-maps an artifact's weights instead of copying them, so the file is checked
against the format here first: a truncated file, a header that is not JSON, a tensor that is
not F32 or offsets outside the file raise ValueError with the reason, never a crash later.
"""

from __future__ import annotations

import json
from typing import BinaryIO

import numpy as np


class UnsupportedTensor(ValueError):
    """A well-formed tensor of a dtype an artifact does not hold."""


#: The only dtype an artifact holds: little-endian float32, safetensors' "F32".
SAFETENSORS_F32 = np.dtype("<f4")
#: The safetensors library refuses headers larger than this; so do we.
SAFETENSORS_MAX_HEADER = 100_000_000


def safetensors_layout(handle: BinaryIO, size: int) -> dict[str, tuple[tuple[int, ...], int, int]]:
    """{name: (shape, first byte, end byte)} of every tensor, byte positions within the file.

    Per the safetensors format: 8 bytes, the header's length N as a little-endian u64; N bytes
    of UTF-8 JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
    (plus an optional "__metadata__"); then the data, offsets relative to its start. The
    tensors must cover the data exactly, without holes or overlaps.
    """

    if size < 8:
        raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
    header_length = int.from_bytes(handle.read(8), "little")
    if header_length > min(size - 8, SAFETENSORS_MAX_HEADER):
        raise ValueError(f"header length {header_length:,} exceeds the file's {size:,} bytes: truncated?")
    try:
        header = json.loads(handle.read(header_length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    data_start, data_size = 8 + header_length, size - 8 - header_length
    layout: dict[str, tuple[tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        shape, begin, end = _tensor_entry(entry)
        if shape is None:
            raise ValueError(f"tensor {name!r} has no valid dtype, shape and data_offsets")
        if entry["dtype"] != "F32":
            raise UnsupportedTensor(f"tensor {name!r} has dtype {entry['dtype']}; only F32 is supported")
        needed = SAFETENSORS_F32.itemsize
        for dimension in shape:
            needed *= dimension
        if end - begin != needed:
            raise ValueError(f"tensor {name!r} spans {end - begin:,} bytes, shape {shape} needs {needed:,}")
        if end > data_size:
            raise ValueError(
                f"tensor {name!r} ends at data byte {end:,}, the file holds {data_size:,}: truncated?"
            )
        layout[name] = (shape, data_start + begin, data_start + end)
    covered = 0
    for _, begin, end in sorted(layout.values(), key=lambda item: (item[1], item[2])):
        if begin != data_start + covered:
            raise ValueError("tensors overlap or leave holes in the data")
        covered = end - data_start
    if covered != data_size:
        raise ValueError(f"tensors cover {covered:,} of the {data_size:,} data bytes")
    return layout


def _tensor_entry(entry: object) -> tuple[tuple[int, ...] | None, int, int]:
    """(shape, begin, end) of one header entry; shape None when the entry is malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return None, 0, 0
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    integers = (
        isinstance(shape, list)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, *offsets])
    )
    if not integers or offsets[0] > offsets[1]:
        return None, 0, 0
    return tuple(shape), offsets[0], offsets[1]
