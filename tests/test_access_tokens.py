"""Access-token caching: one fetch however many callers ask at once; a rejected token refreshed once."""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient

from wx_backend.wechat.http import WeChatAPIError, WeChatHTTP
from wx_backend.wechat.tokens import AccessTokens


def run(stack, coro_factory):
    async def main():
        client = AsyncMongoClient(stack.mongodb_uri, tz_aware=True)
        try:
            return await coro_factory(client[stack.db_name])
        finally:
            await client.close()

    return asyncio.run(main())


def token_calls(stack) -> int:
    return stack.sandbox_call("GET", "/sandbox/stats").json().get("token", 0)


def test_forty_concurrent_callers_cause_one_fetch(stack):
    stack.db.wx_tokens.delete_many({})
    before = token_calls(stack)

    async def scenario(db):
        http = WeChatHTTP(stack.sandbox_url, 2)
        # eight "processes" (separate caches sharing the database), five callers each
        caches = [AccessTokens(db, http, stack.env["WX_OA_APPID"], stack.env["WX_OA_SECRET"]) for _ in range(8)]
        return await asyncio.gather(*(caches[i % 8].get() for i in range(40)))

    tokens = run(stack, scenario)
    assert len(set(tokens)) == 1
    assert token_calls(stack) - before == 1
    # and a cached token costs no further fetch
    run(
        stack,
        lambda db: AccessTokens(
            db, WeChatHTTP(stack.sandbox_url, 2), stack.env["WX_OA_APPID"], stack.env["WX_OA_SECRET"]
        ).get(),
    )
    assert token_calls(stack) - before == 1


def test_rejected_token_refreshes_once_and_retries(stack):
    stack.db.wx_tokens.delete_many({})

    async def scenario(db):
        cache = AccessTokens(db, WeChatHTTP(stack.sandbox_url, 2), stack.env["WX_OA_APPID"], stack.env["WX_OA_SECRET"])
        first = await cache.get()
        before = token_calls(stack)
        seen: list[str] = []

        async def call(token):
            # stands for any token-checked WeChat API that has retired this token
            seen.append(token)
            if token == first:
                raise WeChatAPIError(40001, "invalid credential")
            return token

        result = await cache.call(call)
        return first, result, seen, token_calls(stack) - before

    first, result, seen, fetched = run(stack, scenario)
    assert seen == [first, result] and result != first
    assert fetched == 1


def test_wrong_secret_is_an_api_error(stack):
    async def scenario(db):
        cache = AccessTokens(db, WeChatHTTP(stack.sandbox_url, 2), "wxunknownappid00", "x")
        try:
            await cache.get()
        except WeChatAPIError as exc:
            return exc.errcode
        return None

    assert run(stack, scenario) == 40013


def test_another_process_refreshing_costs_ours_one_refresh(stack):
    from test_official_account import follow, ids

    from wx_backend.wechat.official_account import OfficialAccountAPI

    _, oa_openid, unionid = ids("grace")
    follow(stack, oa_openid, unionid)
    stack.db.wx_tokens.delete_many({})
    appid = stack.env["WX_OA_APPID"]

    def refresh_elsewhere(grace):
        resp = stack.sandbox_call(
            "POST", "/sandbox/tokens/expire", json={"appid": appid, "refresh": True, "grace": grace}
        )
        assert resp.status_code == 200, resp.text

    async def scenario(db):
        http = WeChatHTTP(stack.sandbox_url, 2)
        api = OfficialAccountAPI(http, AccessTokens(db, http, appid, stack.env["WX_OA_SECRET"]))
        await api.user_info(oa_openid)
        counts = []
        # within WeChat's grace period the replaced token still works: no refresh of ours
        refresh_elsewhere(60)
        before = token_calls(stack)
        await api.user_info(oa_openid)
        counts.append(token_calls(stack) - before)
        # past it (grace 0): ours is refused with 40001 once, refreshed once, and the call succeeds
        refresh_elsewhere(0)
        before = token_calls(stack)
        info = await api.user_info(oa_openid)
        counts.append(token_calls(stack) - before)
        await api.user_info(oa_openid)
        counts.append(token_calls(stack) - before)
        return info, counts

    info, counts = run(stack, scenario)
    assert info["openid"] == oa_openid and info["subscribe"] == 1
    assert counts == [0, 1, 1]
