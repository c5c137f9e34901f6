"""Speech to text, text to speech and image generation end to end.

The seed's command lines as written (base URLs pointed at local fake upstreams) deploy real worker actors on the
session Ray cluster; the Python client and the gateway (in-process ASGI, driven by the real ``openai`` SDK) reach
them through the router. saas/openai uses the real ``openai`` SDK against ``OpenAIUpstream``.
"""

from __future__ import annotations

import base64
import json
import time

import httpx2
import openai
import pytest

from byzer_like import AsyncClient, AuthenticationError, Client, DeploySpec, InvalidRequestError, UnsupportedError
from byzer_like.gateway import GatewaySettings, KeyTable, build_app
from byzer_like.spec import BackendSpec
from tests.conftest import run_cli
from tests.upstreams.openai_server import OpenAIUpstream

KEY = "sk-test-secret-123456"
WRONG_KEY = "sk-wrong-key-987654"
SEED_ENV = {"MODEL_OPENAI_TOKEN": KEY}
# The seed's three lines (docs/saas.md), plus saas.base_url pointing at the local upstream.
SEED_LINES = {
    "voice2text": ["--worker_concurrency", "10", "--infer_params", "saas.model=whisper-1",
                   "saas.api_key=${MODEL_OPENAI_TOKEN}"],
    "openai_tts": ["--infer_params", "saas.api_key=${MODEL_OPENAI_TOKEN}", "saas.model=tts-1"],
    "openai_image_gen": ["--infer_params", "saas.api_key=${MODEL_OPENAI_TOKEN}", "saas.model=dall-e-3"],
}
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def upstream():
    with OpenAIUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture()
def up(upstream):
    upstream.faults.clear()
    upstream.received.clear()
    return upstream


@pytest.fixture(scope="module")
def aliases(ray_cluster, upstream):
    """The seed's whisper-1, tts-1 and dall-e-3 lines through the real CLI, a chat-only alias, a bad-key alias."""
    from byzer_like.pool import deploy, list_aliases, undeploy

    outputs = []
    for alias, line in SEED_LINES.items():
        args = ["deploy", "--pretrained_model_type", "saas/openai", "--cpus_per_worker", "0.001",
                "--gpus_per_worker", "0", "--num_workers", "1", *line, f"saas.base_url={upstream.url}/v1",
                "--model", alias]
        done = run_cli(*args, env=SEED_ENV)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    assert all(KEY not in text for text in outputs)
    deploy(DeploySpec(alias="av_chat_only", backend=BackendSpec(model_type="custom/echo")), replace=True)
    bad = {"model": "tts-1", "api_key": WRONG_KEY, "base_url": upstream.url + "/v1"}
    deploy(DeploySpec(alias="av_bad_key", backend=BackendSpec(model_type="saas/openai", engine_kwargs=bad)),
           replace=True)
    yield
    for alias in [*SEED_LINES, "av_chat_only", "av_bad_key"]:
        if alias in list_aliases():
            undeploy(alias, force=True)


