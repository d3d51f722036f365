"""Which secret goes where (issue 9, Deliver 1): a manifest may name a server, but it alone may not
choose a secret to send there. Its `api_key_env` is honoured for a server on this machine or one
whose address came from outside the manifest; else the key comes from IMGBUILD_API_KEY or from the
variable IMGBUILD_API_KEY_ENV names.

`0.0.0.0` reaches the local test server on Linux while not being a loopback address by the rule, so
it stands for "a host the manifest chose" and the server counts what such a host would receive."""

from __future__ import annotations

from typing import Any

from apiserver import ApiServer
from conftest import Project


def elsewhere(server: ApiServer) -> str:
    return f"http://0.0.0.0:{server.port}/v1"


def compatible(project: Project, base_url: str, key_line: str = 'api_key_env = "GITHUB_TOKEN"') -> None:
    project.manifest(f"""
        [provider]
        name = "compatible"
        base_url = "{base_url}"
        {key_line}
        max_retries = 0
        [images.hero]
        prompt = "a knight"
        """)


def test_a_manifest_cannot_send_a_variable_it_names_to_a_host_it_names(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, elsewhere(server))

    result = project.build(env={"GITHUB_TOKEN": server.key})

    assert result.code == 2, result.err
    (line,) = result.err.strip().splitlines()
    assert line.startswith("images.toml: provider.api_key_env: the manifest may not choose")
    assert "IMGBUILD_API_KEY" in line and "IMGBUILD_API_KEY_ENV=GITHUB_TOKEN" in line
    assert server.received == []


def test_a_look_alike_of_this_machine_is_not_this_machine(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, f"http://127.0.0.1@0.0.0.0:{server.port}/v1")

    result = project.build(env={"GITHUB_TOKEN": server.key})

    assert result.code == 2 and "provider.api_key_env" in result.err
    assert server.received == []


def test_the_variable_named_outside_the_manifest_goes_to_the_server_it_names(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, elsewhere(server))

    result = project.build(env={"GITHUB_TOKEN": server.key, "IMGBUILD_API_KEY_ENV": "GITHUB_TOKEN"})

    assert result.code == 0, result.err
    assert [r.auth for r in server.received] == ["ok"]


def test_imgbuild_api_key_is_the_key_of_a_server_named_without_a_variable(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, elsewhere(server), key_line="")

    result = project.build(env={"IMGBUILD_API_KEY": server.key, "GITHUB_TOKEN": "ghp-not-this"})

    assert result.code == 0, result.err
    assert [r.auth for r in server.received] == ["ok"]


def test_a_server_on_this_machine_gets_the_variable_the_manifest_names(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, server.base_url.replace("127.0.0.1", "localhost"))

    result = project.build(env={"GITHUB_TOKEN": server.key})

    assert result.code == 0, result.err
    assert [r.auth for r in server.received] == ["ok"]


def test_an_endpoint_given_in_the_environment_gets_the_variable_the_manifest_names(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, "http://anywhere.example/v1")

    result = project.build(env={"GITHUB_TOKEN": server.key, "IMGBUILD_BASE_URL": elsewhere(server)})

    assert result.code == 0, result.err
    assert [r.auth for r in server.received] == ["ok"]


def test_leave_to_send_a_variable_lasts_only_while_it_is_given(start_api_server: Any, project: Project) -> None:
    # The machine-local copy of the resolved manifest must not remember an earlier run's permission.
    server = start_api_server("openai")
    compatible(project, elsewhere(server))
    allowed = project.build(env={"GITHUB_TOKEN": server.key, "IMGBUILD_API_KEY_ENV": "GITHUB_TOKEN"})

    refused = project.build("-B", env={"GITHUB_TOKEN": server.key})

    assert allowed.code == 0 and refused.code == 2, refused.err
    assert len(server.received) == 1


def test_a_key_variable_named_outside_the_manifest_must_be_a_variable_name(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    compatible(project, elsewhere(server))

    result = project.build(env={"GITHUB_TOKEN": server.key, "IMGBUILD_API_KEY_ENV": "GITHUB TOKEN"})

    assert result.code == 2
    assert result.err.strip() == "error: IMGBUILD_API_KEY_ENV='GITHUB TOKEN' is not the name of an environment variable"
    assert server.received == []
