"""The WeChat gateway: one object per API family, all reached over HTTP at configured base URLs."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from ..config import Config
from .http import WeChatAPIError, WeChatHTTP
from .jssdk import JsapiTickets
from .miniprogram import MiniProgramAPI
from .oauth import WebAuthAPI
from .official_account import OfficialAccountAPI
from .pay import PayAPI
from .pay_keys import ensure_dev_keys, load_private_key, load_public_key
from .pay_v3 import PayV3API
from .tokens import AccessTokens

__all__ = ["WeChat", "WeChatAPIError", "pay_gateway"]


def pay_gateway(config: Config, http: WeChatHTTP) -> PayAPI | PayV3API:
    """The WeChat Pay gateway of ``WX_PAY_API``: both have the same operations and results."""
    if config.pay_api == "v3":
        ensure_dev_keys(config)
        return PayV3API(
            http,
            appid=config.mp_appid,
            mch_id=config.mch_id,
            apiv3_key=config.pay_apiv3_key,
            serial_no=config.pay_mch_serial,
            private_key=load_private_key(config.pay_v3_private_key, "WX_PAY_V3_PRIVATE_KEY"),
            wechatpay_public_key=load_public_key(config.pay_public_key, "WX_PAY_PUBLIC_KEY"),
            wechatpay_key_id=config.pay_public_key_id,
            other_appids=(config.oa_appid,),
        )
    return PayAPI(
        http,
        appid=config.mp_appid,
        mch_id=config.mch_id,
        key=config.pay_key,
        sign_type=config.pay_sign_type,
        cert=config.pay_cert,
        cert_key=config.pay_key_pem,
        other_appids=(config.oa_appid,),
    )


class WeChat:
    def __init__(self, config: Config, db: AsyncDatabase):
        self.api = WeChatHTTP(config.wechat_api_base, config.wechat_timeout)
        self.pay_http = WeChatHTTP(config.wechat_pay_base, config.wechat_timeout)
        self.mp_tokens = AccessTokens(db, self.api, config.mp_appid, config.mp_secret)
        self.oa_tokens = AccessTokens(db, self.api, config.oa_appid, config.oa_secret)
        self.miniprogram = MiniProgramAPI(self.api, config.mp_appid, config.mp_secret)
        self.pay = pay_gateway(config, self.pay_http)
        self.miniprogram = MiniProgramAPI(self.api, config.mp_appid, config.mp_secret, self.mp_tokens)
        self.official_account = OfficialAccountAPI(self.api, self.oa_tokens)
        self.web_auth = WebAuthAPI(self.api, config.oauth_base, config.oa_appid, config.oa_secret)
        self.jsapi_tickets = JsapiTickets(db, self.api, self.oa_tokens)
