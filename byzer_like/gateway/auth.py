"""API keys: Bearer tokens checked against SHA-256 hashes; a key may be limited to some aliases.

Keys come from an environment variable or a file, one entry per line (or whitespace-separated in the variable):
``KEY`` (every alias) or ``KEY=alias1,alias2``; ``#`` starts a comment. Only the hashes travel to the gateway
replicas, so a key is never printed, logged or stored in clear in Serve's configuration.

Example:
    >>> table = KeyTable.from_text("s3cret=smol,echo")
    >>> table.check("Bearer s3cret").allows("smol")
    True
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from byzer_like.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What one request may use: ``aliases`` None means every alias."""

    aliases: frozenset[str] | None = None

    def allows(self, alias: str) -> bool:
        """True when this grant covers ``alias`` (an ``ALIAS:ADAPTER`` model name is covered by its alias)."""
        return self.aliases is None or alias in self.aliases or alias.split(":", 1)[0] in self.aliases

    def require(self, alias: str) -> None:
        """Raise unless this grant covers ``alias``.

        Raises:
            PermissionDeniedError: 403 naming the alias.
        """
        if not self.allows(alias):
            raise PermissionDeniedError(f"this API key may not use '{alias}'", param="model")


OPEN = Grant()


class KeyTable(BaseModel):
    """Hashes of the accepted keys, each with its allowed aliases (None = all). Empty table = auth off."""

    model_config = ConfigDict(frozen=True)

    hashes: dict[str, tuple[str, ...] | None] = {}

    @classmethod
    def from_text(cls, text: str) -> KeyTable:
        """Parse entries ``KEY`` or ``KEY=alias,alias`` separated by newlines or whitespace."""
        hashes: dict[str, tuple[str, ...] | None] = {}
        for line in text.splitlines():
            for entry in line.split("#", 1)[0].split():
                key, _, aliases = entry.partition("=")
                hashes[hash_key(key)] = tuple(a for a in aliases.split(",") if a) if aliases else None
        return cls(hashes=hashes)

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured."""
        return bool(self.hashes)

    def check(self, authorization: str | None) -> Grant:
        """The grant of an ``Authorization`` header value.

        Raises:
            AuthenticationError: 401 when the header is missing or the key unknown.
        """
        if not self.enabled:
            return OPEN
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("missing API key; send 'Authorization: Bearer <key>'")
        digest = hash_key(token.strip())
        for known, aliases in self.hashes.items():
            if hmac.compare_digest(known, digest):
                return Grant(None if aliases is None else frozenset(aliases))
        raise AuthenticationError("invalid API key")


def load_keys(env_var: str | None = None, file: str | Path | None = None) -> KeyTable:
    """Read keys from an environment variable and/or a file.

    Raises:
        InvalidRequestError: a named source is unset, unreadable or holds no key (auth must not silently turn off).
    """
    texts = []
    if env_var:
        value = os.environ.get(env_var, "")
        if not value.strip():
            raise InvalidRequestError(f"environment variable {env_var} is unset or empty; it must hold the API keys",
                                      param="api_key_env")
        texts.append(value)
    if file:
        try:
            texts.append(Path(file).read_text())
        except OSError as exc:
            raise InvalidRequestError(f"cannot read API key file '{file}': {exc.strerror}",
                                      param="api_key_file") from None
    table = KeyTable.from_text("\n".join(texts))
    if (env_var or file) and not table.enabled:
        raise InvalidRequestError("the API key source holds no key", param="api_key_file")
    return table
