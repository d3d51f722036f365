"""What goes wrong (issue 3, Deliver 4): what is final, what is fatal, what is retried and how."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from apiserver import (
    KEY_ENV,
    ApiServer,
    Fault,
    generate,
    image_request,
    run_provider,
    settings_for,
)

from imgbuild.errors import (
    AuthenticationError,
    EndpointNotFound,
    NetworkError,
    RequestRejected,
    ServerError,
)
from imgbuild.providers import _retry

pytestmark = pytest.mark.usefixtures("fast_retries")


def gaps(server: ApiServer) -> list[float]:
    times = [r.at for r in server.received]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_a_400_is_final_and_shows_the_apis_message_with_the_target(
        start_api_server: Any, tmp_path: Path) -> None:
    server = start_api_server("openai", transparent_ok=False)
    with pytest.raises(RequestRejected) as caught:
        generate(server, tmp_path, image_request(target="logo", background="transparent"))

    assert str(caught.value).startswith("logo: ")
    assert "does not support transparent backgrounds" in str(caught.value)
    assert caught.value.status == 400 and not caught.value.retryable
    assert len(server.received) == 1


def test_a_moderation_block_is_never_retried(api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject_for("battle", Fault("moderation"))
    with pytest.raises(RequestRejected, match="moderation_blocked"):
        generate(api_server, tmp_path, image_request(prompt="a battle scene"))

    assert len(api_server.received) == 1


def test_a_401_is_fatal_and_names_the_keys_variable(api_server: ApiServer,
                                                    tmp_path: Path) -> None:
    api_server.inject(Fault("401"))
    with pytest.raises(AuthenticationError) as caught:
        generate(api_server, tmp_path)

    assert caught.value.fatal and KEY_ENV in str(caught.value)
    assert len(api_server.received) == 1


def test_a_403_on_openai_says_the_organisation_may_need_verifying(
        api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("403"))
    with pytest.raises(AuthenticationError, match="organisation may need to be verified"):
        generate(api_server, tmp_path)

    assert len(api_server.received) == 1


def test_a_404_explains_the_base_url(api_server: ApiServer, tmp_path: Path) -> None:
    wrong = api_server.base_url.removesuffix("/v1")
    with pytest.raises(EndpointNotFound) as caught:
        generate(api_server, tmp_path, base_url=wrong)

    message = str(caught.value)
    assert f"{wrong}/images/generations was not found" in message
    assert f"It is {wrong}" in message and "/v1" in message and "--base-url" in message
    assert caught.value.fatal and len(api_server.received) == 1


def test_a_429_waits_as_long_as_retry_after_says(api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("429", retry_after="1"))
    result = generate(api_server, tmp_path)

    assert [r.status for r in api_server.received] == [429, 200]
    assert 1.0 <= gaps(api_server)[0] < 2.0
    assert (result.requests, result.retries) == (2, 1)


def test_a_503_with_retry_after_waits_as_long_as_it_says(api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("503", retry_after="1"))
    result = generate(api_server, tmp_path)

    assert [r.status for r in api_server.received] == [503, 200]
    assert 1.0 <= gaps(api_server)[0] < 2.0
    assert result.retries == 1


def test_5xx_are_retried_with_exponential_backoff(api_server: ApiServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry, "BACKOFF_BASE_S", 0.08)
    api_server.inject(Fault("503"), times=2)
    api_server.inject(Fault("500"))
    result = generate(api_server, tmp_path, max_retries=3)

    assert [r.status for r in api_server.received] == [503, 503, 500, 200]
    first, second, third = gaps(api_server)
    # equal jitter: retry k waits between half and all of 0.08 * 2**(k-1) seconds
    assert first >= 0.04 and second >= 0.08 and third >= 0.16
    assert third > first
    assert result.retries == 3


def test_transient_failures_stop_after_max_retries(api_server: ApiServer,
                                                   tmp_path: Path) -> None:
    api_server.inject(Fault("500"), times=10)
    with pytest.raises(ServerError, match="hero: the API failed") as caught:
        generate(api_server, tmp_path, max_retries=2)

    assert len(api_server.received) == 3  # the first try and two retries, no more
    assert (caught.value.requests, caught.value.retries) == (3, 2)  # type: ignore[attr-defined]


def test_a_response_slower_than_the_timeout_is_retried(api_server: ApiServer,
                                                       tmp_path: Path) -> None:
    api_server.inject(Fault("slow", delay_s=3.0))
    result = generate(api_server, tmp_path, timeout_s=1.0)  # the retry itself must not time out on a busy machine

    assert len(api_server.received) == 2
    assert result.retries == 1 and len(result.files) == 1


def test_timing_out_every_time_is_a_network_error(api_server: ApiServer,
                                                  tmp_path: Path) -> None:
    api_server.inject(Fault("slow", delay_s=3.0), times=2)
    with pytest.raises(NetworkError, match="timed out"):
        generate(api_server, tmp_path, timeout_s=0.3, max_retries=1)

    assert len(api_server.received) == 2


def test_a_reset_connection_is_retried(api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("reset"))
    result = generate(api_server, tmp_path)

    assert [r.status for r in api_server.received] == [0, 200]
    assert result.retries == 1


def test_an_endpoint_that_refuses_connections_is_a_network_error(
        api_server: ApiServer, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NetworkError, match="cannot connect"):
        generate(api_server, tmp_path, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)


def test_429s_lower_the_number_of_requests_in_flight(api_server: ApiServer,
                                                     tmp_path: Path) -> None:
    api_server.latency_s = 0.2
    api_server.inject(Fault("429", retry_after="0", delay_s=0.1), times=4)
    requests = [image_request(target=f"t{i}", prompt=f"picture {i}") for i in range(4)]
    outcomes = run_provider(settings_for(api_server, concurrency=4), requests, tmp_path)

    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    first_wave, retries = api_server.received[:4], api_server.received[4:]
    assert [r.status for r in first_wave] == [429] * 4
    assert max(r.in_flight for r in first_wave) == 4
    assert [r.status for r in retries] == [200] * 4
    assert max(r.in_flight for r in retries) == 2  # halved after the burst of 429s
