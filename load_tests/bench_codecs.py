"""Encoder speed at equal output: the candidates for each output format on one image,
in one run, with the bytes each writes and whether it is lossless where it must be.

JPEG: Pillow (libjpeg-turbo), OpenCV, simplejpeg where installed, all at quality 90
with 4:2:0 subsampling; on CUDA also torchvision's nvjpeg. PNG: fpng (what pixserve
uses for 8-bit RGB/RGBA), zlib levels 1, 3 and 6 through Pillow and OpenCV. WEBP:
Pillow's methods 0, 2, 4 (its default) and 6 at quality 90. Prints a table and writes
JSON; asserts nothing.

    python load_tests/bench_codecs.py --size 2048
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from services.imaging.codec import EncoderOptions, encode_image

Encoder = Callable[[np.ndarray], bytes]


def photo(size: int) -> np.ndarray:
    """The astronaut resized to ``size`` px: an upscaler's smooth, detailed output."""
    from skimage import data

    image = Image.fromarray(np.asarray(data.astronaut())).resize(
        (size, size), Image.Resampling.LANCZOS
    )
    return np.ascontiguousarray(np.asarray(image))


def _pillow(fmt: str, **params: Any) -> Encoder:
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **params)
        return buffer.getvalue()

    return encode


def _opencv(ext: str, params: list[int]) -> Encoder:
    def encode(pixels: np.ndarray) -> bytes:
        ok, data = cv2.imencode(ext, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), params)
        assert ok
        return bytes(data.tobytes())

    return encode


def candidates() -> dict[str, dict[str, Encoder]]:
    """Every encoder to compare, by output format."""
    jpeg: dict[str, Encoder] = {
        "pillow q90 (pixserve on CPU)": lambda p: encode_image(p, "jpeg", 90),
        "opencv q90": _opencv(".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    }
    try:
        import simplejpeg

        jpeg["simplejpeg q90"] = lambda p: bytes(
            simplejpeg.encode_jpeg(p, quality=90, colorspace="RGB", colorsubsampling="420")
        )
    except ImportError:
        pass
    jpeg.update(_nvjpeg())
    png: dict[str, Encoder] = {"fpng (pixserve)": lambda p: encode_image(p, "png")}
    for level in (1, 3, 6):
        png[f"pillow zlib {level}"] = lambda p, lv=level: encode_image(
            p, "png", encoders=EncoderOptions(png_compress_level=lv)
        )
        png[f"opencv zlib {level}"] = _opencv(".png", [cv2.IMWRITE_PNG_COMPRESSION, level])
    webp = {
        f"pillow method {m}" + (" (pixserve default)" if m == 0 else ""): _pillow(
            "WEBP", quality=90, method=m
        )
        for m in (0, 2, 4, 6)
    }
    return {"jpeg": jpeg, "png": png, "webp": webp}


def _nvjpeg() -> dict[str, Encoder]:
    """torchvision's encode_jpeg on a CUDA tensor (what the Upscaler uses on a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    import warnings

    from torchvision.io import encode_jpeg

    def encode(pixels: np.ndarray) -> bytes:
        tensor = torch.from_numpy(pixels).cuda().permute(2, 0, 1).contiguous()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (data,) = encode_jpeg([tensor], quality=90)
        return bytes(data.cpu().numpy().tobytes())

    return {"nvjpeg q90 (pixserve on CUDA, incl. upload)": encode}


def time_encoder(encode: Encoder, pixels: np.ndarray, rounds: int) -> tuple[float, bytes]:
    encode(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(rounds):
        data = encode(pixels)
    return (time.perf_counter() - started) / rounds, data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("var/bench_codecs.json"))
    args = parser.parse_args(argv)
    pixels = photo(args.size)
    results: dict[str, Any] = {"size": args.size, "formats": {}}
    for fmt, encoders in candidates().items():
        rows = results["formats"][fmt] = []
        for name, encode in encoders.items():
            seconds, data = time_encoder(encode, pixels, args.rounds)
            lossless = None
            if fmt == "png":
                lossless = bool(np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels))
            rows.append({"encoder": name, "ms": seconds * 1000, "mb": len(data) / 2**20,
                         "lossless": lossless})  # fmt: skip
            print(f"{fmt:<5} {name:<45} {seconds * 1000:8.1f} ms", flush=True)  # a cut run
    report(results, args.json)
    return results


def report(results: dict[str, Any], path: Path) -> None:
    size = results["size"]
    print(f"\nencoding one {size}x{size} RGB image")
    for fmt, rows in results["formats"].items():
        base = rows[0]["ms"]
        for row in rows:
            note = "" if row["lossless"] in (None, True) else "  NOT LOSSLESS"
            print(f"{fmt:>5} {row['encoder']:<44} {row['ms']:8.1f} ms {row['mb']:6.2f} MiB "
                  f"{row['ms'] / base:5.2f}x{note}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
