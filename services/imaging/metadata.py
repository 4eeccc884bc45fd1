"""Metadata carried from an input to its output on request (``keep_metadata``): EXIF
with its orientation reset (the pixels are already turned) and its dimensions set to
the output's, the ICC profile, and XMP. Written into the encoded output's own container
(JPEG segments, PNG chunks, WEBP chunks) without encoding the pixels again, so the fast
encoders stay fast. Stripping is the default: EXIF can carry a location.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from services.errors import InvalidParameter

ORIENTATION, IMAGE_WIDTH, IMAGE_LENGTH = 0x0112, 0x0100, 0x0101
EXIF_IFD, PIXEL_X, PIXEL_Y = 0x8769, 0xA002, 0xA003
EXIF_HEADER = b"Exif\x00\x00"
XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
ICC_JPEG = b"ICC_PROFILE\x00"
ICC_CHUNK = 65519  # a JPEG segment's room for profile bytes
FORMATS = ("jpeg", "png", "webp")


@dataclass(frozen=True)
class Metadata:
    """What an input carried: EXIF (a TIFF structure), ICC profile, XMP packet."""

    exif: Image.Exif | None = None
    icc: bytes | None = None
    xmp: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.exif or self.icc or self.xmp)


def read_metadata(data: bytes) -> Metadata:
    """The input's metadata, read from its header (the pixels are not decoded; the
    caller has already decoded and checked the image)."""
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
        icc = image.info.get("icc_profile")
        return Metadata(
            exif if len(exif) else None,
            bytes(icc) if icc else None,
            xmp.encode() if isinstance(xmp, str) else (bytes(xmp) if xmp else None),
        )


def check_format(fmt: str) -> None:
    """Refuse up front an output format whose container this module does not write."""
    if fmt not in FORMATS:
        raise InvalidParameter(f"keep_metadata: {fmt} output keeps no metadata here; ask for "
                               "jpeg, png or webp", param="keep_metadata")  # fmt: skip


def attach(encoded: bytes, fmt: str, metadata: Metadata, size: tuple[int, int]) -> bytes:
    """``encoded`` (an image of ``size``) with ``metadata`` written into its container."""
    if not metadata:
        return encoded
    check_format(fmt)
    exif = _exif_for(metadata.exif, size) if metadata.exif is not None else None
    if fmt == "jpeg":
        return _jpeg(encoded, exif, metadata.icc, metadata.xmp)
    if fmt == "png":
        return _png(encoded, exif, metadata.icc, metadata.xmp)
    return _webp(encoded, exif, metadata.icc, metadata.xmp, size)


def _exif_for(source: Image.Exif, size: tuple[int, int]) -> bytes:
    """The EXIF as TIFF bytes, upright and of the output's size."""
    exif = Image.Exif()
    exif.load(source.tobytes())  # a copy: the caller's stays as read
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    for tag, value in ((IMAGE_WIDTH, size[0]), (IMAGE_LENGTH, size[1])):
        if tag in exif:
            exif[tag] = value
    details = exif.get_ifd(EXIF_IFD)
    if details:
        details[PIXEL_X], details[PIXEL_Y] = size
    return exif.tobytes().removeprefix(EXIF_HEADER)


def _jpeg(data: bytes, exif: bytes | None, icc: bytes | None, xmp: bytes | None) -> bytes:
    """APP1 (EXIF, then XMP) and APP2 (ICC, in numbered parts) after SOI and JFIF."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    cut = 2
    if data[2:4] == b"\xff\xe0":  # keep JFIF's APP0 first, as readers expect
        cut = 4 + struct.unpack(">H", data[4:6])[0]
    segments = []
    if exif:
        segments.append(_segment(0xE1, EXIF_HEADER + exif))
    if xmp:
        segments.append(_segment(0xE1, XMP_JPEG + xmp))
    if icc:
        parts = [icc[i : i + ICC_CHUNK] for i in range(0, len(icc), ICC_CHUNK)]
        segments += [_segment(0xE2, ICC_JPEG + bytes([n + 1, len(parts)]) + part)
                     for n, part in enumerate(parts)]  # fmt: skip
    return data[:cut] + b"".join(segments) + data[cut:]


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise InvalidParameter("keep_metadata: the input's EXIF or XMP is over 64 kB, more "
                               "than a JPEG segment holds; ask for png or webp")  # fmt: skip
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _png(data: bytes, exif: bytes | None, icc: bytes | None, xmp: bytes | None) -> bytes:
    """iCCP, eXIf and an XMP iTXt chunk right after IHDR (all before the pixels)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    cut = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4  # signature, then IHDR
    chunks = []
    if icc:
        chunks.append(_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append(_chunk(b"eXIf", exif))
    if xmp:
        chunks.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
    return data[:cut] + b"".join(chunks) + data[cut:]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _webp(
    data: bytes, exif: bytes | None, icc: bytes | None, xmp: bytes | None,
    size: tuple[int, int],
) -> bytes:  # fmt: skip
    """The extended format: VP8X (with the ICC, EXIF, XMP flags), ICCP, the image
    chunks, EXIF, XMP; a simple file (VP8 or VP8L alone) is turned extended first."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WEBP")
    chunks = _riff_chunks(data[12:])
    if chunks[0][0] == b"VP8X":
        header = bytearray(chunks.pop(0)[1])
    else:
        header = bytearray(10)
        header[4:7] = (size[0] - 1).to_bytes(3, "little")
        header[7:10] = (size[1] - 1).to_bytes(3, "little")
        if chunks[0][0] == b"VP8L" and (int.from_bytes(chunks[0][1][1:5], "little") >> 28) & 1:
            header[0] |= 0x10  # alpha
    header[0] |= (0x20 if icc else 0) | (0x08 if exif else 0) | (0x04 if xmp else 0)
    kept = [(kind, body) for kind, body in chunks if kind not in (b"ICCP", b"EXIF", b"XMP ")]
    body = _riff_chunk(b"VP8X", bytes(header))
    body += _riff_chunk(b"ICCP", icc) if icc else b""
    body += b"".join(_riff_chunk(kind, payload) for kind, payload in kept)
    body += _riff_chunk(b"EXIF", exif) if exif else b""
    body += _riff_chunk(b"XMP ", xmp) if xmp else b""
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 0
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        (length,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length + (length & 1)
    return chunks


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")
