"""What both sandbox servers share, and the tools to run and steer them from outside.

- :class:`VendorSandbox`: the aiohttp application base. It owns the request log, the
  fault injector, the control API under ``/_sandbox/...`` and the request pipeline
  (record -> fault -> vendor processing -> latency -> answer). The vendor modules
  (:mod:`connector.sandbox.kombo`, :mod:`connector.sandbox.comeet`) add their routes,
  validation and state.
- :class:`RequestLog`: every request received, bounded, oldest dropped first.
- Validation primitives used by both vendors' hand-written checks.
- :class:`SandboxProcess`: runs ``python -m connector.sandbox`` as a subprocess and
  reads the URLs it prints (demo, crash tests).
- :class:`SandboxControl` / :class:`AsyncSandboxControl`: clients for the control API.

Control API (JSON, no auth, never under a vendor path; Kombo's vendor routes live
under ``/v1``, Comeet's under ``/evaluation``):

- ``POST /_sandbox/faults`` body = :class:`~connector.sandbox.faults.FaultSpec`
  -> ``{"id": ...}``; ``GET /_sandbox/faults`` -> ``{"faults": [...]}``;
  ``DELETE /_sandbox/faults`` -> ``{"cleared": n}``; ``DELETE /_sandbox/faults/{id}``.
- ``POST /_sandbox/latency`` ``{"ms": 50}`` -> ``{"ms": 50}``.
- ``GET /_sandbox/requests?key=..&since=<index>&limit=<n>`` ->
  ``{"requests": [...], "next": <index after the last one recorded>}``;
  ``GET /_sandbox/requests/{index}`` -> one recorded request.
- ``GET /_sandbox/state``; ``POST /_sandbox/reset`` (state, log, faults, latency back
  to the start values; request indexes keep counting up so pollers never go back).
- Vendor specific: ``POST /_sandbox/integrations/{id}`` (Kombo),
  ``POST /_sandbox/evaluations/{id}`` (Comeet).

A recorded request is ``{index, vendor, method, path, raw_path, query, headers, body,
status_code, received_at, key}``; ``path`` is percent-decoded (an encoded ``/`` in a
segment shows as ``/``), ``raw_path`` is the path as it arrived, still encoded;
``headers`` has ``Authorization`` (and the other credential headers) replaced by
``"REDACTED"`` before it is stored, ``body`` is the parsed JSON (the raw text if it was
not JSON, None if empty) and ``status_code`` is the status answered or ``"dropped"``.

Path parameters (an order id, an integration or evaluation id) are matched on the
encoded path and decoded once by aiohttp: ``a%2Fb`` is the id ``a/b``, ``%252F`` the
id ``%2F``, ``%2E%2E`` the id ``..``.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import itertools
import json
import logging
import math
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Self
from urllib.parse import quote, urlsplit

import httpx
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.sandbox.faults import Fault, FaultInjector, FaultKind, FaultSpec

__all__ = [
    "DROPPED",
    "MISSING",
    "REDACTED",
    "TOO_LARGE",
    "AsyncSandboxControl",
    "InputInvalid",
    "RequestLog",
    "SandboxControl",
    "SandboxProcess",
    "SandboxUrls",
    "UnparsableBody",
    "VendorSandbox",
    "bearer_matches",
    "control_error",
    "is_http_uri",
    "is_number",
    "read_control_json",
    "reject_unknown",
    "validation_message",
]

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]

REDACTED: Final = "REDACTED"
DROPPED: Final = "dropped"
# Credential-bearing headers never reach the request log.
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Sentinel for an absent JSON field (``None`` is a present ``null``)."""


class _TooLarge:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_LARGE"


TOO_LARGE: Final = _TooLarge()
"""What :meth:`VendorSandbox._read_body` returns for a body over the size limit."""


# -- validation primitives ----------------------------------------------------------


class InputInvalid(ValueError):
    """A request failed validation; the message is ``"<field path>: <rule>"``."""


class UnparsableBody(str):
    """A request body that is not JSON; kept as text so the log still shows it."""

    __slots__ = ()


