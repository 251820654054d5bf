"""The control surface under ``/sandbox/``: the customer's phone, and a window for tests."""

from __future__ import annotations

import secrets
import time

from .base import SandboxHandler
from .state import LoginCode


class LoginCodeHandler(SandboxHandler):
    """``wx.login`` on the customer's phone: a one-time ``js_code`` for an openid."""

    async def post(self) -> None:
        body = self.json_body()
        openid = body.get("openid")
        if not isinstance(openid, str) or not openid:
            self.write_json({"error": "openid is required"}, status=400)
            return
        code = secrets.token_urlsafe(24)
        self.state.login_codes[code] = LoginCode(
            openid=openid,
            unionid=body.get("unionid") or None,
            issued_at=time.time(),
        )
        self.write_json({"code": code})


class FaultsHandler(SandboxHandler):
    async def get(self) -> None:
        self.write_json({k: self.state.pending_faults(k) for k, v in self.state.faults.items() if v})

    async def post(self) -> None:
        body = self.json_body()
        endpoint, fault = body.get("endpoint"), body.get("fault")
        count, match = body.get("count", 1), body.get("match")
        if (
            not isinstance(endpoint, str)
            or not isinstance(fault, str)
            or not isinstance(count, int)
            or not isinstance(match, str | None)
        ):
            self.write_json({"error": "endpoint, fault and count are required; match is a string"}, status=400)
            return
        try:
            self.state.add_fault(endpoint, fault, count, match)
        except ValueError as exc:
            self.write_json({"error": str(exc)}, status=400)
            return
        self.write_json({"endpoint": endpoint, "pending": self.state.pending_faults(endpoint)})

    async def delete(self) -> None:
        self.state.faults.clear()
        self.write_json({"cleared": True})


class StatsHandler(SandboxHandler):
    """How often each WeChat endpoint was called (``DELETE`` resets the counts)."""

    async def get(self) -> None:
        self.write_json(dict(self.state.calls))

    async def delete(self) -> None:
        self.state.calls.clear()
        self.write_json({"cleared": True})


class ExpireTokensHandler(SandboxHandler):
    """No body: every issued token is expired (42001). ``{"appid", "refresh": true, "grace": s}``:
    another process fetches a new token for ``appid``; the current ones stop working after
    ``grace`` seconds (default ``WX_SANDBOX_TOKEN_GRACE``), then answer 40001."""

    async def post(self) -> None:
        body = self.json_body() if self.request.body else {}
        if not body.get("refresh"):
            self.state.expire_tokens()
            self.write_json({"expired": True})
            return
        appid, grace = body.get("appid"), body.get("grace")
        if appid not in self.state.apps or not (
            grace is None or (isinstance(grace, int | float) and not isinstance(grace, bool) and grace >= 0)
        ):
            self.write_json({"error": "appid of a known app; grace a number of seconds"}, status=400)
            return
        self.state.issue_token(appid, grace=grace)
        self.write_json(
            {"refreshed": appid, "grace": self.state.config.sandbox_token_grace if grace is None else grace}
        )


class LatencyHandler(SandboxHandler):
    """``{"ms": 300}``: every WeChat and SMS endpoint waits that long before answering."""

    async def get(self) -> None:
        self.write_json({"ms": self.state.latency_ms})

    async def post(self) -> None:
        ms = self.json_body().get("ms")
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 60_000:
            self.write_json({"error": "ms must be a number from 0 to 60000"}, status=400)
            return
        self.state.latency_ms = float(ms)
        self.write_json({"ms": self.state.latency_ms})


routes = [
    (r"/sandbox/mp/login-code", LoginCodeHandler),
    (r"/sandbox/faults", FaultsHandler),
    (r"/sandbox/stats", StatsHandler),
    (r"/sandbox/tokens/expire", ExpireTokensHandler),
    (r"/sandbox/latency", LatencyHandler),
]
