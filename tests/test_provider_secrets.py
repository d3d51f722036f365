"""The key (issue 3, Deliver 6): from the environment only, to the endpoint only, and never into
an exception, a log line or a file, even when the server echoes it back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from apiserver import KEY_ENV, TEST_KEY, ApiServer, Fault, generate, image_request, settings_for

from imgbuild.errors import AuthenticationError, MissingKey, ProviderError
from imgbuild.providers import open_provider

pytestmark = pytest.mark.usefixtures("fast_retries")


def everything_said(exc: BaseException) -> str:
    """Every message on the exception chain, as a traceback with -v would show it."""
    said = []
    seen: BaseException | None = exc
    while seen is not None:
        said += [str(seen), repr(seen), *map(str, seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(said)


def test_the_key_goes_to_the_endpoint_and_never_to_the_download_host(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    generate(aimlapi_server, tmp_path, image_request("aimlapi", n=2))

    assert [r.auth for r in aimlapi_server.received] == ["ok", "ok"]
    assert [d.auth for d in aimlapi_server.downloads] == ["absent", "absent"]


def test_a_key_echoed_by_the_server_is_redacted_from_the_error(
        api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("401"))  # its message is "Incorrect API key provided: <the key>."
    with pytest.raises(AuthenticationError) as caught:
        generate(api_server, tmp_path)

    assert "Incorrect API key provided: [redacted]" in str(caught.value)
    assert TEST_KEY not in everything_said(caught.value)
    assert TEST_KEY[:12] not in everything_said(caught.value)


def test_a_wrong_key_is_not_repeated_in_the_error(api_server: ApiServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-0123456789abcdef0123456789abcdef"
    monkeypatch.setenv(KEY_ENV, wrong)
    with pytest.raises(AuthenticationError) as caught:
        generate(api_server, tmp_path)

    assert [r.auth for r in api_server.received] == ["wrong"]
    assert wrong not in everything_said(caught.value)
    assert KEY_ENV in str(caught.value)


def test_the_key_is_in_no_log_line_even_with_retries_and_failures(
        api_server: ApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api_server.inject(Fault("429", retry_after="0"))
    api_server.inject(Fault("500"))
    api_server.inject(Fault("401"))
    with pytest.raises(ProviderError):
        generate(api_server, tmp_path)

    assert len(api_server.received) == 3
    assert "retry" in caplog.text  # the retries were logged...
    assert TEST_KEY not in caplog.text  # ...without the key
    assert TEST_KEY[-12:] not in caplog.text


def test_the_key_is_in_no_file_the_provider_wrote(api_server: ApiServer, tmp_path: Path) -> None:
    generate(api_server, tmp_path, image_request(n=2))

    written = list(tmp_path.rglob("*"))
    assert len(written) == 2
    assert not any(TEST_KEY.encode() in p.read_bytes() for p in written)


def test_a_missing_key_is_one_line_naming_the_variable_before_any_request(
        api_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(MissingKey) as caught:
        open_provider(settings_for(api_server))

    assert KEY_ENV in str(caught.value) and "\n" not in str(caught.value)
    assert api_server.received == []


def test_a_key_that_cannot_go_in_a_header_is_refused_without_showing_it(
        api_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-caf\u00e9-secret-value")
    with pytest.raises(AuthenticationError) as caught:
        open_provider(settings_for(api_server))

    assert "secret-value" not in str(caught.value) and KEY_ENV in str(caught.value)
    assert api_server.received == []
