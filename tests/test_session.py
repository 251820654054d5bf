"""Login through the sandbox's jscode2session, bearer tokens, and the error shape."""

from __future__ import annotations

import hashlib
import time

from conftest import error_of


def test_health_and_ready(stack):
    assert stack.api("GET", "/healthz").json() == {"status": "ok"}
    resp = stack.api("GET", "/readyz")
    assert resp.status_code == 200 and resp.json()["database"] == "ok"


def test_login_issues_a_token_stored_only_as_hash(stack):
    code = stack.login_code("o_login_ok", unionid="u_login_ok")
    resp = stack.api("POST", "/api/v1/session", json={"code": code})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    token = body["token"]
    assert len(token) >= 40 and body["expires_in"] > 0 and body["user"]["id"]

    me = stack.api("GET", "/api/v1/me", token=token)
    assert me.status_code == 200 and me.json()["user"]["id"] == body["user"]["id"]

    user = stack.db.users.find_one({"mp_openid": "o_login_ok"})
    assert user["unionid"] == "u_login_ok"
    sessions = list(stack.db.sessions.find({"user_id": user["_id"]}))
    assert [s["token_hash"] for s in sessions] == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in str(sessions)


def test_logging_in_again_reuses_the_user(stack):
    first = stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_twice")}).json()
    second = stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_twice")}).json()
    assert first["user"]["id"] == second["user"]["id"]
    assert first["token"] != second["token"]
    assert stack.db.users.count_documents({"mp_openid": "o_twice"}) == 1


def test_bad_code_is_refused_and_stores_nothing(stack):
    before = stack.db.users.count_documents({})
    resp = stack.api("POST", "/api/v1/session", json={"code": "not-a-real-code"})
    assert resp.status_code == 401
    assert error_of(resp)["code"] == "wechat_login_failed"
    assert stack.db.users.count_documents({}) == before


def test_missing_code_is_a_bad_request(stack):
    resp = stack.api("POST", "/api/v1/session", json={})
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "wechat_login_failed"


def test_reused_code_is_refused(stack):
    code = stack.login_code("o_reuse")
    assert stack.api("POST", "/api/v1/session", json={"code": code}).status_code == 200
    resp = stack.api("POST", "/api/v1/session", json={"code": code})
    assert resp.status_code == 401
    err = error_of(resp)
    assert err["code"] == "wechat_login_failed" and err.get("details", {}).get("errcode") == 40163


def test_wechat_timeout_is_503_not_500(stack):
    stack.fault("jscode2session", "timeout")
    started = time.monotonic()
    resp = stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_timeout")})
    elapsed = time.monotonic() - started
    assert resp.status_code == 503
    assert error_of(resp)["code"] == "wechat_unavailable"
    assert elapsed < 3.5, "the backend gives up at its configured timeout"
    assert stack.db.users.count_documents({"mp_openid": "o_timeout"}) == 0


def test_wechat_system_error_is_503(stack):
    stack.fault("jscode2session", "system_error")
    resp = stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_syserr")})
    assert resp.status_code == 503
    assert error_of(resp)["code"] == "wechat_unavailable"


def test_no_token_bad_token_and_logout(stack):
    resp = stack.api("GET", "/api/v1/me")
    assert resp.status_code == 401 and error_of(resp)["code"] == "unauthorized"
    resp = stack.api("GET", "/api/v1/me", token="forged-token")
    assert resp.status_code == 401 and error_of(resp)["code"] == "invalid_token"

    token = stack.login()
    assert stack.api("DELETE", "/api/v1/session", token=token).status_code == 204
    assert stack.api("GET", "/api/v1/me", token=token).status_code == 401


def test_expired_token_is_refused(stack):
    token = stack.login("o_expired")
    user = stack.db.users.find_one({"mp_openid": "o_expired"})
    stack.db.sessions.update_many({"user_id": user["_id"]}, {"$set": {"expires_at": user["created_at"]}})
    resp = stack.api("GET", "/api/v1/me", token=token)
    assert resp.status_code == 401 and error_of(resp)["code"] == "invalid_token"


def test_error_shape_for_unknown_path_bad_json_and_method(stack):
    resp = stack.api("GET", "/api/v1/nowhere")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    resp = stack.api("POST", "/api/v1/session", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_json"
    resp = stack.api("PUT", "/api/v1/session", json={})
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"


def test_request_id_is_echoed_only_from_trusted_proxy(stack):
    # the test client is on loopback, which the default configuration trusts as the proxy
    resp = stack.api("GET", "/healthz", headers={"X-Request-Id": "abcdef0123456789"})
    assert resp.headers["X-Request-Id"] == "abcdef0123456789"
    resp = stack.api("GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert resp.headers["X-Request-Id"] != "bad id with spaces"
    assert "abcdef0123456789" in stack.logs()


# -- WeChat's login errors: the customer's, the quota's and the operator's ---------------------
def test_minute_quota_is_429_with_retry_after(stack):
    # WeChat counts code2session calls per user per minute (100): the sandbox's quota is spent
    for _ in range(100):
        direct = stack.sandbox_call(
            "GET",
            "/sns/jscode2session",
            params={
                "appid": stack.env["WX_MP_APPID"],
                "secret": stack.env["WX_MP_SECRET"],
                "js_code": stack.login_code("o_quota_login"),
                "grant_type": "authorization_code",
            },
        )
        assert "openid" in direct.json(), direct.text
    resp = stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_quota_login")})
    assert resp.status_code == 429, resp.text
    assert error_of(resp)["code"] == "wechat_login_rate_limited"
    assert resp.headers["Retry-After"] == "60"
    assert stack.db.users.count_documents({"mp_openid": "o_quota_login"}) == 0


def test_high_risk_user_is_403_with_wechats_reason(stack):
    stack.sandbox_call("POST", "/sandbox/mp/high-risk", json={"openid": "o_high_risk"}).raise_for_status()
    try:
        resp = stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_high_risk")})
    finally:
        stack.sandbox_call("DELETE", "/sandbox/mp/high-risk")
    assert resp.status_code == 403, resp.text
    err = error_of(resp)
    assert err["code"] == "wechat_high_risk_user" and "高风险" in err["message"]
    assert stack.db.users.count_documents({"mp_openid": "o_high_risk"}) == 0


def test_bad_app_credentials_are_503_and_alert_the_operator(stack):
    for errcode in (40125, 40013):
        stack.sandbox_call(
            "POST", "/sandbox/account-faults", json={"appid": stack.env["WX_MP_APPID"], "errcode": errcode}
        ).raise_for_status()
        try:
            resp = stack.api("POST", "/api/v1/session", json={"code": stack.login_code(f"o_secret_{errcode}")})
        finally:
            stack.sandbox_call("DELETE", "/sandbox/account-faults")
        assert resp.status_code == 503, resp.text
        assert error_of(resp)["code"] == "wechat_login_unavailable"
        line = f"WECHAT ACCOUNT FAULT mini-program: errcode {errcode}"
        assert any(line in log_line for log_line in stack.logs().splitlines()), "one alert line for the operator"
    assert stack.api("POST", "/api/v1/session", json={"code": stack.login_code("o_secret_fixed")}).status_code == 200
