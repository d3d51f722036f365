"""--max-cost is a ceiling (issue 9, Deliver 4): the limit and the prices are finite amounts, a
server's cost that is not one is a warning, requests in flight reserve the most they can cost, and a
spend past the estimate is said with how much. Whole builds against the local API server."""

from __future__ import annotations

import math
from typing import Any

import pytest
from apiserver import ApiServer, Fault
from conftest import Project

THREE = "".join(f'[images.t{i}]\nprompt = "picture {i}"\n' for i in range(3))


def env(server: ApiServer) -> dict[str, str]:
    key_var = "OPENAI_API_KEY" if server.mode == "openai" else "AIMLAPI_API_KEY"
    return {key_var: server.key, "IMGBUILD_PROVIDER": server.mode, "IMGBUILD_BASE_URL": server.base_url}


@pytest.mark.parametrize("limit", ["nan", "inf", "-1"])
def test_max_cost_must_be_a_finite_amount_of_zero_or_more(
        limit: str, start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.manifest('[provider]\nname = "openai"\n' + THREE)

    result = project.run("build", f"--max-cost={limit}", env=env(server))

    assert result.code == 2, result.err
    assert result.err.strip().splitlines()[-1].endswith(
        f"argument --max-cost: must be a finite amount in USD, 0 or more, not {limit}")
    assert server.received == []


@pytest.mark.parametrize(("line", "where"), [
    ("per_image = nan", "provider.prices.per_image: nan:"),
    ("per_image = -1", "provider.prices.per_image: -1:"),
    ("per_image = { low = 0.01, high = inf }", "provider.prices.per_image: high = inf:"),
    ("image_output_per_million = nan", "provider.prices.image_output_per_million: nan:"),
    ("text_output_per_million = -3", "provider.prices.text_output_per_million: -3:"),
])
def test_a_price_must_be_a_finite_amount_of_zero_or_more(
        line: str, where: str, start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.manifest(f'[provider]\nname = "openai"\n[provider.prices]\n{line}\n' + THREE)

    result = project.run("build", "--max-cost", "0.10", env=env(server))

    assert result.code == 2
    (error,) = result.err.strip().splitlines()
    assert error.startswith(f"images.toml: {where}")
    assert server.received == []


@pytest.mark.parametrize("spent", [float("nan"), -6.0, float("inf"), "0.05"])
def test_a_server_cost_that_is_not_an_amount_is_a_warning_not_a_value(
        spent: Any, start_api_server: Any, project: Project) -> None:
    server = start_api_server("aimlapi")
    server.inject(Fault("usage", usage={"usd_spent": spent}))
    project.manifest('[provider]\nname = "aimlapi"\n[images.t0]\nprompt = "picture"\n')

    result = project.build(env=env(server))

    assert result.code == 0, result.err
    (warning,) = [e["message"] for e in result.events if e["event"] == "warning"]
    assert warning.startswith("t0: the API reported usd_spent = ") and "is not an amount" in warning
    cost = result.summary["cost_usd"]
    assert math.isfinite(cost) and cost == pytest.approx(result.summary["estimate_usd"])
    assert project.lock()["targets"]["t0"]["cost_usd"] == pytest.approx(cost)
    assert len(server.received) == 1


def test_requests_in_flight_reserve_the_most_they_can_cost(start_api_server: Any, project: Project) -> None:
    # A Japanese prompt is estimated at 4 characters a token, but may take a token per byte: each
    # request is estimated $0.04 and can cost $0.15. Three at once could spend $0.45.
    server = start_api_server("openai", latency_s=0.3)
    prompt = "騎士" * 4000
    server.inject_for(prompt, Fault("usage", usage={
        "input_tokens": 24_000, "input_tokens_details": {"text_tokens": 24_000, "image_tokens": 0}}))
    project.manifest('[provider]\nname = "openai"\n' + "".join(
        f'[images.t{i}]\nprompt = "{prompt} {i}"\n' for i in range(3)))

    result = project.build("-j", "4", "--max-cost", "0.20", env=env(server))

    assert result.code == 1  # the budget left targets undone
    assert len(server.received) == 1 and result.summary["built"] == 1
    assert result.summary["cost_usd"] == pytest.approx(0.15168, abs=0.0001)
    assert result.summary["cost_usd"] <= 0.20


def test_a_spend_past_the_estimate_is_said_with_how_much(start_api_server: Any, project: Project) -> None:
    # The manifest's price says $0.0066 an image; the server charges $0.0333.
    server = start_api_server("aimlapi", usd_per_image=0.0333)
    project.manifest('[provider]\nname = "aimlapi"\n[provider.prices]\nper_image = 0.0066\n' + THREE)

    result = project.run("build", "-j", "4", "--max-cost", "0.03", env=env(server))

    assert result.code == 0, result.err
    assert len(server.received) == 3
    (summary,) = [line for line in (result.out + result.err).splitlines() if "request(s)" in line]
    assert summary.endswith("3 request(s), $0.10 ($0.08 over the estimate of $0.02)")


def test_a_server_that_charges_past_the_prices_holds_later_requests_to_its_price(
        start_api_server: Any, project: Project) -> None:
    # Estimated about $0.05 an image, charged $0.20: after the first, the next would pass $0.30.
    server = start_api_server("aimlapi", usd_per_image=0.2)
    project.manifest('[provider]\nname = "aimlapi"\n' + THREE)

    result = project.build("-j", "1", "--max-cost", "0.30", env=env(server))

    assert result.code == 1
    assert len(server.received) == 1
    assert result.summary["cost_usd"] == pytest.approx(0.2)


def test_a_request_that_does_not_fit_beside_those_in_flight_waits_for_them(
        start_api_server: Any, project: Project) -> None:
    # Each can cost $0.15 (estimated $0.04, which the server charges): one at a time, two fit in $0.20.
    server = start_api_server("openai", latency_s=0.2)
    prompt = "騎士" * 4000
    project.manifest('[provider]\nname = "openai"\n' + "".join(
        f'[images.t{i}]\nprompt = "{prompt} {i}"\n' for i in range(3)))

    result = project.build("-j", "4", "--max-cost", "0.20", env=env(server))

    assert result.summary["built"] == 2 and result.summary["not_started"] == 1
    assert [r.in_flight for r in server.received] == [1, 1]
    assert result.summary["cost_usd"] <= 0.20
