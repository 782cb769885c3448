"""Secrets kept out of the HTTP libraries' log lines. httpx logs every request's URL at INFO (a portal's
pre-signed upload URL carries its signature in the query, an OAuth redirect its code), and httpcore logs the
raw response headers at DEBUG (``Location`` with the code, a webhook's ``X-Hook-Secret``). :func:`install`
puts a filter on those loggers that rewrites such values to ``[redacted]`` before any handler sees them."""

from __future__ import annotations

import logging
import re

# A query parameter or header whose value is a secret (by name), and the value that follows it.
_NAMES = (r"(?:sig|signature|code|state|token|access_token|refresh_token|id_token|client_secret|api_key|key|secret"
          r"|password)")
_QUERY = re.compile(rf"(?i)([?&]{_NAMES}=)[^&\s\"'#]+")
_HEADER = re.compile(r"(?i)(\(b'(?:authorization|x-hook-secret|x-[a-z-]*(?:secret|token|signature)|set-cookie|cookie)',"
                     r" b')[^']*(')")
_LOCATION = re.compile(r"(?i)(\(b'location', b')[^']*(')")
LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy")


def redact(text: str) -> str:
    text = _QUERY.sub(r"\1[redacted]", text)
    text = _HEADER.sub(r"\1[redacted]\2", text)
    return _LOCATION.sub(lambda m: m.group(1) + _QUERY.sub(r"\1[redacted]", m.group(0)[len(m.group(1)):-1]) + "'",
                         text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format is left to the handler's own error handling
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Add the filter to the HTTP libraries' loggers (a logger's filters see only its own records, so each is
    named); calling it again changes nothing."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
