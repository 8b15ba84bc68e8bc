"""The gateway in front of two real neuron servers (scripted engines) on loopback, driven by the SDKs:
merged catalogue, both dialects, tools, count_tokens, cold load, eviction, failover, disconnects,
auth, bad input and metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from server_fakes import FakeLoader, make_neuron, write_fake_model
from server_live import LiveServer

from cortex.server.affinity import affinity_key, shared_prefix_key
from cortex.server.config import config_from_dict
from cortex.server.gateway import create_app, create_metrics_app
from cortex.server.status import render_status

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_WEATHER_TOOL = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@dataclass
class Cluster:
    gateway: LiveServer
    neurons: dict[str, LiveServer]
    loaders: dict[str, FakeLoader]
    app: object
    clients: list = field(default_factory=list)

    @property
    def fleet(self):
        return self.app.state.fleet

    def openai(self, api_key: str = "k") -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.gateway.url}/v1", api_key=api_key, max_retries=0)
        self.clients.append(client)
        return client

    def anthropic(self, api_key: str = "k") -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=self.gateway.url, api_key=api_key, max_retries=0)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.gateway.stop()
        for server in self.neurons.values():
            if server.thread.is_alive():
                server.stop()

    def engine(self, model: str):
        for loader in self.loaders.values():
            if model in loader.engines:
                return loader.engines[model]
        raise KeyError(model)


def start_cluster(
    tmp_path: Path, *, api_keys=(), neuron_key=None, budgets=(10_000, 10_000), read_timeout_s=600
) -> Cluster:
    neurons, loaders = {}, {}
    for i, budget in enumerate(budgets, start=1):
        root = tmp_path / f"n{i}"
        write_fake_model(root, "alpha", reply="hello world", memory_bytes=1000)
        write_fake_model(
            root, "tooler", reply="", tool_call={"name": "get_weather", "args": {"city": "Paris"}}
        )
        write_fake_model(root, "slow", reply="s" * 400, token_delay_s=0.02, memory_bytes=1000)
        write_fake_model(root, f"only-n{i}", reply=f"from n{i}", memory_bytes=6000)
        if i == 2:
            write_fake_model(root, "only-n2b", reply="from n2b", memory_bytes=2000)
        write_fake_model(root, "cold", reply="ok", load_delay_s=0.6, prefill_delay_s=0.6, memory_bytes=1000)
        write_fake_model(
            root, "steady", reply="t" * 30, prefill_delay_s=0.6, token_delay_s=0.05, memory_bytes=1000
        )
        keys = [neuron_key] if neuron_key else []
        app, loader = make_neuron(
            root, name=f"n{i}", memory_budget_bytes=budget, api_keys=keys, keepalive_s=0.2
        )
        neurons[f"n{i}"] = LiveServer(app).start()
        loaders[f"n{i}"] = loader
    models_toml = tmp_path / "models.toml"
    models_toml.write_text(
        '[[models]]\nid = "alpha"\naliases = ["claude-*", "gpt-4o"]\n'
        '[[models]]\nid = "pinned-two"\nneuron_model = "only-n2"\nallowed_neurons = ["n2"]\n'
        '[[models]]\nid = "two-b"\nneuron_model = "only-n2b"\nallowed_neurons = ["n2"]\n'
    )
    config = config_from_dict(
        {
            "gateway": {
                "models_file": str(models_toml),
                "keepalive_s": 0.2,
                "read_timeout_s": read_timeout_s,
            },
            "auth": {"api_keys": list(api_keys)},
            "fleet": {
                "poll_interval_s": 0.2,
                "poll_timeout_s": 1.0,
                "unhealthy_after": 1,
                "min_residency_s": 0.0,
                "backoff_base_s": 0.01,
            },
            "neurons": [
                {"name": name, "url": server.url, "api_key": neuron_key} for name, server in neurons.items()
            ],
        },
        environ={},
    )
    app = create_app(config)
    return Cluster(LiveServer(app).start(), neurons, loaders, app)


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_models_are_merged_in_both_shapes(cluster):
    listed = {m.id for m in cluster.openai().models.list()}
    assert {"alpha", "tooler", "slow", "only-n1", "pinned-two", "gpt-4o"} <= listed
    assert "claude-*" not in listed
    page = cluster.anthropic().models.list()
    assert {"alpha", "only-n1", "pinned-two"} <= {m.id for m in page.data}
    assert all(m.type == "model" for m in page.data)
    raw = httpx.get(f"{cluster.gateway.url}/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert {"data", "has_more", "first_id", "last_id"} <= set(raw)


def test_openai_sdk_through_the_gateway_with_a_cold_load(cluster):
    sdk = cluster.openai()
    assert not cluster.fleet.status().counters.get("loads")
    reply = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello world"
    assert cluster.fleet.status().counters["loads"] == 1
    loaded = [name for name, loader in cluster.loaders.items() if "alpha" in loader.engines]
    assert len(loaded) == 1

    stream = sdk.chat.completions.create(
        model="alpha",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello world"
    assert chunks[-1].usage.completion_tokens == 11

    with sdk.chat.completions.stream(
        model="tooler", messages=[{"role": "user", "content": "w?"}], tools=[WEATHER_TOOL]
    ) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    completion = sdk.completions.create(model="alpha", prompt="x", max_tokens=5)
    assert completion.choices[0].text == "hello"


def test_anthropic_sdk_through_the_gateway(cluster):
    sdk = cluster.anthropic()
    message = sdk.messages.create(
        model="claude-opus-5-5", max_tokens=128000, messages=[{"role": "user", "content": "hi"}], timeout=30
    )
    assert message.content[0].text == "hello world"
    assert message.model == "claude-opus-5-5"
    assert message.stop_reason == "end_turn"
    assert cluster.engine("alpha").last_params.max_tokens < 128000  # clamped to the context

    with sdk.messages.stream(
        model="tooler",
        max_tokens=100,
        tools=[ANTHROPIC_WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start"
    assert events[0].message.usage.input_tokens > 0
    assert final.stop_reason == "tool_use"
    (tool_use,) = [b for b in final.content if b.type == "tool_use"]
    assert tool_use.input == {"city": "Paris"}

    request = {
        "model": "claude-local-haiku",
        "system": "be brief",
        "messages": [{"role": "user", "content": "count these tokens"}],
    }
    counted = sdk.messages.count_tokens(**request)
    with sdk.messages.stream(max_tokens=5, **request) as stream:
        start = next(iter(stream))
    assert start.message.usage.input_tokens == counted.input_tokens
    direct = httpx.post(
        f"{cluster.neurons['n1'].url}/v1/messages/count_tokens", json={**request, "model": "alpha"}
    ).json()
    assert direct["input_tokens"] == counted.input_tokens


def test_the_gateway_routes_by_conversation_and_shared_prefix_keys(cluster):
    """Each dialect's request hands the fleet its conversation's key and its shared-prefix key, which
    the fleet then knows (an unseen key has no neuron to stick to: explain says least loaded)."""
    system, first = "You are terse.", {"role": "user", "content": "hi"}
    anthropic_body = {"system": system, "messages": [first], "tools": [ANTHROPIC_WEATHER_TOOL]}
    openai_body = {"messages": [{"role": "system", "content": system}, first]}
    for body, send in (
        (
            anthropic_body,
            lambda: cluster.anthropic().messages.create(model="alpha", max_tokens=8, **anthropic_body),
        ),
        (openai_body, lambda: cluster.openai().chat.completions.create(model="alpha", **openai_body)),
    ):
        keys = {"affinity_key": affinity_key({}, body), "prefix_key": shared_prefix_key(body)}
        for name, key in keys.items():
            assert "affinity" not in cluster.fleet.explain("alpha", **{name: key})["reason"]
        send()
        for name, key in keys.items():
            assert "affinity" in cluster.fleet.explain("alpha", **{name: key})["reason"]


def test_eviction_when_a_neurons_budget_forces_one(tmp_path):
    cluster = start_cluster(tmp_path, budgets=(10_000, 7_000))
    try:
        sdk = cluster.openai()
        first = sdk.chat.completions.create(model="pinned-two", messages=[{"role": "user", "content": "x"}])
        assert first.choices[0].message.content == "from n2"
        # n2 now holds only-n2 (6000 of its 7000 bytes); two-b (2000) may only live on n2
        second = sdk.chat.completions.create(model="two-b", messages=[{"role": "user", "content": "x"}])
        assert second.choices[0].message.content == "from n2b"
        assert cluster.fleet.status().counters["evictions"] == 1
        on_n2 = {m["id"] for m in httpx.get(f"{cluster.neurons['n2'].url}/models").json()["models"]}
        assert on_n2 == {"only-n2b"}
        assert cluster.loaders["n2"].engines["only-n2"].closed
    finally:
        cluster.close()


def test_a_killed_neuron_fails_over_to_the_other(cluster):
    sdk = cluster.openai()
    sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    (first,) = [name for name, loader in cluster.loaders.items() if "alpha" in loader.engines]
    cluster.neurons[first].kill()
    for _ in range(3):
        reply = sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "hello world"
    (other,) = set(cluster.loaders) - {first}
    assert "alpha" in cluster.loaders[other].engines


def test_client_disconnect_frees_the_engine_slot(cluster):
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.Client(base_url=cluster.gateway.url, timeout=10) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            for line in reply.iter_lines():
                if '"content":"s"' in line:
                    break
        engine = cluster.engine("slow")
        deadline = time.monotonic() + 5
        while not engine.aborted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.aborted == engine.started
        assert engine.num_running == 0


def test_auth_is_enforced_in_the_callers_dialect(tmp_path):
    cluster = start_cluster(tmp_path, api_keys=("secret",), neuron_key="neuron-secret")
    try:
        url = cluster.gateway.url
        body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
        denied = httpx.post(f"{url}/v1/chat/completions", json=body)
        assert denied.status_code == 401
        assert denied.json()["error"]["type"] == "authentication_error"
        denied = httpx.post(
            f"{url}/v1/messages", json={**body, "max_tokens": 5}, headers={"x-api-key": "wrong"}
        )
        assert denied.status_code == 401
        assert denied.json()["type"] == "error"
        with pytest.raises(anthropic.AuthenticationError):
            cluster.anthropic().messages.create(max_tokens=5, **body)
        ok = cluster.openai(api_key="secret").chat.completions.create(**body)
        assert ok.choices[0].message.content == "hello world"
        assert cluster.anthropic(api_key="secret").messages.create(max_tokens=5, **body).content
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.head(f"{url}/").status_code == 200
        assert "cortex gateway" in httpx.get(f"{url}/").text
        assert httpx.get(f"{url}/status").status_code == 401
        neuron = cluster.neurons["n1"].url
        assert httpx.get(f"{neuron}/v1/models").status_code == 401
        assert httpx.get(f"{neuron}/health").status_code == 200
        assert (
            httpx.get(f"{neuron}/models", headers={"authorization": "Bearer neuron-secret"}).status_code
            == 200
        )
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/chat/completions", b"{oops", 400),
        ("/v1/messages", b"{oops", 400),
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404),
        (
            "/v1/messages",
            {"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            404,
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            400,
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "top_p": 7},
            400,
        ),
        (
            "/v1/messages",
            {
                "model": "alpha",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "temperature": -3,
            },
            400,
        ),
        (
            "/v1/messages",
            {"model": "alpha", "max_tokens": "many", "messages": [{"role": "user", "content": "x"}]},
            400,
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": "x" * 5000}]},
            400,
        ),
        (
            "/v1/messages",
            {"model": "alpha", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 5000}]},
            400,
        ),
        (
            "/v1/messages",
            {
                "model": "alpha",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "x" * 5000}],
            },
            400,
        ),
        (
            "/v1/chat/completions",
            {"model": "alpha", "messages": [{"role": "user", "content": "x" * 40_000_000}]},
            413,
        ),
    ],
)
def test_bad_input_gets_a_4xx_in_the_callers_dialect(cluster, path, body, status):
    url = f"{cluster.gateway.url}{path}"
    reply = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()
    if path == "/v1/messages":
        assert error["type"] == "error"
        assert error["error"]["message"]
    else:
        assert error["error"]["message"]
    ok = httpx.post(
        f"{cluster.gateway.url}/v1/chat/completions",
        json={"model": "alpha", "messages": [{"role": "user", "content": "x"}]},
    )
    assert ok.status_code == 200


async def test_metrics_listener_shows_increasing_counters(cluster):
    metrics_app = create_metrics_app(cluster.app.state.metrics)

    async def scrape() -> str:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=metrics_app), base_url="http://m"
        ) as c:
            return (await c.get("/metrics")).text

    def total(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    sdk = cluster.openai()
    sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    before = await scrape()
    chunks = list(
        sdk.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: not sent, yet still counted
    after = await scrape()
    for name in (
        "cortex_requests_total",
        "cortex_completion_tokens_total",
        "cortex_request_duration_seconds_count",
        "cortex_time_to_first_token_seconds_count",
    ):
        assert total(after, name) > total(before, name), name
    assert 'cortex_fleet_events_total{type="loads"} 1.0' in after
    assert 'cortex_neuron_healthy{neuron="n1"} 1.0' in after
    assert "cortex_neuron_memory_used_bytes" in after


def test_a_neuron_dying_mid_stream_ends_the_stream_with_an_error_event(cluster):
    body = {
        "model": "slow",
        "max_tokens": 1000,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    lines = []
    with httpx.stream("POST", f"{cluster.gateway.url}/v1/messages", json=body, timeout=20) as reply:
        for line in reply.iter_lines():
            lines.append(line)
            if line == "event: content_block_delta":
                (serving,) = [name for name, loader in cluster.loaders.items() if "slow" in loader.engines]
                cluster.neurons[serving].kill()
    assert lines[0] == "event: message_start"
    assert "event: error" in lines
    error = json.loads(lines[lines.index("event: error") + 1].removeprefix("data: "))
    assert error["type"] == "error"
    assert error["error"]["message"]
    assert cluster.fleet.status().counters["stream_errors"] == 1


def test_status_page_and_status_show_a_cold_load_moving(cluster):
    """The gateway learns a load's progress through its poll of the neuron's /health."""
    for loader in cluster.loaders.values():
        loader.load_gate = threading.Event()
    body = {"model": "cold", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    request = threading.Thread(
        target=httpx.post,
        args=(f"{cluster.gateway.url}/v1/chat/completions",),
        kwargs={"json": body, "timeout": 30},
    )
    request.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            status = httpx.get(f"{cluster.gateway.url}/status").json()
            loading = [(n["name"], m) for n in status["neurons"] for m in n["models"] if m["id"] == "cold"]
            if loading and loading[0][1]["load_progress"] == 0.5:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        neuron, entry = loading[0]
        assert entry["status"] == "loading"
        page = httpx.get(f"{cluster.gateway.url}/").text
        assert "cold (loading 50%)" in page
        assert neuron in page
        assert "cold (loading 50%)" in render_status(status)
    finally:
        for loader in cluster.loaders.values():
            loader.load_gate.set()
        request.join(timeout=30)
    deadline = time.monotonic() + 20
    while True:
        models = [m for n in cluster.fleet.status().neurons for m in n.models if m.id == "cold"]
        if [m.status for m in models] == ["loaded"]:
            break
        assert time.monotonic() < deadline, models
        time.sleep(0.05)
    assert models[0].load_progress is None


def test_cold_load_and_long_prefill_send_keepalives_then_pings(cluster):
    body = {"model": "cold", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", f"{cluster.gateway.url}/v1/messages", json=body, timeout=20) as reply:
        lines = [line for line in reply.iter_lines() if line]
    start = lines.index("event: message_start")
    assert ": keep-alive" in lines[:start]  # before message_start only SSE comments (the SDKs need it first)
    assert "event: ping" in lines[start:]  # afterwards Anthropic pings while the prompt prefills
    assert lines[-2:] == ["event: message_stop", 'data: {"type":"message_stop"}']
    with httpx.stream(
        "POST", f"{cluster.gateway.url}/v1/chat/completions", timeout=20, json={**body, "model": "cold"}
    ) as reply:
        lines = [line for line in reply.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


async def test_dashboard_and_docs_name_only_metrics_that_are_exported(cluster):
    import re

    docs = Path(__file__).resolve().parents[2] / "docs"
    cluster.openai().chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    metrics_app = create_metrics_app(cluster.app.state.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metrics_app), base_url="http://m") as c:
        exported = (await c.get("/metrics")).text
    for server in cluster.neurons.values():
        exported += httpx.get(f"{server.url}/metrics").text
    families = set(re.findall(r"^# TYPE (cortex_\w+) ", exported, flags=re.MULTILINE))
    dashboard = (docs / "grafana-dashboard.json").read_text()
    documented = (docs / "metrics.md").read_text()
    for name in set(re.findall(r"cortex_\w+", dashboard)):
        assert re.sub(r"_(bucket|sum|count)$", "", name) in families, name
    for name in families - {f for f in families if f.endswith("_created")}:  # prometheus-client's timestamps
        assert re.sub(r"_total$", "", name) in documented, name


def test_the_upstream_timeout_is_an_idle_timeout_not_a_total_one(tmp_path):
    cluster = start_cluster(tmp_path, read_timeout_s=0.5)
    try:
        sdk = cluster.anthropic()
        # 0.6 s of prefill (bridged by the neuron's keep-alives) + 1.5 s of tokens: far over 0.5 s in total
        with sdk.messages.stream(
            model="steady", max_tokens=100, messages=[{"role": "user", "content": "x"}]
        ) as s:
            assert s.get_final_message().content[0].text == "t" * 30
    finally:
        cluster.close()


def test_models_advertise_the_context_window_in_both_shapes(cluster):
    sdk = cluster.anthropic()
    cluster.openai().chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])
    (alpha,) = [m for m in sdk.models.list().data if m.id == "alpha"]
    assert (alpha.max_input_tokens, alpha.max_tokens) == (4096, 4096)  # the fake models' context
    raw = httpx.get(f"{cluster.gateway.url}/v1/models").json()["data"]
    assert {m["id"]: m.get("max_model_len") for m in raw}["alpha"] == 4096


def test_count_tokens_never_loads_a_model(cluster):
    counted = cluster.anthropic().messages.count_tokens(
        model="alpha", messages=[{"role": "user", "content": "count me"}]
    )
    assert counted.input_tokens > 0
    assert all(not loader.load_calls for loader in cluster.loaders.values())
    assert not cluster.fleet.status().counters.get("loads")


def test_retry_after_and_per_neuron_labels_reach_the_caller(tmp_path):
    cluster = start_cluster(tmp_path)
    try:
        url = cluster.gateway.url
        body = {"model": "slow", "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200
        (serving,) = [name for name, loader in cluster.loaders.items() if "slow" in loader.engines]
        hosted = cluster.neurons[serving].server.config.app.state.neuron.store.get("slow")
        hosted.admission.max_running, hosted.admission.max_queue = 0, 0  # every request is refused now
        refused = httpx.post(f"{url}/v1/messages", json={**body, "max_tokens": 5}, timeout=30)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"  # the neuron's, passed on
        assert refused.json()["type"] == "error"
        metrics = cluster.app.state.metrics.render().decode()
        assert (
            f'cortex_requests_total{{endpoint="chat_completions",model="slow",neuron="{serving}"}} 1.0'
            in metrics
        )
        assert f'model="slow",neuron="{serving}",type="rate_limited"' in metrics
    finally:
        cluster.close()
