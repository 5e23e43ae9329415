"""FaxMAX's send call as it arrives: the multipart form and the JSON-RPC 2.0 rules it must obey.

`POST /api/v1`, multipart/form-data with a `fax_file` part (with a filename) and a `data`
part holding a JSON-RPC 2.0 request for `Fax.send_fax`. Errors are answered with HTTP 200 and
a JSON-RPC `error` object (the real error shapes are not documented; these are our choice):

======  ==================================================================================
code    when
======  ==================================================================================
-32700  the `data` part is not valid JSON (or not UTF-8)
-32600  not multipart/form-data, a part missing, `fax_file` without filename or empty,
        not a JSON-RPC 2.0 request object (`jsonrpc` != "2.0", no `id`, no `method`)
-32601  `method` is not `Fax.send_fax`
401     no valid `token` / `token_` and no valid `username` + `password`
        (`token` and `token_` both present but different is also 401)
-32602  `params` not an object, `phones` missing/empty/ill-typed, bad `paper_size`,
        `resolution`, `cli`, `cover_html`, `phone_books` or `contacts`
======  ==================================================================================

The account's credentials are the simulator's state, so the checks take them as arguments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
AUTH_ERROR = 401

_PAPER_SIZES = frozenset({"A4", "letter", "legal"})
# The original spells it "süperfine"; the translation says send "superfine". Accept both.
_RESOLUTIONS = frozenset({"normal", "fine", "superfine", "süperfine"})


class RpcError(Exception):
    """A JSON-RPC error answer, raised from deep in the checks and answered at the top."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def rpc_error(rpc_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


@dataclass
class SendForm:
    """What the multipart body held."""

    problem: str = ""  # transport-level problem, answered -32600
    data_bytes: bytes | None = None
    filename: str = ""
    content_type: str = ""
    document: bytes = b""
    has_file: bool = False


@dataclass(frozen=True)
class SendFaxCall:
    """A `Fax.send_fax` call that passed every check: what the simulator needs to accept it."""

    targets: list[tuple[str, Any]]  # (phone, api_id) as sent, not yet checked as numbers
    cli: str
    cover_html: str
    paper_size: str = "A4"  # as sent, or the documented default
    resolution: str = "fine"  # likewise ("süperfine" is kept as sent: both are accepted)


def parse_data(form: SendForm) -> dict[str, Any]:
    """The `data` part as a JSON object; RpcError when it is absent, not JSON or not an object."""
    if form.problem and form.data_bytes is None:
        raise RpcError(INVALID_REQUEST, form.problem)
    if form.data_bytes is None:
        raise RpcError(INVALID_REQUEST, "Invalid Request: missing data part")
    try:
        parsed = json.loads(form.data_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RpcError(PARSE_ERROR, "Parse error") from None
    if not isinstance(parsed, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: not a JSON object")
    return parsed


def check_send_fax(
    data: dict[str, Any], form: SendForm, *, token: str, username: str, password: str
) -> SendFaxCall:
    """Apply the request, file, credential and params rules; RpcError names the first broken."""
    if data.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"')
    if "id" not in data or not valid_id(data["id"]):
        raise RpcError(INVALID_REQUEST, "Invalid Request: id missing or invalid")
    method = data.get("method")
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, "Invalid Request: method missing")
    if method != "Fax.send_fax":
        raise RpcError(METHOD_NOT_FOUND, "Method not found")
    if form.problem:
        raise RpcError(INVALID_REQUEST, form.problem)
    if not form.has_file:
        raise RpcError(INVALID_REQUEST, "Invalid Request: missing fax_file part")
    if not form.filename:
        raise RpcError(INVALID_REQUEST, "Invalid Request: fax_file must have a filename")
    if not form.document:
        raise RpcError(INVALID_REQUEST, "Invalid Request: fax_file is empty")
    params = data.get("params")
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "Invalid params: params must be an object")
    authenticate(params, token=token, username=username, password=password)
    targets = parse_phones(params.get("phones"))
    cli = optional_str(params, "cli")
    cover_html = optional_str(params, "cover_html")
    paper_size = optional_str(params, "paper_size")
    if paper_size and paper_size not in _PAPER_SIZES:
        raise RpcError(INVALID_PARAMS, f"Invalid params: paper_size {paper_size!r}")
    resolution = optional_str(params, "resolution")
    if resolution and resolution not in _RESOLUTIONS:
        raise RpcError(INVALID_PARAMS, f"Invalid params: resolution {resolution!r}")
    for key in ("phone_books", "contacts"):
        value = params.get(key)
        if value is not None and not str_or_str_list(value):
            raise RpcError(INVALID_PARAMS, f"Invalid params: {key} must be string(s)")
    return SendFaxCall(targets, cli, cover_html, paper_size or "A4", resolution or "fine")


def authenticate(params: dict[str, Any], *, token: str, username: str, password: str) -> None:
    """A valid token wins; username + password are tried only when they were sent.

    `username` "" means the account has no password login.
    """
    tokens = [params[k] for k in ("token", "token_") if k in params]
    if len(tokens) == 2 and tokens[0] != tokens[1]:
        raise RpcError(AUTH_ERROR, "Invalid token: token and token_ differ")
    if tokens and isinstance(tokens[0], str) and tokens[0] and tokens[0] == token:
        return
    sent_user, sent_password = params.get("username"), params.get("password")
    if sent_user is not None or sent_password is not None:
        if username and sent_user == username and sent_password == password:
            return
        if not tokens:
            raise RpcError(AUTH_ERROR, "Invalid username or password")
    raise RpcError(AUTH_ERROR, "Invalid token")


def valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def optional_str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"Invalid params: {key} must be a string")
    return value


def str_or_str_list(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def parse_phones(value: Any) -> list[tuple[str, Any]]:
    """`phones` as (phone, api_id): a string, a list of strings, or a list of objects."""
    if value is None or value == "" or value == []:
        raise RpcError(INVALID_PARAMS, "Invalid params: phones is required")
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    if not isinstance(value, str | list):
        raise RpcError(INVALID_PARAMS, "Invalid params: phones must be a string or a list")
    targets: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            targets.append((item, None))
        elif isinstance(item, dict) and isinstance(item.get("phone"), str):
            targets.append((item["phone"], item.get("api_id")))
        else:
            raise RpcError(
                INVALID_PARAMS, 'Invalid params: each phone is a string or {"phone": "..."}'
            )
    return targets


async def read_form(request: web.Request) -> SendForm:
    """Read the multipart body into a `SendForm`; format problems go into `problem`."""
    form = SendForm()
    if request.content_type != "multipart/form-data":
        await request.read()
        form.problem = "Invalid Request: multipart/form-data expected"
        return form
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                await part.release()
                continue
            content = bytes(await part.read(decode=True))
            if part.name == "data" and form.data_bytes is None:
                form.data_bytes = content
            elif part.name == "fax_file" and not form.has_file:
                form.has_file = True
                form.filename = part.filename or ""
                form.content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE, "")
                form.document = content
            # other parts are ignored, as an unknown form field would be
    except (ValueError, AssertionError, RuntimeError, KeyError) as exc:
        form.problem = f"Invalid Request: bad multipart body ({type(exc).__name__})"
    return form
