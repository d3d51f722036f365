"""The manifest (SPEC §1): every mistake reported at once with its place, exit 2, nothing written."""

from __future__ import annotations

import json

from conftest import Project

MISTAKES = {
    # where → a fragment of the message
    "bogus": "unknown field",
    "out_dir": "outside the project folder",
    "defaults.quality": "'ultra'",
    "defaults.prompt": "unknown field",
    "images.a.prompt": "${nope} is not defined",
    "images.a2.size": "1000x1000 is not a multiple of 16",
    "images.b": "give one of prompt or prompt_file (a request), from (one image) or sheet (several)",
    "images.c.prompt_file": "missing.md does not exist",
    "images.d.output": "extension must be",
    "images.e.output_format": "jpeg contradicts the output's extension .png",
    "images.f.background": "transparent needs png or webp",
    "images.g.n": "less than or equal to 10",
    "images.h.mask": "a mask needs images",
    "images.i.images[0]": "nothere.png does not exist and no target makes it",
    "images.j.images[0]": "not a PNG, JPEG or WEBP image (by its bytes)",
    "images.k.mask": "has no alpha channel",
    "images.l.mask": "small.png is 32x32 but the first input in.png is 64x64",
    "images.m.images[0]": "outside the project folder",
    "images.n.extra.size": "imgbuild sets this field itself",
    "images.p.output": "same.png is also the output of images.o",
    "images.q": "dependency cycle: q → r → q",
    "images.bad name": "not a valid target name",
    "images.s.output_compression": "only for jpeg and webp",
    "images.t.prompt": "valid string",
    "images.u.size": "wider than 3:1",
    "images.v.colour": "unknown field",
    "images.w.prompt": "the prompt is empty",
    "images.x.mask": "a mask must be a PNG",
    "images.y.images[0]": "outside the project folder",
    "images.z.size": "pixels",
}

BAD_MANIFEST = """
out_dir = "../outside"
bogus = 1

[defaults]
quality = "ultra"
prompt = "x"

[vars]
style = "flat"

[images.a]
prompt = "hello ${nope}"

[images.a2]
prompt = "x"
size = "1000x1000"

[images.b]
prompt = "x"
prompt_file = "p.md"

[images.c]
prompt_file = "missing.md"

[images.d]
prompt = "x"
output = "d.gif"

[images.e]
prompt = "x"
output = "e.png"
output_format = "jpeg"

[images.f]
prompt = "x"
background = "transparent"
output_format = "jpeg"

[images.g]
prompt = "x"
n = 11

[images.h]
prompt = "x"
mask = "in.png"

[images.i]
prompt = "x"
images = ["nothere.png"]

[images.j]
prompt = "x"
images = ["notimg.png"]

[images.k]
prompt = "x"
images = ["in.png"]
mask = "noalpha.png"

[images.l]
prompt = "x"
images = ["in.png"]
mask = "small.png"

[images.m]
prompt = "x"
images = ["/etc/passwd"]

[images.n]
prompt = "x"
extra = { size = "1x1" }

[images.o]
prompt = "x"
output = "same.png"

[images.p]
prompt = "x"
output = "same.png"

[images.q]
prompt = "x"
images = ["r.png"]
output = "q.png"

[images.r]
prompt = "x"
images = ["q.png"]
output = "r.png"

[images."bad name"]
prompt = "x"

[images.s]
prompt = "x"
output_compression = 50

[images.t]
prompt = 5

[images.u]
prompt = "x"
size = "3840x1024"

[images.v]
prompt = "x"
colour = "red"

[images.w]
prompt = "   "

[images.x]
prompt = "x"
mask = "in.jpg"
images = ["in.png"]

[images.y]
prompt = "x"
images = ["link/in.png"]

[images.z]
prompt = "x"
size = "512x512"
"""


def _bad_project(project: Project) -> None:
    project.manifest(BAD_MANIFEST)
    (project.root / "notimg.png").write_bytes(b"not an image at all")
    project.png("noalpha.png", mode="RGB")
    project.png("small.png", size=(32, 32))
    project.png("in.png")
    from PIL import Image

    Image.new("RGB", (64, 64)).save(project.root / "in.jpg")
    outside = project.root.parent / "elsewhere"
    outside.mkdir()
    (project.root / "link").symlink_to(outside)


def test_every_mistake_is_reported_once_with_its_place(project: Project) -> None:
    _bad_project(project)
    result = project.run("build")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    for where, fragment in MISTAKES.items():
        found = [line for line in lines if line.startswith(f"images.toml: {where}: ")]
        assert len(found) == 1, f"{where}: {found or lines}"
        assert fragment in found[0], found[0]
    assert len(lines) >= len(MISTAKES) >= 20
    assert "Traceback" not in result.err


