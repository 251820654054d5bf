"""Asynchronous HTTP to WeChat at a configured base URL, with explicit timeouts.

wechatpy builds and checks what goes over the wire (signatures, XML, crypto); it is
synchronous and hard-codes WeChat's hosts, so the requests themselves go through here.
Transient failures (timeouts, refused connections, HTTP 5xx, errcode -1) raise
``WeChatUnavailable``; WeChat's business errors raise ``WeChatAPIError`` with its errcode.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..errors import WeChatUnavailable

log = logging.getLogger(__name__)

AsyncHTTPClient.configure(None, max_clients=200)


class WeChatAPIError(Exception):
    """WeChat answered with a non-zero errcode (JSON APIs)."""

    def __init__(self, errcode: int, errmsg: str):
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatHTTP:
    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> bytes:
        url = self.base_url + path
        if params:
            url += "?" + urlencode(params)
        req = HTTPRequest(
            url,
            method=method,
            body=body,
            headers={"Content-Type": content_type} if body is not None else None,
            connect_timeout=timeout or self.timeout,
            request_timeout=timeout or self.timeout,
            client_cert=client_cert,
            client_key=client_key,
        )
        started = time.monotonic()
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as exc:
            if exc.code == 599:
                raise WeChatUnavailable(details={"path": path, "reason": "timeout"}) from exc
            if exc.code >= 500:
                raise WeChatUnavailable(details={"path": path, "status": exc.code}) from exc
            raise
        except OSError as exc:
            raise WeChatUnavailable(details={"path": path, "reason": type(exc).__name__}) from exc
        finally:
            log.debug("wechat %s %s %.0f ms", method, path, (time.monotonic() - started) * 1000)
        return resp.body

    async def json(
        self, method: str, path: str, *, params: dict | None = None, payload: Any = None, timeout: float | None = None
    ) -> dict:
        body = None if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        raw = await self.request(method, path, params=params, body=body, timeout=timeout)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise WeChatUnavailable(details={"path": path, "reason": "bad response"}) from exc
        errcode = data.get("errcode", 0)
        if errcode == -1:
            raise WeChatUnavailable(details={"path": path, "errcode": -1})
        if errcode:
            raise WeChatAPIError(errcode, data.get("errmsg", ""))
        return data
