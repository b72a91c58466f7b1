"""Agents' API end to end (issue 13): tool calling, thought signatures, structured output and
reasoning through the real `openai` and `google-genai` SDKs, called the way agent code calls
them, and a tool loop in a stored conversation that sends only new messages. The mock Gemini
answers function calls like Gemini, and a `gemini-3*` model refuses history whose calls lost
their thought signature, as Gemini 3 does."""

import json

import pytest
import requests
from google import genai
from google.genai import types
from openai import OpenAI
from pydantic import BaseModel

from .conftest import MAIN, SEED_KEYS

FLASH = "gemini-2.5-flash"
G3 = "gemini-3-pro-preview"

KEYS = {
    "keys": SEED_KEYS["keys"] + [
        {"key_id": f"gemini-3-0{i}", "model_name": G3, "provider": "gemini", "rpm": 100, "tpm": 1000000,
         "rpd": 10000, "active": True} for i in (1, 2)
    ],
    "fallbacks": SEED_KEYS.get("fallbacks", {}),
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/unit"}},
            "required": ["city"],
            "additionalProperties": False,
            "$defs": {"unit": {"anyOf": [{"type": "string", "enum": ["c", "f"]}, {"type": "null"}]}},
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Local time in a city.",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}


@pytest.fixture(scope="module")
def agent(env):
    return env.start_worker(keys=KEYS, vars={"USER_RPM_DEFAULT": "100000", "USER_BURST_DEFAULT": "100000"})


@pytest.fixture()
def fresh(env, clean):
    """`clean`, with the mock serving the gemini-3 keys too."""
    env.mock_reset(KEYS)
    yield env


def oai(w):
    return OpenAI(base_url=w.url + "/v1", api_key=MAIN, max_retries=0)


def last_upstream_body(env):
    return env.mock_requests()[-1]["body"]


def test_plain_tool_call(agent, fresh):
    r = oai(agent).chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "Use get_weather: what is the weather in Paris?"}],
        tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    assert call.id.startswith("call_")
    # The schema went upstream whole, as JSON Schema.
    decl = last_upstream_body(fresh)["tools"][0]["functionDeclarations"][0]
    assert decl["parametersJsonSchema"]["$defs"]["unit"]["anyOf"][1] == {"type": "null"}
    assert "parameters" not in decl


def test_streamed_tool_call_is_assembled_by_the_sdk(agent, fresh):
    with oai(agent).chat.completions.stream(
        model=FLASH, messages=[{"role": "user", "content": "Call get_weather for the weather in Oslo."}],
        tools=[WEATHER],
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


def test_parallel_calls(agent, fresh):
    r = oai(agent).chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "Use get_weather and get_time for Rome, in Rome."}],
        tools=[WEATHER, TIME])
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2


def test_tool_choice_required_and_named(agent, fresh):
    c = oai(agent)
    msgs = [{"role": "user", "content": "Hello there."}]
    r = c.chat.completions.create(model=FLASH, messages=msgs, tools=[WEATHER, TIME], tool_choice="required")
    assert r.choices[0].message.tool_calls, r
    assert last_upstream_body(fresh)["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"
    r = c.chat.completions.create(model=FLASH, messages=msgs, tools=[WEATHER, TIME],
                                  tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [t.function.name for t in r.choices[0].message.tool_calls] == ["get_time"]
    fcc = last_upstream_body(fresh)["toolConfig"]["functionCallingConfig"]
    assert fcc == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    r = c.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "get_weather in Paris"}],
                                  tools=[WEATHER], tool_choice="none")
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason == "stop"


def run_tool_loop(client, model, first_prompt):
    """What agent frameworks do: call, run the tool, replay only id/type/function, send the result."""
    msgs = [{"role": "user", "content": first_prompt}]
    r = client.chat.completions.create(model=model, messages=msgs, tools=[WEATHER])
    (call,) = r.choices[0].message.tool_calls
    msgs.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21})})
    return call, client.chat.completions.create(model=model, messages=msgs, tools=[WEATHER])


def test_tool_result_round_trip(agent, fresh):
    _, r = run_tool_loop(oai(agent), FLASH, "get_weather in Paris please")
    assert r.choices[0].message.content == 'Result of get_weather: {"temp":21}'
    assert r.choices[0].finish_reason == "stop"
    contents = last_upstream_body(fresh)["contents"]
    assert contents[1]["parts"][-1]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"temp": 21}}


