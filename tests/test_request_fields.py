"""Requests exactly as the published schema defines them (issue 14 §1): `moderation` only on
generations, `extra` refusing what changes the answer's shape or what imgbuild owns, and each known
field sent only to the endpoint that defines it. The local server is as strict as the schema, so
a field an endpoint does not define fails there as it would for real."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import KEY_ENV, ApiServer, generate, image_request, input_png

from conftest import Project
from imgbuild.errors import RequestRejected

pytestmark = pytest.mark.usefixtures("fast_retries")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(project: Project, server: ApiServer, body: str) -> None:
    project.manifest(f"""
        [provider]
        name = "compatible"
        model = "gpt-image-2"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        max_retries = 0
        """ + body)


def post(server: ApiServer, path: str, fields: dict[str, Any], image: Path | None = None) -> httpx.Response:
    """A request as another client would send it, straight to the local server."""
    url = f"{server.base_url}/images/{path}"
    headers = {"Authorization": f"Bearer {server.key}"}
    if image is None:
        return httpx.post(url, json=fields, headers=headers)
    with image.open("rb") as f:
        return httpx.post(url, data={k: str(v) for k, v in fields.items()},
                          files={"image": (image.name, f, "image/png")}, headers=headers)


def base_fields(server: ApiServer) -> dict[str, Any]:
    return {"model": "gpt-image-2" if server.mode == "openai" else "openai/gpt-image-2",
            "prompt": "A knight"}


# -- the server is as strict as the schema -----------------------------------------------------

@pytest.mark.parametrize("mode", ["openai", "aimlapi"])
def test_the_server_refuses_moderation_on_an_edit(start_api_server: Any, tmp_path: Path,
                                                  mode: str) -> None:
    server = start_api_server(mode)
    source = input_png(tmp_path / "in.png")

    answer = post(server, "edits", {**base_fields(server), "moderation": "auto"}, source)

    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Unrecognized request argument supplied: moderation"


@pytest.mark.parametrize("mode", ["openai", "aimlapi"])
def test_the_server_takes_moderation_on_a_generation(start_api_server: Any, mode: str) -> None:
    server = start_api_server(mode)

    answer = post(server, "generations", {**base_fields(server), "moderation": "low"})

    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("mode", "path", "field"), [
    ("openai", "generations", "input_fidelity"),  # an edit field
    ("openai", "generations", "stylize"),  # in no schema
    ("aimlapi", "generations", "user"),  # openai defines it, the AI/ML API page does not
    ("aimlapi", "generations", "stylize"),
])
def test_the_server_refuses_a_field_its_generation_endpoint_does_not_define(
        start_api_server: Any, mode: str, path: str, field: str) -> None:
    server = start_api_server(mode)

    answer = post(server, path, {**base_fields(server), field: "x"})

    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == f"Unrecognized request argument supplied: {field}"


@pytest.mark.parametrize(("mode", "field", "accepted"), [
    ("openai", "input_fidelity", True), ("openai", "style", False),
    ("aimlapi", "input_fidelity", False), ("aimlapi", "background", True),
])
def test_the_server_holds_edits_to_the_edit_schema_of_its_dialect(
        start_api_server: Any, tmp_path: Path, mode: str, field: str, accepted: bool) -> None:
    server = start_api_server(mode)
    source = input_png(tmp_path / "in.png")

    answer = post(server, "edits", {**base_fields(server), field: "auto" if field == "background" else "high"},
                  source)

    assert (answer.status_code == 200) is accepted, answer.text


# -- what the provider sends ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["openai", "aimlapi"])
def test_an_edit_is_sent_without_moderation(start_api_server: Any, tmp_path: Path, mode: str) -> None:
    server = start_api_server(mode)
    source = input_png(tmp_path / "in" / "hero.png")

    generate(server, tmp_path / "stage", image_request(mode, images=(source,), moderation="low"))

    (received,) = server.received
    assert received.status == 200
    assert "moderation" not in received.fields


def test_a_generation_sends_its_moderation(api_server: ApiServer, tmp_path: Path) -> None:
    generate(api_server, tmp_path, image_request(moderation="low"))

    (received,) = api_server.received
    assert received.fields["moderation"] == "low"


def test_an_edit_field_in_extra_goes_with_an_edit_and_never_with_a_generation(
        api_server: ApiServer, tmp_path: Path) -> None:
    source = input_png(tmp_path / "in" / "hero.png")
    extra = {"input_fidelity": "high"}

    generate(api_server, tmp_path / "a", image_request(prompt="edit", images=(source,), extra=extra))
    generate(api_server, tmp_path / "b", image_request(prompt="generation", extra=extra))

    edit, generation = api_server.received
    assert edit.fields["input_fidelity"] == "high"
    assert "input_fidelity" not in generation.fields and generation.status == 200


def test_a_field_no_schema_defines_is_sent_as_it_is_and_refused_by_the_strict_server(
        api_server: ApiServer, tmp_path: Path) -> None:
    with pytest.raises(RequestRejected, match="Unrecognized request argument supplied: stylize"):
        generate(api_server, tmp_path, image_request(extra={"stylize": 7}))

    (received,) = api_server.received
    assert received.fields["stylize"] == 7


# -- the manifest ------------------------------------------------------------------------------

def test_moderation_on_an_edit_target_is_a_located_manifest_error(project: Project) -> None:
    project.png("art/in.png")
    project.manifest("""
        [images.crowned]
        prompt = "Add a crown"
        images = ["art/in.png"]
        moderation = "low"
        """)

    result = project.run("build", "--provider", "placeholder")

    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert line.startswith("images.toml: images.crowned.moderation: ")
    assert "generations" in line
    assert not (project.root / "images.lock").exists()


def test_default_moderation_applies_to_generations_only(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.png("art/in.png", size=(1024, 1024))
    manifest(project, server, """
        [defaults]
        moderation = "low"
        [images.hero]
        prompt = "A knight"
        [images.crowned]
        prompt = "Add a crown"
        images = ["art/in.png"]
        """)

    result = project.build(env={KEY_ENV: server.key})

    assert result.code == 0, result.err
    by_prompt = {r.fields["prompt"]: r for r in server.received}
    assert by_prompt["A knight"].fields["moderation"] == "low"
    assert "moderation" not in by_prompt["Add a crown"].fields
    assert all(r.status == 200 for r in server.received)


def _todays_digest(model: str, prompt: str, params: dict[str, Any], images: list[str]) -> str:
    """The spec digest as imgbuild computed it before issue 14 (SPEC §2), written out here."""
    canonical = {"model": model, "prompt": prompt, "params": params, "images": images,
                 "mask": None, "revision": 0, "extra": {}}
    data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def test_an_edit_keeps_the_spec_digest_locks_already_hold(project: Project) -> None:
    # Given an edit whose lock entry was written before moderation left the edit request: its spec
    # held params.moderation = "auto", and that digest is what existing locks record
    source = project.png("art/in.png", size=(1024, 1024))
    project.manifest("""
        [images.crowned]
        prompt = "Add a crown"
        images = ["art/in.png"]
        """)
    params = {"size": "1024x1024", "quality": "medium", "output_format": "png",
              "background": "auto", "moderation": "auto", "n": 1}

    built = project.build("--provider", "placeholder")

    assert built.code == 0, built.err
    entry = project.lock()["targets"]["crowned"]
    assert entry["spec"] == _todays_digest("placeholder:gpt-image-2", "Add a crown", params, [sha256(source)])
    status = project.run("status", "--provider", "placeholder")
    assert status.code == 0 and "crowned" in status.out and " ok" in status.out


@pytest.mark.parametrize("field", ["stream", "partial_images", "response_format"])
def test_extra_refuses_a_field_that_changes_the_answers_shape(project: Project, field: str) -> None:
    project.manifest(f"""
        [images.hero]
        prompt = "A knight"
        extra = {{ {field} = true }}
        """)

    result = project.run("build", "--provider", "placeholder")

    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert line.startswith(f"images.toml: images.hero.extra.{field}: ")
    assert "answer" in line


def test_a_shape_field_in_default_extra_is_reported_once_where_it_is(project: Project) -> None:
    project.manifest("""
        [defaults]
        extra = { stream = true }
        [images.a]
        prompt = "A knight"
        [images.b]
        prompt = "A mage"
        """)

    result = project.run("build", "--provider", "placeholder")

    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert line.startswith("images.toml: defaults.extra.stream: ")


@pytest.mark.parametrize("field", ["model", "prompt", "image", "mask", "moderation"])
def test_extra_refuses_a_field_imgbuild_owns(project: Project, field: str) -> None:
    project.manifest(f"""
        [images.hero]
        prompt = "A knight"
        extra = {{ {field} = "x" }}
        """)

    result = project.run("build", "--provider", "placeholder")

    assert result.code == 2
    assert f"images.toml: images.hero.extra.{field}: imgbuild sets this field itself" in result.err


def test_an_edit_field_in_a_generations_own_extra_is_a_manifest_error(project: Project) -> None:
    project.manifest("""
        [images.hero]
        prompt = "A knight"
        extra = { input_fidelity = "high" }
        """)

    result = project.run("build", "--provider", "placeholder")

    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert line.startswith("images.toml: images.hero.extra.input_fidelity: ")
    assert "images/edits" in line


def test_a_generation_field_in_an_edits_own_extra_is_a_manifest_error(project: Project) -> None:
    project.png("art/in.png")
    project.manifest("""
        [images.crowned]
        prompt = "Add a crown"
        images = ["art/in.png"]
        extra = { style = "vivid" }
        """)

    result = project.run("build", "--provider", "placeholder")

    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert line.startswith("images.toml: images.crowned.extra.style: only images/generations defines it")


def test_an_edit_field_in_default_extra_reaches_edits_only(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.png("art/in.png", size=(1024, 1024))
    manifest(project, server, """
        [defaults]
        extra = { input_fidelity = "high" }
        [images.hero]
        prompt = "A knight"
        [images.crowned]
        prompt = "Add a crown"
        images = ["art/in.png"]
        """)

    result = project.build(env={KEY_ENV: server.key})

    assert result.code == 0, result.err
    by_prompt = {r.fields["prompt"]: r for r in server.received}
    assert by_prompt["Add a crown"].fields["input_fidelity"] == "high"
    assert "input_fidelity" not in by_prompt["A knight"].fields
    lock = project.lock()["targets"]
    assert lock["crowned"]["extra"] == {"input_fidelity": "high"}
    assert "extra" not in lock["hero"]  # not in the generation's spec either


def test_a_field_no_schema_defines_stays_allowed_in_extra(project: Project) -> None:
    project.manifest("""
        [images.hero]
        prompt = "A knight"
        extra = { stylize = 7 }
        """)

    result = project.run("build", "-n", "--provider", "placeholder")

    assert result.code == 0, result.err
