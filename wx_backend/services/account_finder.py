"""Finding one's account (查找户号) without typing its number: proposals, 模糊查询, meter barcode.

Three lookups answer *candidates*: masked views (number ``526****002``, holder ``*威``, address
shortened) under a ``candidate_id`` that only the user who looked may use, for 30 minutes.

* proposals: the accounts whose phone on record is the user's verified mobile
  (services/phones.py), not yet bound by the user. Binding one needs no SMS code: WeChat
  verified the phone (the binding records ``proof: wechat_phone``).
* search: accounts of one region whose holder name or address contains a fragment (at least
  2 characters). Holder names and addresses are stored in clear on the account (only the
  phone is encrypted), so the search is a substring match of those fields within the region.
  At most 5 candidates; 10 searches an hour and 30 a day per user.
* by meter: the account whose ``meter_no`` (the asset number under the meter's barcode, given
  by the marketing system) is the scanned one; 10 lookups an hour and 30 a day per user.

Search and meter candidates are bound as an account number typed by hand: the holder's name
and a code texted to the phone on record (``AccountService.bind``). Every binding goes through
``AccountService``, so the 9-account limit holds on every path.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from ..db import utcnow
from ..errors import Conflict, NotFound, ValidationFailed
from ..security import mask_name
from ..validators import clean_text, field_error, is_meter_no
from .accounts import AccountService
from .phones import PhoneService
from .ratelimit import RateLimiter, local_day, local_hour

INDEXES = {
    "account_candidates": [
        IndexModel([("expires_at", 1)]),
    ],
}

CANDIDATE_TTL = 1800
MAX_RESULTS = 5
MAX_PROPOSALS = 20
MIN_QUERY = 2
MAX_QUERY = 50
SEARCH_HOURLY = 10
SEARCH_DAILY = 30
METER_HOURLY = 10
METER_DAILY = 30
SOURCES = ("proposal", "search", "meter")
_PROJECTION = {"account_no": 1, "holder_name": 1, "address": 1, "region": 1, "phone_hash": 1, "bindings": 1}


def mask_account_no(account_no: str) -> str:
    """``5263900002`` -> ``526****002``."""
    return account_no[:3] + "*" * (len(account_no) - 6) + account_no[-3:]


def shorten_address(address: str) -> str:
    """The address without its last third (at least 4 characters: the house or room number),
    digits hidden: ``河南省平顶山市郏县城关镇人民路1号`` -> ``河南省平顶山市郏县城关镇****``."""
    hidden = max(4, len(address) // 3)
    shown = address[: max(len(address) - hidden, 0)]
    return re.sub(r"[0-9０-９]", "*", shown) + "****"


def _literal(text: str) -> str:
    """A pattern matching ``text`` literally, in the syntax MongoDB (PCRE) and FerretDB (Go's RE2)
    share: only the metacharacters are escaped (``re.escape`` also escapes spaces, which RE2 refuses)."""
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\1", text)


def _candidate_gone() -> NotFound:
    return NotFound("查询结果已失效，请重新查找户号", code="candidate_not_found")


class AccountFinder:
    def __init__(
        self, db: AsyncDatabase, accounts: AccountService, phones: PhoneService, limiter: RateLimiter | None = None
    ):
        self.db = db
        self.accounts = accounts
        self.phones = phones
        self.limiter = limiter or RateLimiter(db)

    # -- lookups ------------------------------------------------------------------------
    async def proposals(self, user: dict[str, Any]) -> dict[str, Any]:
        """The accounts registered to the user's verified mobile that the user has not bound."""
        phone = await self.phones.current(user)
        phone_hash = await self.phones.verified_hash(user)
        if phone is None or phone_hash is None:
            raise Conflict("请先授权微信手机号，再查看推荐户号", code="phone_not_verified")
        found = (
            await self.db.accounts.find({"phone_hash": phone_hash}, _PROJECTION)
            .sort("account_no", 1)
            .limit(MAX_PROPOSALS + MAX_RESULTS * 2)
            .to_list(None)
        )
        unbound = [a for a in found if not _bound_by(a, user["_id"])][:MAX_PROPOSALS]
        return {"phone": phone["phone"], "proposals": await self._candidates(user, unbound, "proposal")}

    async def search(self, user: dict[str, Any], region: Any, query: Any) -> dict[str, Any]:
        """模糊查询: at most 5 accounts of ``region`` whose holder name or address contains ``query``."""
        errors = []
        region, problem = clean_text(region, 50)
        if problem:
            errors.append({"field": "region", "message": "请选择所在地区"})
        query, problem = clean_text(query, MAX_QUERY)
        if problem or len(query) < MIN_QUERY:
            errors.append({"field": "q", "message": f"请输入户主姓名或用电地址中的 {MIN_QUERY} 至 {MAX_QUERY} 个字"})
        if errors:
            raise ValidationFailed(details=errors)
        await self._charge(user, "search", SEARCH_HOURLY, SEARCH_DAILY)
        fragment = {"$regex": _literal(query)}
        found = (
            await self.db.accounts.find(
                {"region": region, "$or": [{"holder_name": fragment}, {"address": fragment}]},
                _PROJECTION,
            )
            .sort("account_no", 1)
            .limit(MAX_RESULTS + 1)
            .to_list(None)
        )
        return {
            "candidates": await self._candidates(user, found[:MAX_RESULTS], "search"),
            "more": len(found) > MAX_RESULTS,
        }

    async def by_meter(self, user: dict[str, Any], meter_no: Any) -> dict[str, Any]:
        """The account of a scanned meter barcode."""
        meter_no = meter_no.upper() if isinstance(meter_no, str) else meter_no  # a typed number may be lower case
        if not is_meter_no(meter_no):
            raise ValidationFailed(details=[field_error("meter_no", "meter_no")])
        await self._charge(user, "meter", METER_HOURLY, METER_DAILY)
        found = await self.db.accounts.find({"meter_no": meter_no}, _PROJECTION).limit(2).to_list(None)
        if len(found) != 1:  # none, or (a data error) several: the customer types the number instead
            raise NotFound("未找到该电能表对应的户号，请核对条码或直接输入户号", code="meter_not_found")
        return {"candidate": (await self._candidates(user, found, "meter"))[0]}

    # -- binding a candidate ------------------------------------------------------------
    async def send_code(self, user: dict[str, Any], candidate_id: Any) -> dict[str, Any]:
        """Text a ``bind_account`` code to the candidate's phone on record (search and meter)."""
        candidate = await self._candidate(user, candidate_id)
        return await self.accounts.send_binding_code(user, candidate["account_no"])

    async def bind(self, user: dict[str, Any], candidate_id: Any, holder_name: Any, sms_code: Any) -> dict[str, Any]:
        """Bind a candidate: a proposal by the verified mobile alone, others as a typed number."""
        candidate = await self._candidate(user, candidate_id)
        account_no = candidate["account_no"]
        if candidate["source"] != "proposal":
            return await self.accounts.bind(user, account_no, holder_name, sms_code)
        phone_hash = await self.phones.verified_hash(user)
        if phone_hash is None:
            raise Conflict("请先授权微信手机号，再绑定推荐户号", code="phone_not_verified")
        account = await self.db.accounts.find_one({"_id": account_no}, {"phone_hash": 1})
        if account is None or account.get("phone_hash") != phone_hash:
            raise _candidate_gone()  # the phone on record or the verified mobile changed meanwhile
        return await self.accounts.bind_verified(user, account_no, "wechat_phone")

    # -- internals ----------------------------------------------------------------------
    async def _charge(self, user: dict[str, Any], kind: str, hourly: int, daily: int) -> None:
        now = utcnow()
        uid = user["_id"]
        await self.limiter.take(
            f"find:{kind}:hour:{uid}",
            period=local_hour(now),
            limit=hourly,
            now=now,
            message=f"查询过于频繁：每小时最多 {hourly} 次，请稍后再试",
        )
        await self.limiter.take(
            f"find:{kind}:day:{uid}",
            period=local_day(now),
            limit=daily,
            now=now,
            message=f"今日查询次数已达上限（{daily} 次），请明天再试或直接输入户号",
        )

    async def _candidates(
        self, user: dict[str, Any], accounts: list[dict[str, Any]], source: str
    ) -> list[dict[str, Any]]:
        if not accounts:
            return []
        now = utcnow()
        uid = user["_id"]
        await self.db.account_candidates.delete_many({"expires_at": {"$lt": now}})  # anyone's, long unused
        docs = [
            {
                "_id": secrets.token_urlsafe(18),
                "user_id": uid,
                "account_no": a["account_no"],
                "source": source,
                "created_at": now,
                "expires_at": now + timedelta(seconds=CANDIDATE_TTL),
            }
            for a in accounts
        ]
        await self.db.account_candidates.insert_many(docs)
        return [
            {
                "candidate_id": doc["_id"],
                "source": source,
                "account_no": mask_account_no(a["account_no"]),
                "holder_name": mask_name(a["holder_name"]),
                "address": shorten_address(a.get("address") or ""),
                "region": a.get("region"),
                "bound": _bound_by(a, uid),
                "needs_sms": source != "proposal",
                "expires_in": CANDIDATE_TTL,
            }
            for doc, a in zip(docs, accounts, strict=True)
        ]

    async def _candidate(self, user: dict[str, Any], candidate_id: Any) -> dict[str, Any]:
        if not isinstance(candidate_id, str) or not 8 <= len(candidate_id) <= 64:
            raise _candidate_gone()
        candidate = await self.db.account_candidates.find_one({"_id": candidate_id})
        if candidate is None or candidate["user_id"] != user["_id"] or candidate["expires_at"] <= utcnow():
            raise _candidate_gone()
        return candidate


def _bound_by(account: dict[str, Any], user_id: Any) -> bool:
    return any(b.get("user_id") == user_id for b in account.get("bindings", []))