def sdk(keys: KeyTable | None = None, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The real openai SDK talking to the gateway app in-process."""
    app = build_app(GatewaySettings(), keys=keys)
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw")
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key=api_key, http_client=http, max_retries=0)


# -- Python client ---------------------------------------------------------------------------------------------
def test_client_transcribe_speech_and_images(aliases, up, tmp_path):
    audio = tmp_path / "hello.wav"
    audio.write_bytes(WAV)
    text = Client("voice2text").transcribe(audio, language="en", prompt="greeting", temperature=0.1)
    assert text.text == f"transcript of {len(WAV)} bytes"
    sent = up.received[-1].body
    assert sent["model"] == "whisper-1" and sent["filename"] == "hello.wav" and sent["bytes"] == len(WAV)
    assert sent["language"] == "en" and sent["prompt"] == "greeting" and sent["temperature"] == "0.1"
    verbose = Client("voice2text").transcribe(b"12345", response_format="verbose_json", language="fr")
    assert (verbose.text, verbose.language, verbose.duration) == ("transcript of 5 bytes", "fr", 1.5)
    assert Client("voice2text").transcribe(b"123", response_format="srt").text == "transcript of 3 bytes"

    spoken = Client("openai_tts").speech("Hello world", voice="nova", speed=1.25)
    assert spoken.audio == b"ID3Hello world" and spoken.content_type == "audio/mpeg"
    assert up.received[-1].body == {"model": "tts-1", "input": "Hello world", "voice": "nova",
                                    "response_format": "mp3", "speed": 1.25}
    assert Client("openai_tts").speech("hi").audio == b"ID3hi"
    assert up.received[-1].body["voice"] == "alloy"  # the alias's default voice

    images = Client("openai_image_gen").generate_image("a red fox", size="1024x1024", quality="hd",
                                                       response_format="b64_json", style="vivid")
    assert base64.b64decode(images.data[0].b64_json) == b"PNG:a red fox"
    assert images.data[0].revised_prompt == "a red fox" and images.created > 0
    assert up.received[-1].body == {"model": "dall-e-3", "prompt": "a red fox", "n": 1, "size": "1024x1024",
                                    "quality": "hd", "response_format": "b64_json", "style": "vivid"}
    stat = Client("openai_tts").stat()
    assert sum(stat["total_requests"]) == 2 and KEY not in json.dumps(stat)


@pytest.mark.anyio
async def test_async_client_and_retry_after_429(aliases, up):
    # the seed line keeps the default backoff (first retry within 0.5 s): a longer Retry-After tells them apart
    up.add_fault(status=429, headers={"Retry-After": "1"})
    start = time.monotonic()
    spoken = await AsyncClient("openai_tts").speech("again", response_format="wav")
    elapsed = time.monotonic() - start
    assert spoken.audio == b"ID3again"
    assert [row.status for row in up.received] == [429, None] and up.received[-1].body["response_format"] == "wav"
    # Retry-After was honoured: the retry came no sooner than 1 s after the 429 (our own backoff is <= 0.5 s)
    assert up.retry_gap(429) >= 1.0 * 0.9
    assert elapsed >= 1.0 * 0.9
    images = await AsyncClient("openai_image_gen").generate_image("x", n=1)
    assert images.data[0].b64_json


def test_invalid_requests_are_named_before_any_upstream_call(aliases, up):
    with pytest.raises(InvalidRequestError) as info:
        Client("openai_tts").speech("hi", speed=9)
    assert info.value.param == "speed"
    with pytest.raises(InvalidRequestError) as info:
        Client("voice2text").transcribe(b"")
    assert info.value.param == "audio"
    assert not up.received


def test_chat_only_alias_names_the_capability(aliases):
    for call, capability, param in ((lambda c: c.speech("hi"), "text to speech", "input"),
                                    (lambda c: c.transcribe(b"abc"), "speech to text", "file"),
                                    (lambda c: c.generate_image("fox"), "image generation", "prompt")):
        with pytest.raises(UnsupportedError) as info:
            call(Client("av_chat_only"))
        assert capability in info.value.message and "av_chat_only" in info.value.message
        assert info.value.param == param


def test_upstream_401_is_an_authentication_error(aliases, up):
    with pytest.raises(AuthenticationError) as info:
        Client("av_bad_key").speech("hi")
    assert info.value.upstream_status == 401 and "Incorrect API key provided" in info.value.message
    assert WRONG_KEY not in info.value.message
    assert len(up.received) == 1  # a 401 is not retried


# -- gateway with the real openai SDK ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_gateway_openai_sdk_audio_and_images(aliases, up):
    client = sdk()
    text = await client.audio.transcriptions.create(model="voice2text", file=("hi.wav", WAV), language="en")
    assert text.text == f"transcript of {len(WAV)} bytes"
    assert up.received[-1].body["filename"] == "hi.wav"
    plain = await client.audio.transcriptions.create(model="voice2text", file=("a.mp3", b"abcd"),
                                                     response_format="text")
    assert plain.strip() == "transcript of 4 bytes"
    verbose = await client.audio.transcriptions.create(model="voice2text", file=("a.mp3", b"abcd"),
                                                       response_format="verbose_json")
    assert verbose.language == "english" and verbose.duration == 1.5

    speech = await client.audio.speech.create(model="openai_tts", input="Hello there", voice="echo", speed=1.5)
    assert speech.content == b"ID3Hello there"
    assert speech.response.headers["content-type"] == "audio/mpeg"
    assert up.received[-1].body["voice"] == "echo" and up.received[-1].body["speed"] == 1.5

    images = await client.images.generate(model="openai_image_gen", prompt="a blue whale", n=1, size="1024x1024",
                                          response_format="b64_json")
    assert base64.b64decode(images.data[0].b64_json) == b"PNG:a blue whale"
    assert images.data[0].revised_prompt == "a blue whale" and images.data[0].url is None


@pytest.mark.anyio
async def test_gateway_errors_are_mapped(aliases, up):
    client = sdk()
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.speech.create(model="av_chat_only", input="hi", voice="alloy")
    err = info.value.body
    assert info.value.status_code == 400 and "text to speech" in err["message"] and err["param"] == "input"
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(model="av_chat_only", prompt="fox")
    assert "image generation" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.transcriptions.create(model="av_chat_only", file=("a.wav", b"abc"))
    assert "speech to text" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await client.audio.speech.create(model="no_such_alias", input="hi", voice="alloy")
    with pytest.raises(openai.AuthenticationError) as info:
        await client.audio.speech.create(model="av_bad_key", input="hi", voice="alloy")
    assert "Incorrect API key provided" in info.value.body["message"] and WRONG_KEY not in str(info.value.body)
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.speech.create(model="openai_tts", input="hi", voice="alloy", speed=10)
    assert info.value.body["param"] == "speed"
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.transcriptions.create(model="voice2text", file=("a.wav", b"abc"),
                                                 timestamp_granularities=["word"])
    assert "timestamp_granularities" in info.value.body["param"]


@pytest.mark.anyio
async def test_gateway_auth_on_media_routes(aliases, up):
    keys = KeyTable.from_text("all-key\nttsonly=openai_tts")
    with pytest.raises(openai.AuthenticationError):
        await sdk(keys, api_key="nope").audio.speech.create(model="openai_tts", input="hi", voice="alloy")
    limited = sdk(keys, api_key="ttsonly")
    assert (await limited.audio.speech.create(model="openai_tts", input="ok", voice="alloy")).content == b"ID3ok"
    with pytest.raises(openai.PermissionDeniedError):
        await limited.images.generate(model="openai_image_gen", prompt="fox")
    with pytest.raises(openai.PermissionDeniedError):
        await limited.audio.transcriptions.create(model="voice2text", file=("a.wav", b"abc"))


# -- Volcengine and Azure text to speech (seed lines through the CLI, fake providers) ---------------------------
VOLC_KEY, AZURE_KEY = "volc-token-abcdef123", "azure-key-abcdef123"


@pytest.fixture(scope="module")
def tts_aliases(ray_cluster):
    """The seed's saas/volcengine and saas/azure lines as written, base URLs pointed at the fake providers."""
    from byzer_like.pool import list_aliases, undeploy
    from tests.upstreams.tts_servers import AzureTTSUpstream, VolcengineUpstream

    env = {"MODEL_VOLCANO_TTS_TOKEN": VOLC_KEY, "MODEL_AZURE_TTS_TOKEN": AZURE_KEY}
    common = ["--cpus_per_worker", "0.001", "--gpus_per_worker", "0", "--num_workers", "1"]
    with VolcengineUpstream(api_key=VOLC_KEY) as volc, AzureTTSUpstream(api_key=AZURE_KEY) as azure:
        lines = [["--pretrained_model_type", "saas/volcengine", *common, "--infer_params",
                  "saas.api_key=${MODEL_VOLCANO_TTS_TOKEN}", "saas.app_id=6503259792", "saas.model=volcano_tts",
                  f"saas.base_url={volc.url}", "saas.retry_base_s=0.05", "--model", "volcano_tts"],
                 ["--pretrained_model_type", "saas/azure", *common, "--infer_params",
                  "saas.api_key=${MODEL_AZURE_TTS_TOKEN}", "saas.service_region=eastus", f"saas.base_url={azure.url}",
                  "saas.retry_base_s=0.05", "--model", "azure_tts"]]
        for line in lines:
            done = run_cli("deploy", *line, env=env)
            assert done.returncode == 0, done.stderr
            assert VOLC_KEY not in done.stdout + done.stderr and AZURE_KEY not in done.stdout + done.stderr
        yield volc, azure
        for alias in ("volcano_tts", "azure_tts"):
            if alias in list_aliases():
                undeploy(alias, force=True)


def test_volcengine_tts(tts_aliases):
    volc, _ = tts_aliases
    volc.received.clear()
    spoken = Client("volcano_tts").speech("你好, world", speed=1.2)
    assert spoken.audio == "VOLC:mp3:BV001_streaming:你好, world".encode() and spoken.content_type == "audio/mpeg"
    sent = volc.received[-1]
    assert sent.headers["Authorization"] == f"Bearer;{VOLC_KEY}"
    assert sent.body["app"] == {"appid": "6503259792", "token": "access_token", "cluster": "volcano_tts"}
    assert sent.body["audio"]["speed_ratio"] == 1.2 and sent.body["request"]["operation"] == "query"
    assert Client("volcano_tts").speech("hi", voice="BV700_streaming", response_format="wav").audio == \
        b"VOLC:wav:BV700_streaming:hi"
    with pytest.raises(UnsupportedError) as info:
        Client("volcano_tts").speech("hi", response_format="flac")
    assert info.value.param == "response_format"
    with pytest.raises(UnsupportedError) as info:
        Client("volcano_tts").chat("hi")
    assert "chat" in info.value.message
    # a failure code inside a 200 answer is mapped by its number (3050: voice does not exist -> 400)
    volc.add_fault(status=200, body={"reqid": "r1", "code": 3050, "message": "voice_type not found"})
    with pytest.raises(InvalidRequestError) as info:
        Client("volcano_tts").speech("hi", voice="nope")
    assert info.value.upstream_status == 400 and "voice_type not found" in info.value.message
    # concurrency quota (3003, HTTP 429) is retried
    volc.add_fault(status=429)
    assert Client("volcano_tts").speech("again").audio.endswith(b":again")
    assert VOLC_KEY not in json.dumps(Client("volcano_tts").stat())


def test_azure_tts(tts_aliases):
    _, azure = tts_aliases
    azure.received.clear()
    spoken = Client("azure_tts").speech("Fish & chips", voice="zh-CN-XiaoxiaoNeural", speed=1.5)
    assert spoken.audio == b"AZ:audio-24khz-48kbitrate-mono-mp3:zh-CN-XiaoxiaoNeural:Fish &amp; chips"
    assert spoken.content_type == "audio/mpeg"
    sent = azure.received[-1]
    assert sent.headers["Ocp-Apim-Subscription-Key"] == AZURE_KEY
    assert b'xml:lang="zh-CN"' in sent.body and b'<prosody rate="+50%">' in sent.body
    wav = Client("azure_tts").speech("hi", response_format="wav")
    assert wav.audio.startswith(b"AZ:riff-24khz-16bit-mono-pcm:en-US-JennyNeural") and wav.content_type == "audio/x-wav"
    azure.add_fault(status=503)
    assert Client("azure_tts").speech("retry me").audio.endswith(b":retry me")


@pytest.mark.anyio
async def test_tts_providers_through_gateway_and_401(tts_aliases):
    volc, azure = tts_aliases
    client = sdk()
    volc_audio = await client.audio.speech.create(model="volcano_tts", input="hello", voice="BV001_streaming")
    assert volc_audio.content == b"VOLC:mp3:BV001_streaming:hello"
    azure_audio = await client.audio.speech.create(model="azure_tts", input="hello", voice="en-US-AriaNeural",
                                                   response_format="wav")
    assert azure_audio.content.startswith(b"AZ:riff") and azure_audio.response.headers["content-type"] == "audio/x-wav"
    from byzer_like.pool import deploy, undeploy

    for kind, extra, alias, server in (("saas/volcengine", {"app_id": "1"}, "volc_bad", volc),
                                       ("saas/azure", {"service_region": "eastus"}, "azure_bad", azure)):
        engine = {"api_key": "bad-key-0000000000", "base_url": server.url, **extra}
        deploy(DeploySpec(alias=alias, backend=BackendSpec(model_type=kind, engine_kwargs=engine)), replace=True)
        try:
            with pytest.raises(openai.AuthenticationError) as info:
                await client.audio.speech.create(model=alias, input="hi", voice="x-y-z")
            body = info.value.body
            assert "bad-key-0000000000" not in json.dumps(body)
            assert ("grant not found" in body["message"]) if alias == "volc_bad" else ("invalid subscription"
                                                                                       in body["message"])
        finally:
            undeploy(alias, force=True)


def test_azure_openai_audio_and_images(deployed, up):
    engine = {"model": "tts-1", "api_key": KEY, "azure_endpoint": up.url + "/", "azure_deployment": "my-tts",
              "api_version": "2024-02-15-preview"}
    deployed(DeploySpec(alias="av_azure_openai", backend=BackendSpec(model_type="saas/azure_openai",
                                                                     engine_kwargs=engine)))
    client = Client("av_azure_openai")
    assert client.speech("hola").audio == b"ID3hola"
    assert client.transcribe(b"abcd").text == "transcript of 4 bytes"
    assert base64.b64decode(client.generate_image("sun").data[0].b64_json) == b"PNG:sun"
    paths = [r.path for r in up.received]
    assert paths == ["/openai/deployments/my-tts/audio/speech", "/openai/deployments/my-tts/audio/transcriptions",
                     "/openai/deployments/my-tts/images/generations"]
    assert up.received[0].headers["api-key"] == KEY