def test_invalid_manifest_writes_nothing(project: Project) -> None:
    _bad_project(project)
    before = project.snapshot()
    for command in (["build"], ["status"], ["check"], ["build", "-n"]):
        assert project.run(*command).code == 2
    assert project.snapshot() == before
    assert not (project.root / "images.lock").exists()
    assert not project.cache.exists()


def test_invalid_toml_names_the_line(project: Project) -> None:
    project.manifest('[images.a]\nprompt = "unterminated\n')
    result = project.run("status")
    assert result.code == 2
    assert result.err.startswith("images.toml: invalid TOML:") and "line 2" in result.err


def test_missing_manifest_says_how_to_start(project: Project) -> None:
    result = project.run("build")
    assert result.code == 2
    assert "not found" in result.err and "imgbuild init" in result.err


def test_vars_are_substituted_and_double_dollar_is_literal(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "placeholder"
        [vars]
        style = "pastel"
        [images.a]
        prompt = "a cat, ${style}, costs $$5"
    """)
    assert project.build().code == 0
    assert project.lock()["targets"]["a"]["prompt"] == "a cat, pastel, costs $5"


def test_prompt_file_is_read_and_substituted(project: Project) -> None:
    project.write("prompts/a.md", "A ${thing} on a hill\n")
    project.manifest("""
        [provider]
        name = "placeholder"
        [vars]
        thing = "castle"
        [images.a]
        prompt_file = "prompts/a.md"
    """)
    assert project.build().code == 0
    assert project.lock()["targets"]["a"]["prompt"] == "A castle on a hill"


def test_defaults_apply_and_targets_override_them(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "placeholder"
        [defaults]
        quality = "low"
        size = "1536x1024"
        [images.a]
        prompt = "a"
        [images.b]
        prompt = "b"
        quality = "high"
    """)
    assert project.build().code == 0
    targets = project.lock()["targets"]
    assert targets["a"]["params"] == {
        "size": "1536x1024", "quality": "low", "output_format": "png", "background": "auto",
        "moderation": "auto", "n": 1,
    }
    assert targets["b"]["params"]["quality"] == "high"


def test_output_names_follow_format_and_n(project: Project) -> None:
    project.manifest("""
        out_dir = "art/out"
        [provider]
        name = "placeholder"
        [images.photo]
        prompt = "a photo"
        output_format = "jpeg"
        output_compression = 80
        [images.sheet]
        prompt = "sprites"
        n = 3
        output = "sprites/sheet.webp"
    """)
    assert project.build().code == 0
    lock = project.lock()["targets"]
    assert [o["path"] for o in lock["photo"]["outputs"]] == ["art/out/photo.jpg"]
    assert lock["photo"]["params"]["output_compression"] == 80
    assert [o["path"] for o in lock["sheet"]["outputs"]] == [
        "sprites/sheet-1.webp", "sprites/sheet-2.webp", "sprites/sheet-3.webp"]
    assert lock["sheet"]["params"]["output_format"] == "webp"
    assert lock["sheet"]["params"]["output_compression"] == 100
    assert project.read("art/out/photo.jpg")[:3] == b"\xff\xd8\xff"
    assert project.read("sprites/sheet-2.webp")[8:12] == b"WEBP"


def test_a_manifest_cannot_send_a_presets_key_elsewhere(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "openai"
        base_url = "https://collector.example.com/v1"
        [images.a]
        prompt = "a"
    """)
    result = project.run("status")
    assert result.code == 2
    assert "images.toml: provider.base_url: the openai preset takes its endpoint from the preset" in result.err


def test_aimlapi_rules_reject_its_unsupported_sizes(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "aimlapi"
        [images.a]
        prompt = "a"
        size = "2048x2048"
        quality = "auto"
    """)
    result = project.run("status")
    assert result.code == 2
    assert "images.a.size: 2048x2048 is not one of aimlapi's sizes" in result.err
    assert "images.a.quality: auto is not one of low, medium, high" in result.err