_FLOAT_MAX: Final = sys.float_info.max
# RFC 3986 characters; anything else (spaces, quotes, non-ASCII) makes an invalid URI.
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.ASCII)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def is_number(value: Any) -> bool:
    """A finite JSON number; bool is excluded although Python makes it an int."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        # Ints beyond the double range are not representable in the vendors' APIs.
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    return False


def is_http_uri(value: Any) -> bool:
    """An absolute http(s) URI with a host."""
    if type(value) is not str or not _URI_CHARS.fullmatch(value):
        return False
    if _BAD_PERCENT.search(value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host)


def reject_unknown(obj: Mapping[str, Any], allowed: frozenset[str], path: str = "") -> None:
    """Raise for the first key of ``obj`` that is not in ``allowed``."""
    for key in obj:
        if key not in allowed:
            raise InputInvalid(f"{path}.{key}: unknown field" if path else f"{key}: unknown field")


def bearer_matches(header: str | None, expected: bytes) -> bool:
    """``header`` is exactly ``Bearer <secret>``; ``expected`` is that whole value, encoded."""
    if header is None:
        return False
    return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), expected)


# Built once: json.loads(**kw) would build a decoder per call. NaN/Infinity are not
# JSON and a real API would reject them.
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_body(raw: bytes) -> Any:
    """Parsed JSON, ``None`` for an empty body, :class:`UnparsableBody` otherwise."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return UnparsableBody(raw.decode("utf-8", "replace"))
    try:
        return _DECODER.decode(text)
    except ValueError:
        return UnparsableBody(text)


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: REDACTED if name.lower() in _SECRET_HEADERS else value
        for name, value in headers.items()
    }


# -- request log ----------------------------------------------------------------------


class RequestLog:
    """Recorded requests, oldest dropped first once ``maxlen`` is reached.

    Every entry gets an ``index`` that keeps increasing (also across :meth:`clear`), so
    ``since=<index>`` polling is stable while old entries are dropped.
    """

    __slots__ = ("_entries", "_next")

    def __init__(self, maxlen: int = 1_000_000) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be > 0")
        self._entries: collections.deque[JSONDict] = collections.deque(maxlen=maxlen)
        self._next = 0

    @property
    def maxlen(self) -> int:
        maxlen = self._entries.maxlen
        assert maxlen is not None
        return maxlen

    @property
    def next_index(self) -> int:
        """The index the next recorded request will get."""
        return self._next

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, entry: JSONDict) -> int:
        index = self._next
        entry["index"] = index
        self._entries.append(entry)
        self._next = index + 1
        return index

    def get(self, index: int) -> JSONDict | None:
        offset = index - (self._next - len(self._entries))
        if 0 <= offset < len(self._entries):
            return self._entries[offset]
        return None

    def select(
        self, *, key: str | None = None, since: int = 0, limit: int | None = None
    ) -> list[JSONDict]:
        """Entries with ``index >= since`` (and ``key``, if given), oldest first."""
        first = self._next - len(self._entries)
        entries: Iterable[JSONDict] = self._entries
        if since > first:
            entries = itertools.islice(self._entries, since - first, None)
        if key is not None:
            entries = (e for e in entries if e["key"] == key)
        if limit is not None:
            entries = itertools.islice(entries, max(limit, 0))
        return list(entries)

    def clear(self) -> None:
        self._entries.clear()


# -- control API bodies -----------------------------------------------------------------


class _LatencyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ms: float = Field(ge=0, allow_inf_nan=False)


def control_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def read_control_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"invalid JSON: {exc}"}), content_type="application/json"
        ) from exc


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )


# -- the server base --------------------------------------------------------------------


