"""Shared pieces of the sandbox handlers."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import tornado.web

from .state import SandboxError, SandboxState


def rid() -> str:
    return "-".join(secrets.token_hex(4) for _ in range(3))


class SandboxHandler(tornado.web.RequestHandler):
    endpoint = ""  # the name used in call counts and faults

    @property
    def state(self) -> SandboxState:
        return self.application.settings["state"]

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value, ensure_ascii=False))

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise SandboxError(47001, "data format error") from None
        if not isinstance(data, dict):
            raise SandboxError(47001, "data format error")
        return data

    async def begin(self, key: str | None = None) -> str | None:
        """Count the call and apply an injected fault: ``timeout`` stalls past the client's
        patience; any other fault is returned for the endpoint to render its own way. Every
        call first waits the configured latency (``WX_SANDBOX_LATENCY_MS``, ``/sandbox/latency``)."""
        self.state.calls[self.endpoint] += 1
        if self.state.latency_ms > 0:
            await asyncio.sleep(self.state.latency_ms / 1000)
        fault = self.state.take_fault(self.endpoint, key)
        if fault == "timeout":
            await asyncio.sleep(self.state.timeout_delay)
        return fault

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, SandboxError) and not self._finished:
            # WeChat's JSON APIs answer errors with HTTP 200 and errcode/errmsg
            self.write_json({"errcode": e.errcode, "errmsg": f"{e.errmsg} rid: {rid()}"})
            return
        super()._handle_request_exception(e)


class JSONAPIHandler(SandboxHandler):
    """An mp/mini-program JSON endpoint: ``system_error`` renders as errcode -1."""

    async def begin(self, key: str | None = None) -> str | None:
        fault = await super().begin(key)
        if fault in ("system_error", "timeout"):
            raise SandboxError(-1, "system error")
        if fault == "quota":
            raise SandboxError(45009, "reach max api daily quota limit")
        return fault
