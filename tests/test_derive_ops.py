"""The operations of derived targets, on real images (issue 11's acceptance): fit modes as sharp
defines them, matte, trim, determinism, and a sheet whose atlas rectangles hold exactly each
frame's pixels."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from conftest import Project
from imgbuild.derive import DeriveError
from imgbuild.derive.ops import derive_one

WIDE = (1536, 1024)  # a generation's landscape size: not square, so every fit mode differs


def _png(size: tuple[int, int], color: tuple[int, ...] = (200, 40, 40, 255), mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color[: len(mode)]).save(buf, "PNG")
    return buf.getvalue()


def _derive(data: bytes, **params: Any) -> Image.Image:
    params.setdefault("output_format", "png")
    out = Image.open(io.BytesIO(derive_one(data, {"derive": "from", **params}, "art/in.png")))
    out.load()
    return out


@pytest.mark.parametrize(("fit", "size"), [
    ("cover", (800, 800)), ("contain", (800, 800)), ("fill", (800, 800)), ("inside", (800, 533)),
])
def test_every_fit_mode_gives_the_documented_size_on_a_wide_input(fit: str, size: tuple[int, int]) -> None:
    assert _derive(_png(WIDE), resize="800x800", fit=fit).size == size


@pytest.mark.parametrize(("resize", "size"), [("640x", (640, 427)), ("x100", (150, 100)), ("1x", (1, 1))])
def test_one_edge_keeps_the_aspect_ratio_rounded_to_the_nearest_pixel(resize: str, size: tuple[int, int]) -> None:
    assert _derive(_png(WIDE), resize=resize).size == size


def test_cover_keeps_the_centre_and_cuts_the_sides() -> None:
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))  # the middle third is blue
    buf = io.BytesIO()
    img.save(buf, "PNG")

    out = _derive(buf.getvalue(), resize="50x50", fit="cover")

    for x in (0, 49):  # blue to the edges (Lanczos lends the outermost pixels a trace of red)
        r, _, b = out.getpixel((x, 25))[:3]
        assert b > 220 and r < 30


def test_contain_pads_transparent_where_the_output_keeps_transparency() -> None:
    out = _derive(_png(WIDE, mode="RGB", color=(10, 20, 30)), resize="100x100", fit="contain")

    assert out.mode == "RGBA"
    assert out.getpixel((50, 0))[3] == 0 and out.getpixel((50, 50)) == (10, 20, 30, 255)


def test_contain_into_jpeg_pads_with_the_matte() -> None:
    out = _derive(_png(WIDE, mode="RGB", color=(10, 20, 30)), resize="100x100", fit="contain",
                  output_format="jpeg", output_compression=100, matte="#00ff00")

    r, g, b = out.getpixel((50, 1))
    assert r < 8 and g > 247 and b < 8


def test_a_transparent_png_written_as_jpeg_takes_the_matte() -> None:
    out = _derive(_png((64, 64), color=(0, 0, 0, 0)), output_format="jpeg", output_compression=100,
                  matte="#3366cc")

    assert out.format == "JPEG" and out.mode == "RGB"
    assert all(abs(a - b) <= 2 for a, b in zip(out.getpixel((32, 32)), (0x33, 0x66, 0xCC)))


def test_trim_cuts_to_the_opaque_pixels_then_pads_them() -> None:
    img = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (30, 20, 50, 60))  # a 20x40 opaque box
    buf = io.BytesIO()
    img.save(buf, "PNG")

    out = _derive(buf.getvalue(), trim=True, padding=3)

    assert out.size == (26, 46)
    assert out.getpixel((0, 0))[3] == 0 and out.getpixel((3, 3)) == (255, 0, 0, 255)


def test_a_crop_outside_the_image_names_its_real_size() -> None:
    with pytest.raises(DeriveError, match=r"crop \[0, 0, 2000, 10\] reaches outside art/in.png, which is 1536x1024"):
        _derive(_png(WIDE), crop="0,0,2000,10")


def test_a_trim_of_a_fully_transparent_image_names_its_real_size() -> None:
    with pytest.raises(DeriveError, match=r"art/in.png \(40x30\) is transparent"):
        _derive(_png((40, 30), color=(0, 0, 0, 0)), trim=True, padding=0)


@pytest.mark.parametrize("params", [
    {"derive": "from", "output_format": "png"},
    {"derive": "from", "resize": "32x", "output_format": "webp", "output_compression": 80},
    {"derive": "from", "crop": "0,0,8,8", "output_format": "jpeg", "output_compression": 90, "matte": "#ffffff"},
], ids=["png", "webp", "jpeg"])
def test_the_output_has_no_metadata_and_the_same_bytes_every_time(params: dict[str, Any]) -> None:
    img = Image.new("RGB", (64, 64), (1, 2, 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", icc_profile=b"\0" * 128, dpi=(300, 300))

    first, second = derive_one(buf.getvalue(), params, "a"), derive_one(buf.getvalue(), params, "a")

    assert first == second
    out = Image.open(io.BytesIO(first))
    assert "icc_profile" not in out.info and "dpi" not in out.info and "exif" not in out.info


def test_each_atlas_rectangle_holds_exactly_its_source_images_pixels(project: Project) -> None:
    sizes = {"frames/a.png": (40, 30), "frames/b.png": (17, 50), "frames/c.png": (64, 64), "frames/d.png": (5, 9)}
    for i, (rel, size) in enumerate(sizes.items()):
        img = Image.effect_noise(size, 60 + i).convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize(size))  # alpha from 0 to 255: kept as it is
        (project.root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(project.root / rel)
    project.manifest("""
        [images.pack]
        sheet = ["frames/a.png", "frames/b.png", "frames/c.png", "frames/d.png"]
        columns = 3
        padding = 2
        output = "game/pack.png"
        """)

    assert project.build().code == 0
    sheet = Image.open(project.root / "game/pack.png")
    atlas = json.loads(project.read("game/pack.json"))

    assert sheet.mode == "RGBA" and atlas["meta"]["size"] == {"w": sheet.width, "h": sheet.height}
    assert atlas["meta"]["image"] == "pack.png" and atlas["meta"]["format"] == "RGBA8888"
    for rel in sizes:
        name = rel.split("/")[1][:-4]
        entry = atlas["frames"][name]
        r = entry["frame"]
        assert (entry["rotated"], entry["trimmed"]) == (False, False)
        assert entry["sourceSize"] == {"w": r["w"], "h": r["h"]}
        cut = sheet.crop((r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]))
        assert cut.tobytes() == Image.open(project.root / rel).convert("RGBA").tobytes(), name
