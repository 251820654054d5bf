"""The customer's phone for text messages: the dev SMS provider posts here, tests read back.

``POST /sandbox/sms`` {"mobile", "text"} receives a text; ``GET /sandbox/sms?mobile=`` lists
the texts a mobile received, newest last. Faults on endpoint ``sms``: ``timeout`` stalls,
``system_error`` answers HTTP 500 (the provider reports the send as failed).
"""

from __future__ import annotations

import re
import time

from .base import SandboxHandler

_MOBILE = re.compile(r"^1[0-9]{10}$")


class SmsHandler(SandboxHandler):
    endpoint = "sms"

    @property
    def inbox(self) -> dict[str, list[dict]]:
        return self.state.extra.setdefault("sms", {})

    async def post(self) -> None:
        fault = await self.begin()
        if fault is not None and fault != "timeout":
            self.write_json({"error": "system error"}, status=500)
            return
        body = self.json_body()
        mobile, text = body.get("mobile"), body.get("text")
        if not isinstance(mobile, str) or not _MOBILE.match(mobile) or not isinstance(text, str) or not text:
            self.write_json({"error": "mobile (11 digits) and text are required"}, status=400)
            return
        self.inbox.setdefault(mobile, []).append({"text": text, "received_at": time.time()})
        self.write_json({"accepted": True})

    async def get(self) -> None:
        mobile = self.get_argument("mobile", "")
        self.write_json({"mobile": mobile, "messages": list(self.inbox.get(mobile, []))})


routes = [
    (r"/sandbox/sms", SmsHandler),
]
