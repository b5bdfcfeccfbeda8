"""OpenAI chat ``messages`` as rows hold them (a JSON string, as in Snowflake's examples, or a list of structs),
and the media their parts name, read in before a model sees them."""

from __future__ import annotations

import base64
import functools
import json
import mimetypes
from typing import Any


def decode_messages(value: Any) -> Any:
    """A row's messages as Python values: a JSON string (Snowflake's batch examples) is parsed
    (``json.JSONDecodeError`` when it is not JSON); anything else is returned as given."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """The messages of one row as a list of dicts; a message without a role, or anything else, is an error."""
    try:
        value = decode_messages(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"messages is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"messages must be a non-empty list of {{role, content}} objects, got {value!r}")
    for message in value:
        if not isinstance(message, dict) or not message.get("role"):
            raise ValueError(f"every message needs a role, got {message!r}")
    return value


def data_url(path: str, data: bytes) -> str:
    """``data:<mime type>;base64,...`` for a file's bytes, the type guessed from its name."""
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


MEDIA_PARTS = {"image_url": "url", "video_url": "url", "input_audio": "data"}
"""Content part type -> the field that names its file."""
MEDIA_TIMEOUT_SECONDS = 60
"""How long fetching one web picture, video or audio file may take."""
MEDIA_RETRIES = 3
"""How often a fetch that failed for a passing reason (a dropped connection, a timeout, HTTP 408, 429 or 5xx)
is tried again, after 0.5, 1 and 2 seconds, before it is the row's error."""
MEDIA_REDIRECTS = 5
"""How many redirects a fetch follows, each to an allowed host."""
_RETRY_STATUSES = (408, 429, 500, 502, 503, 504)


@functools.cache
def _web() -> Any:
    """One connection pool per process, shared by every fetching thread."""
    import urllib3

    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=MEDIA_TIMEOUT_SECONDS))


def _refuse_host(url: str, host: str) -> ValueError:
    return ValueError(
        f"{url[:80]!r}: media are read from stages (@stage/path/file) or given as data: URLs; a run_batch job "
        f"fetches from {host or 'the web'} with inference_engine_options={{..., 'allowed_media_domains': "
        f"[{host!r}]}}"
    )


def fetch_media(url: str, hosts: tuple[str, ...]) -> bytes:
    """The bytes at an ``http(s)`` URL whose host (and every redirect's) is one of ``hosts``; anything else is
    refused. Passing failures are retried ``MEDIA_RETRIES`` times with backoff."""
    import urllib.parse

    import urllib3

    first = url
    retry = urllib3.Retry(
        total=MEDIA_RETRIES, backoff_factor=0.5, status_forcelist=_RETRY_STATUSES, redirect=False,
        respect_retry_after_header=False,  # a server's "come back in an hour" would stall the whole job
    )  # fmt: skip
    for _ in range(MEDIA_REDIRECTS + 1):
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        if host not in hosts:
            raise _refuse_host(url, host)
        try:
            response = _web().request("GET", url, retries=retry, redirect=False)
        except urllib3.exceptions.MaxRetryError as exc:
            raise ValueError(f"cannot fetch {first[:80]}: {exc.reason} (tried {MEDIA_RETRIES + 1} times)") from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ValueError(f"cannot fetch {first[:80]}: {exc}") from None
        location = response.get_redirect_location()
        if location:
            url = urllib.parse.urljoin(url, location)
            continue
        if response.status >= 400:
            raise ValueError(f"cannot fetch {first[:80]}: HTTP {response.status} {response.reason}")
        return response.data
    raise ValueError(f"cannot fetch {first[:80]}: more than {MEDIA_REDIRECTS} redirects")


def with_stage_media(value: Any, read: Any, hosts: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A row's messages with every stage path in an image, video or audio part replaced by a ``data:`` URL.

    ``read(path)`` returns a stage file's bytes. ``data:`` URLs stay as they are. ``http(s)`` URLs are
    fetched only from ``hosts`` (``allowed_media_domains``), by duckreg, so every engine gets the same
    bytes; other URLs are refused. An unreadable file raises ``ValueError`` naming the path.
    """
    messages = parse_messages(value)
    out = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for part in content:
            field = MEDIA_PARTS.get((part or {}).get("type") or "")
            holder = (part or {}).get(part.get("type")) if field else None
            location = (holder or {}).get(field) if field else None
            if not isinstance(location, str) or location.startswith("data:"):
                parts.append(part)
                continue
            if location.startswith(("http://", "https://")):
                try:
                    data = fetch_media(location, hosts)
                except ValueError as exc:
                    raise ValueError(f"{part['type']} {exc}") from None
            elif not location.startswith("@"):
                raise ValueError(f"{part['type']} {location[:80]!r}: media are read from stages only "
                                 "(@stage/path/file) or given as data: URLs")  # fmt: skip
            else:
                try:
                    data = read(location)
                except (OSError, ValueError) as exc:
                    raise ValueError(f"cannot read {location}: {exc}") from None
            url = data_url(location, data) if field == "url" else base64.b64encode(data).decode("ascii")
            parts.append({**part, part["type"]: {**holder, field: url}})
        out.append({**message, "content": parts})
    return out
