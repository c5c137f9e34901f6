"""Keys that never show: sealed at the CLI edge, resolved inside the worker, scrubbed from upstream messages.

Where a key may come from (see ``docs/saas.md``):

* ``saas.api_key=...`` (a literal, or ``${VAR}`` rendered by the shell or by us) and ``--token-env VAR``: read at
  the edge and sealed at once in a :class:`pydantic.SecretStr`, so every repr, JSON dump, log line, ``list`` and
  ``stat`` shows ``**********``. The sealed value travels pickled inside the spec to the worker that needs it.
* ``saas.api_key_file=PATH`` / ``--token-file PATH``: only the path travels; the worker reads the file in
  ``start()``, so the key never leaves the worker's node.

Example:
    >>> sealed = seal_secrets({"api_key": "sk-1", "model": "gpt-4o"})
    >>> sealed["api_key"]
    SecretStr('**********')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from pydantic import SecretStr

from byzer_like.errors import AuthenticationError

SECRET_FIELDS = ("api_key", "aws_access_key", "aws_secret_key", "aws_session_token")
MASK = "**********"


def seal_secrets(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Wrap every secret field's plain value in a ``SecretStr`` (idempotent).

    Args:
        kwargs: A backend's ``engine_kwargs``.

    Returns:
        A new dict with secrets sealed; other values unchanged.
    """
    return {k: SecretStr(str(v)) if k in SECRET_FIELDS and v is not None and not isinstance(v, SecretStr) else v
            for k, v in kwargs.items()}


def read_secret(value: SecretStr | None, file: str | None, name: str) -> str | None:
    """The plain secret from a sealed value or from a file (first line, stripped).

    Args:
        value: The sealed literal, if given.
        file: A path to read the secret from, if given.
        name: The option's name, for the error message.

    Raises:
        AuthenticationError: when the file cannot be read or is empty (the path is named; the content never is).
    """
    if value is not None:
        return value.get_secret_value()
    if file is None:
        return None
    try:
        text = Path(file).expanduser().read_text().strip()
    except OSError as exc:
        raise AuthenticationError(f"cannot read saas.{name}_file '{file}' on the worker: {exc.strerror}; "
                                  "the file must exist on every node that runs a worker") from None
    if not text:
        raise AuthenticationError(f"saas.{name}_file '{file}' is empty; put the key on its first line")
    return text.splitlines()[0].strip()


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and any 8+ character prefix of one) replaced by the mask."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
            if len(secret) > 8:
                text = text.replace(secret[:8], MASK)
    return text
