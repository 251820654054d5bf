"""The WeChat gateway: one object per API family, all reached over HTTP at configured base URLs."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from ..config import Config
from .http import WeChatAPIError, WeChatHTTP
from .miniprogram import MiniProgramAPI
from .official_account import OfficialAccountAPI
from .pay import PayAPI
from .tokens import AccessTokens

__all__ = ["WeChat", "WeChatAPIError"]


class WeChat:
    def __init__(self, config: Config, db: AsyncDatabase):
        self.api = WeChatHTTP(config.wechat_api_base, config.wechat_timeout)
        self.pay_http = WeChatHTTP(config.wechat_pay_base, config.wechat_timeout)
        self.mp_tokens = AccessTokens(db, self.api, config.mp_appid, config.mp_secret)
        self.oa_tokens = AccessTokens(db, self.api, config.oa_appid, config.oa_secret)
        self.miniprogram = MiniProgramAPI(self.api, config.mp_appid, config.mp_secret)
        self.pay = PayAPI(self.pay_http, appid=config.mp_appid, mch_id=config.mch_id, key=config.pay_key,
                          cert=config.pay_cert, cert_key=config.pay_key_pem)
        self.miniprogram = MiniProgramAPI(self.api, config.mp_appid, config.mp_secret, self.mp_tokens)
        self.official_account = OfficialAccountAPI(self.api, self.oa_tokens)
