"""Structured outputs in the engine over the random-weight demo model: whatever the model prefers, the
output parses and validates (jsonschema is the judge), within max_tokens, also across preemption."""

from __future__ import annotations

import json

import jsonschema
import pytest

from cortex.engine.engine import Engine
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.structured import StructuredOutputsParams, UnsupportedSchemaError, backend
from cortex.errors import InvalidRequestError

NAME = {"type": "string"}
SCHEMAS: list[dict] = [
    {"type": "object", "properties": {"name": NAME}, "required": ["name"], "additionalProperties": False},
    {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 150}, "name": NAME},
        "required": ["age", "name"],
    },
    {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
        "required": ["x"],
    },
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}},
        "required": ["tags"],
    },
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            },
            "label": {"type": ["string", "null"]},
        },
        "required": ["point"],
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer", "minimum": 1}, "done": {"type": "boolean"}},
                    "required": ["id", "done"],
                },
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}, "n": {"const": 3}},
        "required": ["code", "n"],
    },
    {
        "type": "object",
        "properties": {"level": {"type": "integer", "enum": [1, 2, 3]}, "note": NAME},
        "required": ["level"],
    },
    {
        "type": "object",
        "properties": {"s": {"type": "string", "minLength": 3, "maxLength": 6}},
        "required": ["s"],
    },
]


def _params(schema: dict, *, seed: int, max_tokens: int = 48) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0,
        seed=seed,
        structured_outputs=StructuredOutputsParams.from_schema(schema),
    )


def test_fifty_json_schema_requests_all_validate(demo_engine: Engine):
    cases = [(SCHEMAS[i % len(SCHEMAS)], i) for i in range(50)]
    outs = demo_engine.generate(["Reply in JSON."] * len(cases), [_params(s, seed=i) for s, i in cases])
    for (schema, _), out in zip(cases, outs, strict=True):
        jsonschema.validate(json.loads(out.text), schema)
        assert out.finish_reason == "stop"
        assert len(out.token_ids) <= 48


def test_json_object_and_a_tight_budget(demo_engine: Engine):
    object_params = SamplingParams(
        max_tokens=12, temperature=1.0, seed=1, structured_outputs=StructuredOutputsParams(json_object=True)
    )
    tight = _params(SCHEMAS[1], seed=2, max_tokens=24)  # the shortest valid output is 22 tokens
    outs = demo_engine.generate(["{"] * 2, [object_params, tight])
    assert isinstance(json.loads(outs[0].text), dict)
    jsonschema.validate(json.loads(outs[1].text), SCHEMAS[1])
    assert [len(out.token_ids) <= limit for out, limit in zip(outs, (12, 24), strict=True)] == [True, True]


def test_unsupported_features_and_small_budgets_are_refused(demo_engine: Engine):
    with pytest.raises(UnsupportedSchemaError, match="not"):
        demo_engine.generate(["x"], _params({"type": "object", "not": {"required": ["a"]}}, seed=0))
    with pytest.raises(UnsupportedSchemaError, match="look-around"):
        demo_engine.generate(["x"], _params({"type": "string", "pattern": "(?=a)b"}, seed=0))
    with pytest.raises(InvalidRequestError, match="too small for this output format"):
        demo_engine.generate(["x"], _params(SCHEMAS[2], seed=0, max_tokens=5))


def test_reasoning_stays_free_and_is_closed_in_time(demo_engine: Engine):
    tokenizer = demo_engine.tokenizer
    assert tokenizer is not None
    think_end = tokenizer.token_to_id("</think>")
    structured = StructuredOutputsParams(json=json.dumps(SCHEMAS[0]), reasoning_end_token_id=think_end)
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=5, structured_outputs=structured)
    out = demo_engine.generate(["<think>\n"], params)[0]
    assert think_end in out.token_ids
    after = out.token_ids[out.token_ids.index(think_end) + 1 :]
    jsonschema.validate(json.loads(tokenizer.decode(after)), SCHEMAS[0])


def test_preemption_does_not_change_constrained_output(demo_model):
    params = [_params(SCHEMAS[i], seed=i, max_tokens=40) for i in (0, 1, 4)]  # free strings: long outputs
    prompts = [list(range(3, 8)), list(range(10, 90)), [(7 * i) % 500 + 1 for i in range(23)]]
    with Engine.from_pretrained(demo_model, max_model_len=128) as roomy:
        expected = [out.token_ids for out in roomy.generate(prompts, params)]
        per_block, per_slot = roomy.cache_plan.bytes_per_block, roomy.cache_plan.bytes_per_slot
    # as in test_engine_models: too few blocks for all three, and as much again for prefix-cache snapshots
    budget = 2 * (3 * per_slot + 10 * per_block)
    with Engine.from_pretrained(
        demo_model,
        max_model_len=128,
        cache_memory_bytes=budget,
        prefill_chunk_size=32,
        snapshot_memory_fraction=0.5,
    ) as tight:
        outs = tight.generate(prompts, params)
        assert tight.stats().num_preemptions > 0
    assert [out.token_ids for out in outs] == expected


def test_the_grammar_backend_is_built_at_load_not_by_the_first_structured_request(demo_model, monkeypatch):
    """Building llguidance's view of the vocabulary holds the GIL for seconds: never while serving."""
    with Engine.from_pretrained(demo_model, max_model_len=128) as engine:
        monkeypatch.setattr(backend.GrammarBackend, "__init__", lambda *a, **k: pytest.fail("built late"))
        monkeypatch.setattr(backend, "_SHARED", {})  # nor taken from another engine's cache now
        params = SamplingParams(
            max_tokens=24, temperature=0.0, structured_outputs=StructuredOutputsParams(json_object=True)
        )
        (out,) = engine.generate(["x"], params)
        assert out.finish_reason in ("stop", "length")