def test_schema_is_json_schema_of_the_models(project: Project) -> None:
    result = project.run("schema")
    assert result.code == 0
    schema = json.loads(result.out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    target = schema["$defs"]["TargetTable"]["properties"]
    for field in ("prompt", "prompt_file", "output", "size", "quality", "output_format", "background",
                  "moderation", "output_compression", "n", "images", "mask", "revision", "pinned", "extra"):
        assert field in target and target[field].get("description"), field


def test_a_prompt_file_edit_is_seen_even_though_the_manifest_is_unchanged(project: Project) -> None:
    project.write("prompts/a.md", "A castle\n")
    project.manifest('[provider]\nname = "placeholder"\n[images.a]\nprompt_file = "prompts/a.md"\n')
    assert project.build().requests == 1
    assert project.build().requests == 0  # the second run resolved from the machine-local copy
    project.write("prompts/a.md", "A ruined castle\n")
    result = project.build()
    assert result.requests == 1
    assert project.lock()["targets"]["a"]["prompt"] == "A ruined castle"


def test_an_input_replaced_by_a_non_image_is_caught_on_the_next_run(project: Project) -> None:
    project.png("art/in.png")
    project.manifest('[provider]\nname = "placeholder"\n[images.a]\nprompt = "x"\nimages = ["art/in.png"]\n')
    assert project.build().code == 0
    (project.root / "art/in.png").write_text("not an image")
    result = project.run("build")
    assert result.code == 2
    assert "images.toml: images.a.images[0]: art/in.png is not a PNG, JPEG or WEBP image" in result.err


def test_a_compatible_server_cannot_borrow_a_presets_key(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "compatible"
        base_url = "https://collector.example.com/v1"
        api_key_env = "OPENAI_API_KEY"
        [images.a]
        prompt = "a"
    """)
    result = project.run("status")
    assert result.code == 2
    assert "images.toml: provider.api_key_env: OPENAI_API_KEY is the key of a preset" in result.err


def test_inputs_over_the_apis_size_limit_are_rejected_first(project: Project) -> None:
    project.png("art/small.png")
    big = project.root / "art/huge.png"
    with big.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(51 * 2**20)  # sparse: no 51 MB actually written
    project.manifest("""
        [provider]
        name = "placeholder"
        [images.a]
        prompt = "a"
        images = ["art/small.png", "art/huge.png"]
    """)
    result = project.run("status")
    assert result.code == 2
    assert "images.toml: images.a.images[1]: art/huge.png is 51.0 MB; the API takes at most 50 MB" in result.err


def test_one_mistake_in_a_target_does_not_hide_its_others_or_confuse_its_users(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "placeholder"
        [images.a]
        prompt = "a"
        size = "1000x1000"
        output = "a.png"
        [images.b]
        prompt = "b"
        images = ["a.png"]
        [images.c]
        prompt = "c"
        output = "c.gif"
        images = ["missing.png"]
        [images.d]
        prompt = "d"
        n = 11
        output = "d.png"
        output_format = "jpeg"
    """)
    lines = project.run("status").err.strip().splitlines()
    assert sorted(lines) == sorted([
        "images.toml: images.a.size: 1000x1000 is not a multiple of 16",
        "images.toml: images.c.output: c.gif: the extension must be .png, .jpg, .jpeg or .webp",
        "images.toml: images.c.images[0]: missing.png does not exist and no target makes it",
        "images.toml: images.d.n: 11: input should be less than or equal to 10",
        "images.toml: images.d.output_format: jpeg contradicts the output's extension .png",
    ])


def test_inputs_that_would_crash_are_located_problems(project: Project) -> None:
    project.png("art/in.png", size=(1024, 1024))
    (project.root / "art/trunc.png").write_bytes(b"\x89PNG\r\n\x1a\n0000000000")
    (project.root / "dir.png").mkdir()
    project.manifest("""
        [provider]
        name = "placeholder"
        [images.a]
        prompt = "a"
        images = ["art/in.png"]
        mask = "art/trunc.png"
        [images.b]
        prompt = "b"
        output = "dir.png"
        [images.c]
        prompt = "c"
        extra = { when = 1979-05-27 }
    """)
    result = project.run("status")
    assert result.code == 2, result.err
    assert "images.toml: images.a.mask: art/trunc.png is not a readable PNG" in result.err
    assert "images.toml: images.b.output: dir.png is a folder" in result.err
    assert "images.toml: images.c.extra.when: only strings, numbers" in result.err


def test_an_unknown_provider_in_the_environment_is_a_usage_error(project: Project) -> None:
    project.manifest('[images.a]\nprompt = "a"\n')
    result = project.run("status", env={"IMGBUILD_PROVIDER": "OpenAI"})
    assert result.code == 2
    assert result.err.strip() == ("error: IMGBUILD_PROVIDER='OpenAI' is not a preset "
                                  "(openai, aimlapi, compatible, placeholder)")