def test_signature_requiring_model_replayed_with_only_id_type_function(agent, fresh):
    call, r = run_tool_loop(oai(agent), G3, "get_weather in Lisbon please")
    assert "__thought__" in call.id
    assert r.choices[0].message.content == 'Result of get_weather: {"temp":21}'
    replayed = last_upstream_body(fresh)["contents"][1]["parts"][-1]
    assert replayed["thoughtSignature"], replayed
    # Without the signature the model refuses, and the caller hears it; no key suffers.
    bare = "call_" + call.id.split("_")[1]
    r = requests.post(agent.url + "/v1/chat/completions", headers={"authorization": f"Bearer {MAIN}"}, json={
        "model": G3, "tools": [WEATHER], "messages": [
            {"role": "user", "content": "get_weather in Lisbon please"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": bare, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}}]},
            {"role": "tool", "tool_call_id": bare, "content": "21C"}]}, timeout=30)
    assert r.status_code == 400 and "thought_signature" in r.json()["error"]["message"], r.text
    assert fresh.redis_cmd("KEYS", "{llmr}:dis:*") == []


def test_json_schema_output(agent, fresh):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = oai(agent).chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    doc = json.loads(r.choices[0].message.content)
    assert set(doc) == {"name", "age"} and isinstance(doc["age"], int)
    gc = last_upstream_body(fresh)["generationConfig"]
    assert gc["responseMimeType"] == "application/json" and gc["responseJsonSchema"] == schema


def test_reasoning_effort(agent, fresh):
    c = oai(agent)
    for effort, budget in (("none", 0), ("low", 1024), ("high", 24576)):
        r = c.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "What is 2+2?"}],
                                      reasoning_effort=effort)
        assert r.choices[0].message.content == "4"
        assert last_upstream_body(fresh)["generationConfig"]["thinkingConfig"]["thinkingBudget"] == budget
    r = c.chat.completions.create(model=G3, messages=[{"role": "user", "content": "What is 2+2?"}],
                                  reasoning_effort="high", extra_body={"google": {"thinking_config": {"include_thoughts": True}}})
    msg = r.choices[0].message
    assert msg.content == "4"
    assert (msg.model_extra or {}).get("reasoning_content", "").startswith("Thinking about")
    assert last_upstream_body(fresh)["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "high"


# --- google-genai ---------------------------------------------------------------------------------

def gclient(w):
    return genai.Client(api_key=MAIN, http_options=types.HttpOptions(base_url=w.url))


def test_genai_function_declarations(agent, fresh):
    decl = types.FunctionDeclaration(
        name="get_weather", description="Current weather in a city.",
        parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    c = gclient(agent)
    r = c.models.generate_content(model=FLASH, contents="Use get_weather: weather in Madrid?",
                                  config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[decl])]))
    (fc,) = r.function_calls
    assert fc.name == "get_weather" and fc.args == {"city": "Madrid"}


def test_genai_automatic_function_calling(agent, fresh):
    calls = []

    def get_weather(city: str) -> dict:
        """Current weather in a city."""
        calls.append(city)
        return {"temp": 18}

    c = gclient(agent)
    chat = c.chats.create(model=FLASH, config=types.GenerateContentConfig(tools=[get_weather]))
    r = chat.send_message("Call get_weather for the weather in Berlin.")
    assert calls == ["Berlin"]
    # The SDK wraps a function's return value as {"result": ...}.
    assert r.text == 'Result of get_weather: {"result":{"temp":18}}'


def test_genai_signature_round_trip(agent, fresh):
    decl = types.FunctionDeclaration(
        name="get_weather", description="Current weather in a city.",
        parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    c = gclient(agent)
    chat = c.chats.create(model=G3, config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[decl])]))
    r = chat.send_message("Use get_weather for the weather in Vienna.")
    part = r.candidates[0].content.parts[0]
    assert part.function_call.name == "get_weather" and part.thought_signature
    r = chat.send_message(types.Part.from_function_response(name="get_weather", response={"temp": 9}))
    assert r.text == 'Result of get_weather: {"temp":9}'


def test_genai_response_schema(agent, fresh):
    class City(BaseModel):
        name: str
        population: int

    c = gclient(agent)
    r = c.models.generate_content(model=FLASH, contents="Describe a city.",
                                  config=types.GenerateContentConfig(response_mime_type="application/json",
                                                                     response_schema=City))
    assert isinstance(r.parsed, City)


# --- a stored conversation runs a tool loop, sending only new messages ----------------------------

def test_conversation_tool_loop_sends_only_new_messages(agent, fresh):
    cid = agent.post("/v1/conversations", {"model": G3}).json()["id"]
    c = oai(agent)
    h = {"X-Conversation-Id": cid}
    r = c.chat.completions.create(model=G3, messages=[{"role": "user", "content": "get_weather in Dublin please"}],
                                  tools=[WEATHER], extra_headers=h)
    (call,) = r.choices[0].message.tool_calls
    # Only the tool result: the router rebuilds the history, signature included.
    r = c.chat.completions.create(model=G3, tools=[WEATHER], extra_headers=h,
                                  messages=[{"role": "tool", "tool_call_id": call.id, "content": '{"temp": 12}'}])
    assert r.choices[0].message.content == 'Result of get_weather: {"temp":12}'
    sent = last_upstream_body(fresh)["contents"]
    assert [t["role"] for t in sent] == ["user", "model", "user"]
    assert sent[1]["parts"][-1]["thoughtSignature"]
    r = c.chat.completions.create(model=G3, extra_headers=h,
                                  messages=[{"role": "user", "content": "What was my previous question?"}])
    assert r.choices[0].message.content == "get_weather in Dublin please"  # the history survived the loop
    msgs = agent.get(f"/v1/conversations/{cid}/messages").json()["data"]
    assert msgs[1]["tool_calls"][0]["id"] == call.id and msgs[1]["tool_calls"][0]["name"] == "get_weather"
    assert msgs[2]["tool_results"] == [{"name": "get_weather", "response": {"temp": 12}}]
    assert len(msgs) == 6


def test_fallback_header_reaches_the_sdk_surfaces(agent, fresh):
    # Exhaust pro's rpd-free path: a per-day 429 on pro's only key, then the header allows flash.
    fresh.fault("429_rpd", 1, model="gemini-2.5-pro")
    r = oai(agent).chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "What is 2+2?"}],
                                           extra_headers={"X-Allow-Fallback": "true"})
    assert r.choices[0].message.content == "4"
    assert r.model == FLASH
