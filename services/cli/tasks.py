"""``pixserve upscale|denoise|convert|restore-face|detect-faces|caption|mesh|run|generate``:
every sync task of the API from the shell. Files in, files out, as ``cp`` takes them: ``IN
OUT`` writes OUT (replacing it), ``IN... DIR`` writes into a folder, a lone ``IN``
writes beside it (``a.upscaled.png``). The same tasks run as jobs with ``submit``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cli.client import ClientError, PixserveClient
from services.cli.progress import ProgressBar
from services.config import Settings

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
              "image/avif": ".avif", "application/json": ".json", "model/gltf-binary": ".glb",
              "application/zip": ".zip", "model/x-ply": ".ply"}  # fmt: skip
IMAGE_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class Option:
    """A command-line flag and the form field it fills (None values are not sent)."""

    flag: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    repeat: bool = False
    switch: bool = False  # a boolean flag: sends ``sends`` to ``to`` when given
    sends: str = "true"
    to: str | None = None  # the form field, when it is not the flag's name

    @property
    def field(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def form_field(self) -> str:
        return self.to or self.field


@dataclass(frozen=True)
class TaskCommand:
    """One sync route as a command: its path, its options, and the name its outputs get
    (``a.<suffix>.png``)."""

    name: str
    path: str
    help: str
    suffix: str
    options: tuple[Option, ...] = ()


KEEP = Option("--keep-metadata", "keep the input's EXIF, ICC and XMP", switch=True)
ENCODING = (
    Option("--format", "output format", choices=IMAGE_FORMATS),
    Option("--quality", "JPEG/WEBP quality 1-100", int),
)
COMMANDS = (
    TaskCommand("upscale", "/v1/upscale", "upscale images (Real-ESRGAN)", "upscaled", (
        Option("--model", "model name (see `pixserve models list`)"),
        Option("--scale", "output scale, e.g. 2.5", float),
        Option("--width", "target width in px", int),
        Option("--height", "target height in px", int), *ENCODING, KEEP)),
    TaskCommand("denoise", "/v1/denoise", "denoise images (SCUNet, DnCNN, FFDNet)", "denoised", (
        Option("--model", "a denoise model"),
        Option("--noise-level", "FFDNet: the noise's sigma on 0-255 (0-75)", float),
        *ENCODING, KEEP)),
    TaskCommand("convert", "/v1/convert", "convert, resize or shrink images", "converted", (
        Option("--format", "output format", choices=("jpeg", "png", "webp", "avif")),
        Option("--quality", "quality 1-100", int),
        Option("--resize", "fit, fill or scale", choices=("fit", "fill", "scale")),
        Option("--width", "px", int), Option("--height", "px", int),
        Option("--scale", "factor (--resize scale)", float),
        Option("--max-bytes", "the best quality within this size", int),
        Option("--keep-metadata", "keep EXIF", switch=True))),
    TaskCommand("restore-face", "/v1/restore/face", "restore faces (GFPGAN, CodeFormer)",
                "restored", (
        Option("--model", "a face model"), Option("--detector", "a face detector"),
        Option("--weight", "0-1 blend of restored and original", float),
        Option("--fidelity", "CodeFormer: 0 quality, 1 faithful", float),
        Option("--upscale", "1-4, the background through --background-model", int),
        Option("--background-model", "an upscale model"),
        Option("--only-center-face", "restore the face nearest the centre", switch=True),
        Option("--max-faces", "at most this many faces", int), *ENCODING, KEEP)),
    TaskCommand("detect-faces", "/v1/detect/faces", "find faces: boxes, scores, landmarks",
                "faces", (
        Option("--detector", "a face detector"),
        Option("--min-score", "leave out faces scored under it (0-1)", float),)),
    TaskCommand("caption", "/v1/caption", "caption, tag and NSFW-score images", "caption", (
        Option("--outputs", "caption, tags or nsfw (repeatable; default all)",
               choices=("caption", "tags", "nsfw"), repeat=True),)),
    TaskCommand("mesh", "/v1/mesh", "turn images into 3D meshes (relief, TripoSR)", "mesh", (
        Option("--engine", "relief (fast, depth) or triposr (a whole object)",
               choices=("relief", "triposr")),
        Option("--model", "the engine's model"),
        Option("--resolution", "grid: marching cubes edge or relief's longer side", int),
        Option("--max-faces", "face budget", int),
        Option("--format", "mesh file", choices=("glb", "obj", "ply")),
        Option("--relief-depth", "relief: height as a share of the width", float),
        Option("--keep-background", "mesh the whole photo, background and all",
               switch=True, sends="false", to="remove_background"))),
)  # fmt: skip
PRESET = (
    Option("--format", "output format", choices=(*IMAGE_FORMATS, "avif")),
    Option("--quality", "quality 1-100", int),
    KEEP,
)
GENERATE = (
    Option("--negative-prompt", "what to avoid"),
    Option("--checkpoint", "a checkpoint alias (realism, anime...)"),
    Option("--width", "multiple of 8", int), Option("--height", "multiple of 8", int),
    Option("--steps", "denoising steps", int), Option("--guidance", "CFG scale", float),
    Option("--scheduler", "euler, euler_a, dpmpp_2m, lightning..."),
    Option("--seed", "the same seed, the same image", int),
    Option("--strength", "image-to-image: how far to go (0-1]", float), *ENCODING,
)  # fmt: skip


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for command in COMMANDS:
        parser = commands.add_parser(command.name, help=command.help)
        _add_files(parser)
        add_options(parser, command.options)
        parser.set_defaults(handler=run_files, task=command)
    preset = commands.add_parser("run", help="run a preset on images (GET /v1/presets)")
    preset.add_argument("preset", help="the preset's name")
    _add_files(preset)
    preset.add_argument("--params", help='step overrides as JSON: {"upscale": {"scale": 4}}')
    add_options(preset, PRESET)
    preset.set_defaults(handler=run_files, task=None)
    generate = commands.add_parser("generate", help="draw an image from a prompt (SDXL)")
    generate.add_argument("prompt")
    generate.add_argument("output", nargs="?", type=Path, help="default: generated.png")
    generate.add_argument("--image", type=Path, help="a start image: image-to-image")
    add_options(generate, GENERATE)
    generate.set_defaults(handler=generate_image)


def _add_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IN [OUT]",
                        help="image files; as with cp, IN OUT writes OUT, IN... DIR writes "
                             "into DIR, a lone IN writes beside it")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    """The options as flags, and ``--url``."""
    for option in options:
        if option.switch:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, choices=option.choices,
                                action="append" if option.repeat else "store",
                                help=option.help)  # fmt: skip
    parser.add_argument("--url", help="API base URL (default: PIXSERVE_API_URL)")


def form_of(args: argparse.Namespace, options: tuple[Option, ...]) -> dict[str, Any]:
    """The options given, as the route's form fields."""
    form: dict[str, Any] = {}
    for option in options:
        value = getattr(args, option.field)
        if option.switch and value:
            form[option.form_field] = option.sends
        elif value is not None and not option.switch:
            form[option.form_field] = [str(v) for v in value] if option.repeat else str(value)
    return form


