"""Image headers read without Pillow must say what Pillow says, and the placeholder's own PNG
writer must write what Pillow decodes back to the very pixels drawn."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from imgbuild.images import ImageInfo, _plain_png, image_info, pillow_info
from imgbuild.providers.placeholder import _write_png


def _pngs(folder: Path) -> list[Path]:
    made = []
    for mode in ("RGB", "RGBA", "L", "LA", "P", "I;16", "1"):
        path = folder / f"{mode.replace(';', '')}.png"
        Image.new(mode, (7, 5)).save(path)
        made.append(path)
    Image.new("RGB", (4, 4)).save(folder / "trns.png", transparency=(0, 0, 0))
    Image.new("RGBA", (9, 3)).save(folder / "interlaced.png", interlace=1)
    for mode in ("RGB", "RGBA"):
        path = folder / f"ours-{mode}.png"
        _write_png(Image.new(mode, (33, 17), (10, 20, 30, 40)[:len(mode)]), path)
        made.append(path)
    return [*made, folder / "trns.png", folder / "interlaced.png"]


def _answer(read, path: Path) -> ImageInfo | str:
    try:
        return read(path)
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_the_quick_png_header_reader_says_what_pillow_says_of_every_mutated_header(tmp_path: Path) -> None:
    rng = random.Random(20261202)
    read_quickly = 0
    for source in _pngs(tmp_path):
        data = source.read_bytes()
        for case in range(60):
            mutated = bytearray(data)
            for _ in range(rng.choice((0, 1, 1, 2))):
                at = rng.randrange(41)  # the bytes the quick reader looks at
                mutated[at] = rng.choice((0, 1, 2, 6, 8, 0x49, 0xFF, rng.randrange(256)))
            path = tmp_path / f"m-{source.stem}-{case}.png"
            path.write_bytes(bytes(mutated))
            if _plain_png(bytes(mutated[:41])) is not None:
                read_quickly += 1
            assert _answer(image_info, path) == _answer(pillow_info, path), (source.name, case)
    assert read_quickly > 50  # the quick reader did answer, for the plain ones


def test_a_placeholder_png_decodes_to_the_pixels_drawn(tmp_path: Path) -> None:
    for mode in ("RGB", "RGBA"):
        drawn = Image.effect_noise((61, 23), 90).convert(mode)
        _write_png(drawn, tmp_path / f"{mode}.png")
        with Image.open(tmp_path / f"{mode}.png") as read:
            assert read.mode == mode and read.tobytes() == drawn.tobytes()


@pytest.mark.parametrize("size", [(1, 1), (1024, 640)])
def test_the_quick_reader_answers_for_the_placeholders_own_pngs(tmp_path: Path, size: tuple[int, int]) -> None:
    _write_png(Image.new("RGB", size), tmp_path / "p.png")
    assert _plain_png((tmp_path / "p.png").read_bytes()[:41]) == ImageInfo("png", size, False)