class VendorSandbox:
    """Base of one vendor's sandbox server: log, faults, control API, lifecycle.

    Subclasses set :attr:`vendor` and :attr:`prefix`, add their routes in
    :meth:`_add_vendor_routes` and implement the vendor-shaped answers
    (:meth:`_error_response`, :meth:`_fault_response`), :meth:`state` and
    :meth:`_reset_state`.
    """

    vendor: ClassVar[str] = ""
    prefix: ClassVar[str] = ""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        max_recorded: int = 1_000_000,
        seed: int | None = None,
        max_body_bytes: int = _DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.faults = FaultInjector(latency_ms=latency_ms, seed=seed)
        self.request_log = RequestLog(max_recorded)
        self._initial_latency_ms = latency_ms
        self._runner: web.AppRunner | None = None
        self._root_url: str | None = None
        self._max_body_bytes = max_body_bytes
        self.app = web.Application(client_max_size=max_body_bytes)
        self._add_control_routes(self.app.router)
        self._add_vendor_routes(self.app.router)
        # Anything else answers the vendor's 404 shape and is still recorded, so a
        # client calling a wrong URL shows up in the log.
        self.app.router.add_route("*", "/{tail:.*}", self._unknown_route)

    # -- subclass hooks -------------------------------------------------------------------

    def _add_vendor_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def _add_vendor_control_routes(self, router: web.UrlDispatcher) -> None:
        """Vendor specific control endpoints (default: none)."""

    def _error_response(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        entry: JSONDict | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        raise NotImplementedError

    def _fault_response(self, fault: Fault, target: str | None, entry: JSONDict) -> web.Response:
        raise NotImplementedError

    def state(self) -> JSONDict:
        """JSON-ready snapshot of the vendor state (``GET /_sandbox/state``)."""
        raise NotImplementedError

    def _reset_state(self) -> None:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port); returns :attr:`url`."""
        if self._runner is not None:
            raise RuntimeError(f"{self.vendor} sandbox already started")
        # No access log: it would be a log line per request on the benchmark's hot path.
        # A short shutdown timeout: stop() must not hang on a client's idle keep-alive.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self._root_url = f"http://{url_host}:{bound_port}"
        logger.info("%s sandbox listening on %s", self.vendor, self.url)
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            logger.info("%s sandbox stopped", self.vendor)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def root_url(self) -> str:
        """``http://host:port`` (the control API lives here)."""
        if self._root_url is None:
            raise RuntimeError(f"{self.vendor} sandbox is not started")
        return self._root_url

    @property
    def url(self) -> str:
        """The base URL a client of the vendor API uses."""
        return self.root_url + self.prefix

    @property
    def port(self) -> int:
        return int(self.root_url.rsplit(":", 1)[1])

    # -- Python control API ---------------------------------------------------------------

    def recorded(
        self, key: str | None = None, since: int = 0, limit: int | None = None
    ) -> list[JSONDict]:
        """Recorded requests (the stored dicts themselves: treat them as read-only)."""
        return self.request_log.select(key=key, since=since, limit=limit)

    def set_latency(self, ms: float) -> None:
        self.faults.set_latency(ms)

    def reset(self) -> None:
        """Back to the start: vendor state, request log, fault rules, latency."""
        self._reset_state()
        self.request_log.clear()
        self.faults.clear()
        self.faults.set_latency(self._initial_latency_ms)

    def log_url(self, entry: JSONDict) -> str | None:
        """Where the control API shows one recorded request."""
        if self._root_url is None:
            return None
        return f"{self._root_url}/_sandbox/requests/{entry['index']}"

    # -- request pipeline (hot path) --------------------------------------------------------

    async def _read_body(self, request: web.Request) -> Any:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return TOO_LARGE
        return _parse_body(raw)

    def _record(self, request: web.Request, body: Any, key: str | None) -> JSONDict:
        entry: JSONDict = {
            "vendor": self.vendor,
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path.split("?", 1)[0],
            "query": dict(request.query) if request.query_string else {},
            "headers": _redacted(request.headers),
            "body": None if body is TOO_LARGE else body,
            "status_code": None,
            "received_at": time.time(),
            "key": key,
        }
        self.request_log.append(entry)
        return entry

    async def _respond(
        self,
        request: web.Request,
        entry: JSONDict,
        target: str | None,
        process: Callable[[], web.Response],
    ) -> web.Response:
        """Apply faults and latency around the vendor's synchronous ``process``.

        ``process`` validates and updates state without awaiting, so concurrent
        requests never see half-applied state; latency is slept only after the
        state change, i.e. "before answering", which keeps the state in arrival order.
        """
        faults = self.faults
        delay = faults.latency_s
        fault = faults.decide(target)
        if fault is None:
            response = process()
        else:
            delay += fault.delay_s
            if fault.drop:
                entry["status_code"] = DROPPED
                if delay > 0:
                    await asyncio.sleep(delay)
                return _drop_connection(request)
            if fault.status is None:
                response = process()
            else:
                response = self._fault_response(fault, target, entry)
        entry["status_code"] = response.status
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    def _too_large(self, entry: JSONDict) -> web.Response:
        response = self._error_response(
            413,
            f"body: larger than {self._max_body_bytes} bytes",
            code="PLATFORM.INPUT_INVALID",
            entry=entry,
        )
        entry["status_code"] = response.status
        return response

    async def _unknown_route(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        entry = self._record(request, body, None)
        response = self._error_response(
            404, f"No route for {request.method} {request.path}", entry=entry
        )
        entry["status_code"] = response.status
        return response

    # -- HTTP control API ---------------------------------------------------------------------

    def _add_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_sandbox/faults", self._ctl_add_fault)
        router.add_get("/_sandbox/faults", self._ctl_list_faults)
        router.add_delete("/_sandbox/faults", self._ctl_clear_faults)
        router.add_delete("/_sandbox/faults/{rule_id}", self._ctl_remove_fault)
        router.add_post("/_sandbox/latency", self._ctl_latency)
        router.add_get("/_sandbox/requests", self._ctl_requests)
        router.add_get("/_sandbox/requests/{index}", self._ctl_request)
        router.add_get("/_sandbox/state", self._ctl_state)
        router.add_post("/_sandbox/reset", self._ctl_reset)
        self._add_vendor_control_routes(router)

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        try:
            spec = FaultSpec.model_validate(await read_control_json(request))
        except ValidationError as exc:
            return control_error(400, validation_message(exc))
        rule_id = self.faults.add(spec)
        logger.info("%s sandbox: fault %s added (%s)", self.vendor, rule_id, spec.kind)
        return web.json_response({"id": rule_id})

    async def _ctl_list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": self.faults.rules()})

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.faults.clear()})

    async def _ctl_remove_fault(self, request: web.Request) -> web.Response:
        rule_id = request.match_info["rule_id"]
        if not self.faults.remove(rule_id):
            return control_error(404, f"no fault rule {rule_id}")
        return web.json_response({"removed": rule_id})

    async def _ctl_latency(self, request: web.Request) -> web.Response:
        try:
            body = _LatencyBody.model_validate(await read_control_json(request))
        except ValidationError as exc:
            return control_error(400, validation_message(exc))
        self.faults.set_latency(body.ms)
        return web.json_response({"ms": self.faults.latency_ms})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            since = int(query.get("since", "0"))
            limit = int(query["limit"]) if "limit" in query else None
        except ValueError:
            return control_error(400, "since/limit: must be integers")
        entries = self.request_log.select(key=query.get("key"), since=since, limit=limit)
        return web.json_response({"requests": entries, "next": self.request_log.next_index})

    async def _ctl_request(self, request: web.Request) -> web.Response:
        try:
            index = int(request.match_info["index"])
        except ValueError:
            return control_error(400, "index: must be an integer")
        entry = self.request_log.get(index)
        if entry is None:
            return control_error(404, f"request {index} is not (or no longer) recorded")
        return web.json_response(entry)

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        logger.info("%s sandbox reset", self.vendor)
        return web.json_response({"reset": True})


