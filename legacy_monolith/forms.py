"""Request bodies from HTML forms: url-encoded fields and multipart file uploads.

python-multipart is not a dependency, so multipart bodies go through the stdlib
email parser, which already knows MIME; the size limit keeps that safe.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request

from legacy_monolith import settings


@dataclass(frozen=True, slots=True)
class UploadedFile:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


async def read_body(request: Request, *, limit_bytes: int) -> bytes:
    """The whole body, refusing with 413 as soon as it grows past the limit."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise HTTPException(413, f"Request body larger than {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        body = await read_body(request, limit_bytes=settings.MAX_UPLOAD_BYTES)
        return parse_multipart(content_type, body)
    body = await read_body(request, limit_bytes=settings.MAX_FORM_BYTES)
    return Form(fields=dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))


def parse_multipart(content_type: str, body: bytes) -> Form:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise HTTPException(400, "Malformed multipart body")
    fields, files = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = UploadedFile(filename, part.get_content_type(), payload)
        else:
            fields[name] = payload.decode(part.get_content_charset() or "utf-8", "replace")
    return Form(fields=fields, files=files)
