"""What the sandbox remembers: apps, tokens, one-time codes, faults to inject, call counts.

Everything is in memory: a restart is a clean WeChat.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from ..config import Config

KNOWN_FAULTS = {
    "timeout",
    "system_error",
    "bad_signature",
    "duplicate_notify",
    "quota",
    "bank_error",
    "unsubscribed",
    "late_notify",
    "drop_notify",
    "frequency_limited",
    "lost_answer",
    # WeChat Pay refunds (sandbox/pay/refunds.py)
    "notenough",
    "user_account_abnormal",
    "biz_retry",
    "refund_close",
    "refund_change",
}


class SandboxError(Exception):
    """A WeChat JSON-API error: rendered as HTTP 200 with errcode/errmsg, as WeChat does."""

    def __init__(self, errcode: int, errmsg: str):
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class IssuedToken:
    appid: str
    expires_at: float
    retired_at: float | None = None


@dataclass
class LoginCode:
    openid: str
    unionid: str | None
    issued_at: float
    used: bool = False


@dataclass
class SandboxState:
    config: Config
    timeout_delay: float = 10.0
    latency_ms: float = 0.0  # every endpoint's answer waits this long (WeChat's network and servers)
    apps: dict[str, str] = field(default_factory=dict)  # appid -> secret
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    login_codes: dict[str, LoginCode] = field(default_factory=dict)
    login_calls: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    faults: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    calls: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)  # per-module state, keyed by module

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> SandboxState:
        state = cls(config=config, **kwargs)
        state.apps = {config.mp_appid: config.mp_secret, config.oa_appid: config.oa_secret}
        state.latency_ms = config.sandbox_latency_ms
        return state

    # -- faults ---------------------------------------------------------------
    def add_fault(self, endpoint: str, fault: str, count: int, match: str | None = None) -> None:
        """Queue ``count`` faults for ``endpoint``; with ``match``, only a call about that key
        (a Pay call's or notification's ``out_trade_no``) takes them, so other traffic on the
        same endpoint cannot use them up."""
        if fault not in KNOWN_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(KNOWN_FAULTS)}")
        self.faults[endpoint].extend([(fault, match)] * count)

    def take_fault(self, endpoint: str, key: str | None = None) -> str | None:
        """The first queued fault of ``endpoint`` meant for any call or for ``key``."""
        queue = self.faults.get(endpoint)
        for i, (fault, match) in enumerate(queue or ()):
            if match is None or match == key:
                del queue[i]
                return fault
        return None

    def pending_faults(self, endpoint: str) -> list[dict[str, str | None]]:
        return [{"fault": fault, "match": match} for fault, match in self.faults.get(endpoint, ())]

    # -- access tokens --------------------------------------------------------
    def issue_token(self, appid: str, ttl: int = 7200, grace: float | None = None) -> tuple[str, int]:
        """A new token; the app's earlier ones keep working ``grace`` seconds (``WX_SANDBOX_TOKEN_GRACE``)."""
        now = time.time()
        grace = self.config.sandbox_token_grace if grace is None else grace
        for issued in self.tokens.values():
            if issued.appid == appid and (issued.retired_at is None or issued.retired_at > now + grace):
                issued.retired_at = now + grace
        token = secrets.token_urlsafe(96)[:128]
        self.tokens[token] = IssuedToken(appid=appid, expires_at=now + ttl)
        return token, ttl

    def check_token(self, token: str | None) -> str:
        """The appid a token belongs to, or WeChat's error for a missing/stale/expired one."""
        if not token:
            raise SandboxError(41001, "access_token missing")
        issued = self.tokens.get(token)
        now = time.time()
        if issued is None or (issued.retired_at is not None and issued.retired_at < now):
            raise SandboxError(40001, "invalid credential, access_token is invalid or not latest")
        if issued.expires_at < now:
            raise SandboxError(42001, "access_token expired")
        return issued.appid

    def expire_tokens(self) -> None:
        """Test helper: every issued token is now expired (the next use answers 42001)."""
        for issued in self.tokens.values():
            issued.expires_at = 0
