"""The OpenAI audio and image routes: ``/v1/audio/transcriptions``, ``/v1/audio/speech``, ``/v1/images/generations``.

Each route reaches its alias through the same ``Aliases`` helper as chat; an alias whose backend lacks the
capability answers 400 naming it (the backend's ``UnsupportedError``), an unknown alias 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from byzer_like.errors import InvalidRequestError, UnsupportedError
from byzer_like.gateway.auth import Grant
from byzer_like.gateway.deps import aliases_of, grant_of
from byzer_like.gateway.schemas import ImagesBody, SpeechBody

router = APIRouter(prefix="/v1", tags=["openai"])
TRANSCRIPTION_FIELDS = frozenset({"file", "model", "language", "prompt", "response_format", "temperature"})


@router.post("/audio/transcriptions", response_model=None)
async def transcriptions(request: Request, file: UploadFile = File(description="The audio file."),
                         model: str = Form(min_length=1), language: str | None = Form(default=None),
                         prompt: str | None = Form(default=None), response_format: str = Form(default="json"),
                         temperature: float | None = Form(default=None),
                         grant: Grant = Depends(grant_of)) -> Response:
    """Speech to text (multipart upload, as the openai SDK sends it)."""
    grant.require(model)
    unknown = sorted(set((await request.form()).keys()) - TRANSCRIPTION_FIELDS)
    if unknown:
        raise UnsupportedError(f"field '{unknown[0]}' is not supported on /v1/audio/transcriptions; remove it",
                               param=unknown[0])
    audio = await file.read()
    if not audio:
        raise InvalidRequestError("the uploaded audio file is empty", param="file")
    params = {"filename": file.filename or "audio.wav", "language": language, "prompt": prompt,
              "response_format": response_format, "temperature": temperature}
    result = await aliases_of(request).call(model, "transcribe", audio, **params)
    if response_format in ("text", "srt", "vtt"):
        return PlainTextResponse(result.text)
    if response_format == "verbose_json":
        return JSONResponse({"task": "transcribe", "language": result.language, "duration": result.duration,
                             "text": result.text})
    return JSONResponse({"text": result.text})


@router.post("/audio/speech", response_model=None)
async def speech(body: SpeechBody, request: Request, grant: Grant = Depends(grant_of)) -> Response:
    """Text to speech; the body is the audio, with its content type."""
    grant.require(body.model)
    if body.instructions:
        raise UnsupportedError("parameter 'instructions' is not supported; remove it", param="instructions")
    params = body.model_dump(include={"voice", "response_format", "speed"}, exclude_none=True)
    result = await aliases_of(request).call(body.model, "speech", body.input, **params)
    return Response(content=result.audio, media_type=result.content_type)


@router.post("/images/generations")
async def images(body: ImagesBody, request: Request, grant: Grant = Depends(grant_of)) -> JSONResponse:
    """Image generation (URLs or base64 data, as asked)."""
    grant.require(body.model)
    params = body.model_dump(include={"n", "size", "quality", "response_format", "style"}, exclude_none=True)
    result = await aliases_of(request).call(body.model, "generate_image", body.prompt, **params)
    return JSONResponse({"created": result.created,
                         "data": [image.model_dump(exclude_none=True) for image in result.data]})
