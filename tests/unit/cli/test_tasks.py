"""The task commands' reading of their arguments, as cp reads its own: IN OUT writes OUT
(an existing one too), IN... DIR writes into a folder, several inputs need a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.client import ClientError
from services.cli.main import main
from services.cli.tasks import output_path, split_destination


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / name for name in ("a.png", "b.png", "c.png")]
    for path in paths:
        path.write_bytes(b"\x89PNG")
    return paths


def test_in_out_names_the_output_even_when_it_exists(images: list[Path]) -> None:
    sources, output = split_destination(images[:2], None)
    assert sources == [images[0]] and output == images[1]  # replaced, as cp does
    assert output_path(images[0], output, 1, "upscaled", ".png") == images[1]


def test_several_inputs_go_into_a_folder(images: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    sources, output = split_destination([*images, folder], None)
    assert sources == images and output == folder
    assert output_path(images[2], folder, 3, "denoised", ".webp") == folder / "c.denoised.webp"
    with pytest.raises(ClientError, match=r"target '.*c\.png' is not a directory"):
        split_destination(images, None)  # nothing is overwritten


def test_a_lone_input_writes_beside_it_and_o_wins(images: list[Path], tmp_path: Path) -> None:
    assert split_destination(images[:1], None) == (images[:1], None)
    assert output_path(images[0], None, 1, "upscaled", ".jpg") == tmp_path / "a.upscaled.jpg"
    assert split_destination(images[:2], tmp_path / "o") == (images[:2], tmp_path / "o")
    with pytest.raises(ClientError, match="no such file"):
        split_destination([tmp_path / "nope.png"], None)


def test_every_task_has_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    commands = capsys.readouterr().out
    for name in ("upscale", "denoise", "convert", "restore-face", "caption", "run",
                 "generate", "submit", "status", "mesh"):  # fmt: skip
        assert f"    {name} " in commands or f"    {name}\n" in commands, name


def test_an_unknown_option_exits_2(capsys: pytest.CaptureFixture[str], images: list[Path]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["denoise", str(images[0]), "--scale", "2"])
    assert exited.value.code == 2 and "unrecognized arguments: --scale" in capsys.readouterr().err
