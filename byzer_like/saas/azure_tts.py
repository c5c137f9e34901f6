"""``saas/azure``: Azure Cognitive Services text to speech over its REST API.

``POST https://<region>.tts.speech.microsoft.com/cognitiveservices/v1`` with an SSML body, the key in
``Ocp-Apim-Subscription-Key`` and the audio encoding in ``X-Microsoft-OutputFormat``; the answer is the raw audio.

Example (the seed's line):
    byzer-like deploy --pretrained_model_type saas/azure --cpus_per_worker 0.001 --gpus_per_worker 0 \\
        --num_workers 1 --infer_params saas.api_key=${MODEL_AZURE_TTS_TOKEN} saas.service_region=eastus \\
        --model azure_tts
"""

from __future__ import annotations

from typing import ClassVar
from xml.sax.saxutils import escape, quoteattr

import httpx
from pydantic import Field

from byzer_like.backends.base import EngineOptions
from byzer_like.errors import UnsupportedError
from byzer_like.protocol import SpeechRequest, SpeechResponse
from byzer_like.saas.base import SaasOptions
from byzer_like.saas.tts_http import TTSBackend, TTSStatusError, content_type_of

TTS_PATH = "/cognitiveservices/v1"
OUTPUT_FORMATS = {"mp3": "audio-24khz-48kbitrate-mono-mp3", "wav": "riff-24khz-16bit-mono-pcm",
                  "pcm": "raw-24khz-16bit-mono-pcm", "opus": "ogg-24khz-16bit-mono-opus"}


class AzureTTSOptions(SaasOptions):
    """Options of ``saas/azure``."""

    model: str = Field(default="azure_tts", description="Not sent to Azure; names the model in stat.")
    service_region: str = Field(min_length=1, description="The Speech resource's region, e.g. eastus.")
    voice: str = Field(default="en-US-JennyNeural", description="Default neural voice when a request names none.")
    language: str = Field(default="en-US", description="xml:lang when the voice name carries no locale.")


class AzureTTSBackend(TTSBackend):
    """A proxy to Azure text to speech.

    Example:
        >>> BackendSpec(model_type="saas/azure", engine_kwargs={"service_region": "eastus", "api_key": "..."})
    """

    options_model: ClassVar[type[EngineOptions]] = AzureTTSOptions
    provider = "azure"
    options: AzureTTSOptions

    def base_url(self) -> str:
        """``saas.base_url`` or the region's speech endpoint."""
        return self.options.base_url or f"https://{self.options.service_region}.tts.speech.microsoft.com"

    def ssml(self, req: SpeechRequest) -> str:
        """The SSML document for one synthesis (the speed as a prosody rate)."""
        voice = req.voice or self.options.voice
        parts = voice.split("-")
        lang = "-".join(parts[:2]) if len(parts) >= 3 else self.options.language
        text = escape(req.input)
        if req.speed is not None:
            text = f"<prosody rate={quoteattr(f'{(req.speed - 1) * 100:+.0f}%')}>{text}</prosody>"
        return (f"<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang={quoteattr(lang)}>"
                f"<voice name={quoteattr(voice)}>{text}</voice></speak>")

    async def speech_once(self, req: SpeechRequest) -> SpeechResponse:
        """One synthesis call; the body of the answer is the audio."""
        output = OUTPUT_FORMATS.get(req.response_format)
        if output is None:
            raise UnsupportedError(f"response_format '{req.response_format}' is not supported by saas/azure "
                                   f"(supported: {', '.join(OUTPUT_FORMATS)})", param="response_format")
        headers = {"Ocp-Apim-Subscription-Key": self.secrets.get("api_key") or "",
                   "Content-Type": "application/ssml+xml", "X-Microsoft-OutputFormat": output,
                   "User-Agent": "byzer_like"}
        resp = await self.client.post(TTS_PATH, content=self.ssml(req).encode(), headers=headers)
        _check(resp)
        content_type = resp.headers.get("content-type") or content_type_of(req.response_format)
        return SpeechResponse(audio=resp.content, content_type=content_type.split(";")[0].strip())


def _check(resp: httpx.Response) -> None:
    if resp.status_code < 400 and resp.content:
        return
    message = resp.text[:200].strip() or resp.reason_phrase or "no audio in the answer"
    raise TTSStatusError(resp.status_code if resp.status_code >= 400 else 502, message, resp.headers)
