"""The CLI's listings stay in line whatever the length of a cell."""

from __future__ import annotations

from services.cli.tables import table


def test_columns_fit_their_widest_cell_and_numbers_align_right() -> None:
    text = table(["NAME", "TASK", "SIZE"],
                 [["a-very-long-model-name-x4", "upscale", "33.5 MB"], ["x2", "face", "-"]],
                 right=frozenset({2}))  # fmt: skip
    assert text.splitlines() == [
        "NAME                       TASK        SIZE",
        "a-very-long-model-name-x4  upscale  33.5 MB",
        "x2                         face           -",
    ]