def _drop_connection(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.close()
    # aiohttp tries to write this response, finds the transport closing and discards it
    # quietly: the client sees the connection end without any answer.
    return web.Response(status=500)


# -- running the sandbox as a subprocess ---------------------------------------------------


class SandboxUrls(BaseModel):
    """The one line of JSON the sandbox process prints once it listens."""

    model_config = ConfigDict(frozen=True)

    kombo_url: str
    comeet_url: str


class SandboxProcess:
    """``python -m connector.sandbox`` as a child process.

    The keys are handed over in files (mode 0600 in a private temporary directory),
    not on the command line, so they do not show up in process listings. The child
    watches its stdin and exits when the parent goes away, so a crashed test run
    leaves no server behind.
    """

    def __init__(
        self,
        *,
        kombo_key: str,
        comeet_token: str,
        host: str = "127.0.0.1",
        kombo_port: int = 0,
        comeet_port: int = 0,
        latency_ms: float = 0.0,
        max_recorded: int | None = None,
        log_level: str = "WARNING",
        python: str = sys.executable,
        startup_timeout_s: float = 20.0,
        stderr: int | None = None,
    ) -> None:
        self._kombo_key = kombo_key
        self._comeet_token = comeet_token
        self._host = host
        self._kombo_port = kombo_port
        self._comeet_port = comeet_port
        self._latency_ms = latency_ms
        self._max_recorded = max_recorded
        self._log_level = log_level
        self._python = python
        self._startup_timeout_s = startup_timeout_s
        self._stderr = stderr
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self.urls: SandboxUrls | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def kombo_url(self) -> str:
        return self._require_urls().kombo_url

    @property
    def comeet_url(self) -> str:
        return self._require_urls().comeet_url

    def _require_urls(self) -> SandboxUrls:
        if self.urls is None:
            raise RuntimeError("sandbox process is not started")
        return self.urls

    def _command(self, tmpdir: Path) -> list[str]:
        kombo_file = tmpdir / "kombo-key"
        comeet_file = tmpdir / "comeet-token"
        for path, secret in ((kombo_file, self._kombo_key), (comeet_file, self._comeet_token)):
            path.touch(mode=0o600)
            path.write_text(secret, encoding="utf-8")
        cmd = [
            self._python,
            "-m",
            "connector.sandbox",
            "--host",
            self._host,
            "--kombo-port",
            str(self._kombo_port),
            "--comeet-port",
            str(self._comeet_port),
            "--kombo-key-file",
            str(kombo_file),
            "--comeet-token-file",
            str(comeet_file),
            "--latency-ms",
            str(self._latency_ms),
            "--log-level",
            self._log_level,
            "--exit-on-stdin-close",
        ]
        if self._max_recorded is not None:
            cmd += ["--max-recorded", str(self._max_recorded)]
        return cmd

    def start(self) -> SandboxUrls:
        """Start the child and wait for its URL line (blocking)."""
        if self._proc is not None:
            raise RuntimeError("sandbox process already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="sandbox-keys-"))
        try:
            proc = subprocess.Popen(
                self._command(self._tmpdir),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except BaseException:
            self._remove_tmpdir()
            raise
        self._proc = proc
        try:
            line = self._read_line(proc, self._startup_timeout_s)
            self.urls = SandboxUrls.model_validate_json(line)
        except BaseException:
            self.stop()
            raise
        logger.info("sandbox process %d: %s", proc.pid, self.urls)
        return self.urls

    @staticmethod
    def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                raise TimeoutError(f"sandbox process printed no URLs within {timeout_s} s")
        # The child prints the whole line with one flushed write, far below PIPE_BUF.
        line = proc.stdout.readline()
        if not line:
            code = proc.wait(timeout=5)
            raise RuntimeError(f"sandbox process exited ({code}) before printing its URLs")
        return line

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go; returns the exit code."""
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("sandbox process %d ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait()
            code = proc.returncode
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self._remove_tmpdir()
        return code

    def _remove_tmpdir(self) -> None:
        tmpdir, self._tmpdir = self._tmpdir, None
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

    async def astart(self) -> SandboxUrls:
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout_s: float = 10.0) -> int | None:
        return await asyncio.to_thread(self.stop, timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


# -- control API clients ----------------------------------------------------------------------

_Call = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]


def _root_of(url: str) -> str:
    # Any URL of the server will do (a vendor base URL included): the control API
    # lives at the root.
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.netloc:
        raise ValueError(f"not a sandbox URL (plain http://host:port): {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


class _Calls:
    """The control API's requests, shared by the sync and async clients."""

    @staticmethod
    def add_fault(fields: dict[str, Any]) -> _Call:
        return ("POST", "/_sandbox/faults", dict(fields), None)

    @staticmethod
    def requests(key: str | None, since: int | None, limit: int | None) -> _Call:
        params: dict[str, Any] = {}
        if key is not None:
            params["key"] = key
        if since is not None:
            params["since"] = since
        if limit is not None:
            params["limit"] = limit
        return ("GET", "/_sandbox/requests", None, params)

    @staticmethod
    def set_integration(
        integration_id: str, state: str | None, warnings: list[str] | None
    ) -> _Call:
        body: dict[str, Any] = {}
        if state is not None:
            body["state"] = state
        if warnings is not None:
            body["warnings"] = warnings
        return ("POST", f"/_sandbox/integrations/{_quote(integration_id)}", body, None)


def _quote(segment: str) -> str:
    # "." and ".." would be removed as dot segments by the client: encode them too.
    return "%2E" * len(segment) if segment in (".", "..") else quote(segment, safe="")


def _checked(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


class SandboxControl:
    """Blocking client for one sandbox server's control API.

    Do not use it from the event loop that runs the sandbox (it would block that
    loop); use :class:`AsyncSandboxControl` there.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = _root_of(url)
        # Plain HTTP only, so TLS settings never apply; verify=False just spares the
        # CA bundle load (~40 ms per client).
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, verify=False)

    def _call(self, call: _Call) -> Any:
        method, path, body, params = call
        return _checked(self._client.request(method, path, json=body, params=params))

    def add_fault(self, kind: FaultKind, **fields: Any) -> str:
        """Add a rule (fields of :class:`FaultSpec`); returns its id."""
        return str(self._call(_Calls.add_fault({"kind": kind, **fields}))["id"])

    def faults(self) -> list[JSONDict]:
        return list(self._call(("GET", "/_sandbox/faults", None, None))["faults"])

    def remove_fault(self, rule_id: str) -> None:
        self._call(("DELETE", f"/_sandbox/faults/{_quote(rule_id)}", None, None))

    def clear_faults(self) -> int:
        return int(self._call(("DELETE", "/_sandbox/faults", None, None))["cleared"])

    def set_latency(self, ms: float) -> None:
        self._call(("POST", "/_sandbox/latency", {"ms": ms}, None))

    def set_integration(
        self,
        integration_id: str,
        state: str | None = None,
        warnings: list[str] | None = None,
    ) -> JSONDict:
        return dict(self._call(_Calls.set_integration(integration_id, state, warnings)))

    def set_evaluation(self, evaluation_id: str, state: str) -> JSONDict:
        path = f"/_sandbox/evaluations/{_quote(evaluation_id)}"
        return dict(self._call(("POST", path, {"state": state}, None)))

    def requests(
        self, key: str | None = None, since: int | None = None, limit: int | None = None
    ) -> list[JSONDict]:
        return list(self._call(_Calls.requests(key, since, limit))["requests"])

    def state(self) -> JSONDict:
        return dict(self._call(("GET", "/_sandbox/state", None, None)))

    def reset(self) -> None:
        self._call(("POST", "/_sandbox/reset", None, None))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSandboxControl:
    """Async twin of :class:`SandboxControl` (same methods, awaited)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = _root_of(url)
        # Plain HTTP only (see SandboxControl).
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, verify=False)

    async def _call(self, call: _Call) -> Any:
        method, path, body, params = call
        return _checked(await self._client.request(method, path, json=body, params=params))

    async def add_fault(self, kind: FaultKind, **fields: Any) -> str:
        return str((await self._call(_Calls.add_fault({"kind": kind, **fields})))["id"])

    async def faults(self) -> list[JSONDict]:
        return list((await self._call(("GET", "/_sandbox/faults", None, None)))["faults"])

    async def remove_fault(self, rule_id: str) -> None:
        await self._call(("DELETE", f"/_sandbox/faults/{_quote(rule_id)}", None, None))

    async def clear_faults(self) -> int:
        return int((await self._call(("DELETE", "/_sandbox/faults", None, None)))["cleared"])

    async def set_latency(self, ms: float) -> None:
        await self._call(("POST", "/_sandbox/latency", {"ms": ms}, None))

    async def set_integration(
        self,
        integration_id: str,
        state: str | None = None,
        warnings: list[str] | None = None,
    ) -> JSONDict:
        return dict(await self._call(_Calls.set_integration(integration_id, state, warnings)))

    async def set_evaluation(self, evaluation_id: str, state: str) -> JSONDict:
        path = f"/_sandbox/evaluations/{_quote(evaluation_id)}"
        return dict(await self._call(("POST", path, {"state": state}, None)))

    async def requests(
        self, key: str | None = None, since: int | None = None, limit: int | None = None
    ) -> list[JSONDict]:
        return list((await self._call(_Calls.requests(key, since, limit)))["requests"])

    async def state(self) -> JSONDict:
        return dict(await self._call(("GET", "/_sandbox/state", None, None)))

    async def reset(self) -> None:
        await self._call(("POST", "/_sandbox/reset", None, None))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