def run_files(args: argparse.Namespace, settings: Settings) -> int:
    """Run the task on every input; report each failure, exit 1 if any failed."""
    command: TaskCommand | None = args.task
    if command is None:  # a preset
        path, suffix = f"/v1/run/{args.preset}", args.preset
        form = form_of(args, (*PRESET, Option("--params", "")))
    else:
        path, suffix, form = command.path, command.suffix, form_of(args, command.options)
    sources, output = split_destination(args.inputs, args.output)
    client = client_for(args, settings)
    bar = ProgressBar(len(sources))
    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        futures = {pool.submit(_run_one, client, path, form, src, output, len(sources),
                               suffix): src for src in sources}  # fmt: skip
        for future in as_completed(futures):
            written, error = future.result()
            if error:
                failures += 1
                print(f"\nerror: {futures[future]}: {error}", file=sys.stderr)
            else:
                bar.write(f"{futures[future]} -> {written}")
            bar.advance(ok=error is None)
    bar.close()
    return 1 if failures else 0


def split_destination(inputs: list[Path], output: Path | None) -> tuple[list[Path], Path | None]:
    """cp's reading of the arguments: with two or more and no ``-o``, the last is the
    destination (a folder when it is one or when more than one input comes first)."""
    sources = list(inputs)
    if output is None and len(sources) >= 2:
        output = sources.pop()
        if len(sources) > 1 and not output.is_dir():
            raise ClientError("invalid_parameter", f"target '{output}' is not a directory "
                              "(several inputs go into a folder, as with cp)")  # fmt: skip
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise ClientError("not_found", f"no such file: {', '.join(missing)}")
    return sources, output


def output_path(source: Path, output: Path | None, count: int, suffix: str, ext: str) -> Path:
    """Where a result goes: ``output`` itself for one input (unless it is a folder),
    else ``<stem>.<suffix><ext>`` in ``output`` or beside the source."""
    if output is not None and count == 1 and not output.is_dir():
        return output
    name = f"{source.stem}.{suffix}{ext}"
    return (output or source.parent) / name


def _run_one(
    client: PixserveClient, path: str, form: dict[str, Any], source: Path, output: Path | None,
    count: int, suffix: str,
) -> tuple[Path | None, str | None]:  # fmt: skip
    try:
        data, media_type = client.run(path, source, form)
    except ClientError as exc:
        return None, str(exc)
    target = output_path(source, output, count, suffix, EXTENSIONS.get(media_type, ".bin"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if media_type == "application/json" and output is None and count == 1:
        print(json.dumps(json.loads(data)))  # a lone caption or faces: shown as well as saved
    return target, None


def generate_image(args: argparse.Namespace, settings: Settings) -> int:
    """One image from the prompt (image-to-image with ``--image``); says its seed."""
    form = form_of(args, GENERATE) | {"prompt": args.prompt}
    client = client_for(args, settings)
    data, media_type, headers = client.generate(form, args.image)
    target = args.output or Path(f"generated{EXTENSIONS.get(media_type, '.png')}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    blacked = headers.get("x-pixserve-nsfw") == "true"
    note = " (blacked out by the safety checker)" if blacked else ""
    print(f"{target}: seed {headers.get('x-pixserve-seed')}{note}")
    return 0


def client_for(
    args: argparse.Namespace, settings: Settings, timeout_s: float = 600.0
) -> PixserveClient:
    """The REST client for a command: ``--url`` or PIXSERVE_API_URL, with the API key."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return PixserveClient(args.url or settings.api_url, timeout_s, key)
