"""The mini-program's phone-number button: ``getPhoneNumber`` codes and their exchange.

``POST /sandbox/mp/phone-code`` plays the customer tapping the button (a one-time code for a
phone); ``POST /wxa/business/getuserphonenumber?access_token=`` exchanges it as WeChat does:
``phone_info {phoneNumber, purePhoneNumber, countryCode, watermark {timestamp, appid}}``, or
40029 (unknown, expired or already used code), 40013 (the code belongs to another app),
40001/42001 (access token), -1 (fault ``system_error``). A code is good once, for 5 minutes.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from .account_faults import token_appid
from .base import JSONAPIHandler, SandboxHandler
from .state import SandboxError, SandboxState

CODE_LIFETIME = 300.0
_PURE = re.compile(r"^[0-9]{5,15}$")


@dataclass
class PhoneCode:
    phone: str
    country_code: str
    appid: str
    watermark_appid: str
    issued_at: float
    used: bool = False


def phone_codes(state: SandboxState) -> dict[str, PhoneCode]:
    return state.extra.setdefault("phone_codes", {})


class PhoneCodeHandler(SandboxHandler):
    """``{"phone", "country_code"?, "appid"?, "watermark_appid"?}`` -> ``{"code"}``.

    ``appid`` (default: the mini-program's) is the app whose button issued the code;
    ``watermark_appid`` (default: the same) lets a test see an answer stamped for another app.
    """

    async def post(self) -> None:
        body = self.json_body()
        phone = body.get("phone")
        country = body.get("country_code", "86")
        appid = body.get("appid") or self.state.config.mp_appid
        watermark = body.get("watermark_appid") or appid
        if (
            not isinstance(phone, str)
            or not _PURE.match(phone)
            or not isinstance(country, str)
            or not country.isdigit()
            or not isinstance(appid, str)
            or not isinstance(watermark, str)
        ):
            self.write_json({"error": "phone (digits), country_code (digits) and appid (string) expected"}, status=400)
            return
        code = secrets.token_hex(32)
        phone_codes(self.state)[code] = PhoneCode(
            phone=phone, country_code=country, appid=appid, watermark_appid=watermark, issued_at=time.time()
        )
        self.write_json({"code": code})


class GetUserPhoneNumberHandler(JSONAPIHandler):
    endpoint = "getuserphonenumber"

    async def post(self) -> None:
        await self.begin()
        caller = token_appid(self.state, self.get_argument("access_token", ""))
        code = self.json_body().get("code")
        issued = phone_codes(self.state).get(code) if isinstance(code, str) else None
        if issued is None or issued.used or time.time() - issued.issued_at > CODE_LIFETIME:
            raise SandboxError(40029, "invalid code")
        if issued.appid != caller:
            raise SandboxError(40013, "invalid appid")
        issued.used = True
        prefix = "" if issued.country_code == "86" else f"+{issued.country_code}"
        self.write_json(
            {
                "errcode": 0,
                "errmsg": "ok",
                "phone_info": {
                    "phoneNumber": prefix + issued.phone,
                    "purePhoneNumber": issued.phone,
                    "countryCode": issued.country_code,
                    "watermark": {"timestamp": int(time.time()), "appid": issued.watermark_appid},
                },
            }
        )


routes = [
    (r"/sandbox/mp/phone-code", PhoneCodeHandler),
    (r"/wxa/business/getuserphonenumber", GetUserPhoneNumberHandler),
]
