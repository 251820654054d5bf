"""Finding accounts without their number: the WeChat-verified mobile and its proposals, 模糊查询,
the meter barcode, and 户号管理 (remarks, the default account). All over HTTP with the sandbox."""

from __future__ import annotations

import uuid

from conftest import error_of, new_mobile, put_account

from wx_backend.services.account_finder import MAX_RESULTS, METER_HOURLY, SEARCH_HOURLY


def phone_code(stack, phone, **extra) -> str:
    """The customer taps the getPhoneNumber button: the sandbox issues the one-time code."""
    resp = stack.sandbox_call("POST", "/sandbox/mp/phone-code", json={"phone": phone, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()["code"]


def verify_phone(stack, token, phone) -> dict:
    resp = stack.api("POST", "/api/v1/me/phone", token=token, json={"code": phone_code(stack, phone)})
    assert resp.status_code == 200, resp.text
    return resp.json()["phone"]


def user_id(stack, token):
    from bson import ObjectId

    return ObjectId(stack.api("GET", "/api/v1/me", token=token).json()["user"]["id"])


def masked(account_no: str) -> str:
    return account_no[:3] + "****" + account_no[-3:]


def new_region() -> str:
    return f"测试{uuid.uuid4().hex[:8]}"


def proposals(stack, token) -> list:
    resp = stack.api("GET", "/api/v1/accounts/proposals", token=token)
    assert resp.status_code == 200, resp.text
    return resp.json()["proposals"]


def bind_candidate(stack, token, candidate, **body):
    return stack.api("POST", f"/api/v1/accounts/candidates/{candidate['candidate_id']}", token=token, json=body)


def bind_by_sms(stack, token, candidate, account):
    resp = stack.api("POST", f"/api/v1/accounts/candidates/{candidate['candidate_id']}/sms-code", token=token)
    assert resp.status_code == 201, resp.text
    return bind_candidate(
        stack, token, candidate, holder_name=account["holder_name"], sms_code=stack.last_sms_code(account["phone"])
    )


def search(stack, token, region, q):
    return stack.api("GET", "/api/v1/accounts/search", token=token, params={"region": region, "q": q})


def test_phone_code_is_exchanged_once(stack):
    phone = new_mobile()
    token, other = stack.login(), stack.login()
    code = phone_code(stack, phone)
    resp = stack.api("POST", "/api/v1/me/phone", token=token, json={"code": code})
    assert resp.status_code == 200, resp.text
    view = resp.json()["phone"]
    assert view["phone"] == f"{phone[:3]}****{phone[-4:]}" and view["verified_at"]
    assert phone not in resp.text
    stored = stack.db.verified_phones.find_one({"_id": user_id(stack, token)})
    assert stored["phone_enc"].startswith("v1:") and stored["phone_hash"] and phone not in str(stored)

    # the same code again (here by another user): WeChat's 40029, a Chinese message, nothing kept
    resp = stack.api("POST", "/api/v1/me/phone", token=other, json={"code": code})
    assert resp.status_code == 422 and error_of(resp)["code"] == "phone_code_invalid"
    assert "手机号" in error_of(resp)["message"]
    assert stack.db.verified_phones.find_one({"_id": user_id(stack, other)}) is None
    assert stack.api("GET", "/api/v1/me/phone", token=other).json() == {"phone": None}
    for body in ({}, {"code": ""}, {"code": 5}):
        resp = stack.api("POST", "/api/v1/me/phone", token=other, json=body)
        assert resp.status_code == 422 and error_of(resp)["code"] == "validation_failed"

    # an answer stamped for another app, a code of another app (40013), WeChat busy (-1),
    # a number outside the mainland: refused, nothing kept
    resp = stack.api(
        "POST",
        "/api/v1/me/phone",
        token=other,
        json={"code": phone_code(stack, phone, watermark_appid="wxsomeoneelse0001")},
    )
    assert resp.status_code == 502 and error_of(resp)["code"] == "wechat_phone_failed"
    resp = stack.api(
        "POST", "/api/v1/me/phone", token=other, json={"code": phone_code(stack, phone, appid=stack.env["WX_OA_APPID"])}
    )
    assert resp.status_code == 502 and error_of(resp)["details"] == {"errcode": 40013}
    stack.fault("getuserphonenumber", "system_error")
    resp = stack.api("POST", "/api/v1/me/phone", token=other, json={"code": phone_code(stack, phone)})
    assert resp.status_code == 503 and error_of(resp)["code"] == "wechat_unavailable"
    resp = stack.api(
        "POST", "/api/v1/me/phone", token=other, json={"code": phone_code(stack, "91234567", country_code="852")}
    )
    assert resp.status_code == 422 and error_of(resp)["code"] == "phone_not_supported"
    assert stack.db.verified_phones.find_one({"_id": user_id(stack, other)}) is None

    # an expired access token (42001) is refreshed and the exchange goes through
    stack.sandbox_call("POST", "/sandbox/tokens/expire")
    assert verify_phone(stack, other, phone)["phone"] == view["phone"]

    assert stack.api("GET", "/api/v1/me/phone", token=token).json()["phone"]["phone"] == view["phone"]
    assert stack.api("DELETE", "/api/v1/me/phone", token=token).status_code == 204
    assert stack.api("GET", "/api/v1/me/phone", token=token).json() == {"phone": None}
    assert stack.db.verified_phones.find_one({"_id": user_id(stack, token)}) is None


def test_proposals_only_for_the_verified_phone_and_bound_without_sms(stack):
    phone, other_phone = new_mobile(), new_mobile()
    region = new_region()
    mine = put_account(
        stack, phone=phone, holder_name="刘洋", region=region, address="河南省平顶山市郏县薛店镇幸福路18号"
    )
    shared = put_account(stack, phone=phone, holder_name="刘洋", region=region)
    foreign = put_account(stack, phone=other_phone, region=region)
    token, stranger, family = stack.login(), stack.login(), stack.login()

    resp = stack.api("GET", "/api/v1/accounts/proposals", token=token)
    assert resp.status_code == 409 and error_of(resp)["code"] == "phone_not_verified"

    # a family member who verified the same phone binds one of them and gives it a remark
    verify_phone(stack, family, phone)
    family_view = next(p for p in proposals(stack, family) if p["account_no"] == masked(shared["account_no"]))
    assert bind_candidate(stack, family, family_view).status_code == 201
    resp = stack.api(
        "PATCH", f"/api/v1/accounts/{shared['account_no']}/preferences", token=family, json={"remark": "老房子"}
    )
    assert resp.status_code == 200, resp.text

    assert verify_phone(stack, token, phone)["phone"] == f"{phone[:3]}****{phone[-4:]}"
    resp = stack.api("GET", "/api/v1/accounts/proposals", token=token)
    listed = resp.json()["proposals"]
    shown = {p["account_no"] for p in listed}
    assert shown == {masked(a["account_no"]) for a in (mine, shared)}
    for value in (
        mine["account_no"],
        shared["account_no"],
        foreign["account_no"],
        phone,
        "刘洋",
        "幸福路18号",
        "老房子",
        "user_id",
        str(user_id(stack, family)),
    ):
        assert value not in resp.text, value
    first = next(p for p in listed if p["account_no"].endswith(mine["account_no"][-3:]))
    assert first["holder_name"] == "*洋" and first["source"] == "proposal" and first["needs_sms"] is False
    assert first["address"].endswith("****") and not any(ch.isdigit() for ch in first["address"])

    # another user, verified with another phone, is proposed none of them
    verify_phone(stack, stranger, other_phone)
    assert [p["account_no"][-3:] for p in proposals(stack, stranger)] == [foreign["account_no"][-3:]]
    # nor can they use the first user's candidate
    resp = bind_candidate(stack, stranger, first)
    assert resp.status_code == 404 and error_of(resp)["code"] == "candidate_not_found"

    texts_before = len(stack.sms_texts(phone))
    resp = bind_candidate(stack, token, first)
    assert resp.status_code == 201, resp.text
    account = resp.json()["account"]
    assert account["account_no"] == mine["account_no"] and account["proof"] == "wechat_phone"
    assert len(stack.sms_texts(phone)) == texts_before  # no code was texted
    stored = stack.db.accounts.find_one({"_id": mine["account_no"]})["bindings"]
    assert [b["proof"] for b in stored] == ["wechat_phone"]
    assert bind_candidate(stack, token, first).status_code == 200  # a retried request
    assert [p["account_no"][-3:] for p in proposals(stack, token)] == [shared["account_no"][-3:]]

    # once the mobile is forgotten, a proposal no longer binds
    second = proposals(stack, token)[0]
    assert stack.api("DELETE", "/api/v1/me/phone", token=token).status_code == 204
    resp = bind_candidate(stack, token, second)
    assert resp.status_code == 409 and error_of(resp)["code"] == "phone_not_verified"
    assert len(stack.db.accounts.find_one({"_id": shared["account_no"]})["bindings"]) == 1


def test_search_by_name_or_address_fragment(stack):
    region = new_region()
    named = put_account(stack, region=region, holder_name="欧阳娜娜", address="河南省平顶山市郏县茨芭镇东街7号")
    street = [
        put_account(stack, region=region, holder_name=f"王{n}", address=f"河南省平顶山市郏县长桥镇幸福路{n}号")
        for n in ("伟", "芳", "敏", "静", "丽", "强")
    ]
    elsewhere = put_account(stack, region=new_region(), holder_name="欧阳娜娜")
    token = stack.login()

    resp = search(stack, token, region, "阳娜")
    assert resp.status_code == 200, resp.text
    found = resp.json()
    assert found["more"] is False and len(found["candidates"]) == 1
    candidate = found["candidates"][0]
    assert candidate["account_no"] == named["account_no"][:3] + "****" + named["account_no"][-3:]
    assert candidate["holder_name"] == "***娜" and candidate["needs_sms"] is True
    for value in (named["account_no"], elsewhere["account_no"], "欧阳娜娜", "东街7号", named["phone"]):
        assert value not in resp.text, value

    resp = search(stack, token, region, "幸福路")
    found = resp.json()
    assert len(found["candidates"]) == MAX_RESULTS and found["more"] is True
    assert {c["holder_name"] for c in found["candidates"]} <= {"*" + n for n in "伟芳敏静丽强"}
    assert not any(a["account_no"] in resp.text or "幸福路" in resp.text for a in street)

    for params, field in (
        ({"region": region, "q": "欧"}, "q"),
        ({"q": "幸福路"}, "region"),
        ({"region": region, "q": "  幸 "}, "q"),
    ):
        resp = stack.api("GET", "/api/v1/accounts/search", token=token, params=params)
        assert resp.status_code == 422 and {d["field"] for d in error_of(resp)["details"]} == {field}
    for literal in (".*", "幸福 路", "路#~&", "(幸福"):  # a fragment, not a pattern
        resp = search(stack, token, region, literal)
        assert resp.status_code == 200 and resp.json()["candidates"] == [], (literal, resp.text)

    # a search candidate binds like a typed number: the holder's name and a code to the phone on record
    resp = bind_candidate(stack, token, candidate, holder_name="欧阳娜娜")
    assert resp.status_code == 422 and {d["field"] for d in error_of(resp)["details"]} == {"sms_code"}
    resp = stack.api("POST", f"/api/v1/accounts/candidates/{candidate['candidate_id']}/sms-code", token=token)
    assert resp.status_code == 201 and resp.json()["sent_to"] == named["phone"][:3] + "****" + named["phone"][-4:]
    resp = bind_candidate(stack, token, candidate, holder_name="欧阳娜", sms_code=stack.last_sms_code(named["phone"]))
    assert resp.status_code == 422 and error_of(resp)["code"] == "holder_name_mismatch"
    assert stack.db.accounts.find_one({"_id": named["account_no"]})["bindings"] == []


def test_search_and_meter_lookups_are_rate_limited(stack):
    region = new_region()
    put_account(stack, region=region, holder_name="赵静")
    meter_no = f"41{uuid.uuid4().int % 10**20:020d}"
    put_account(stack, meter_no=meter_no)
    token = stack.login()
    for _ in range(SEARCH_HOURLY):
        assert search(stack, token, region, "赵静").status_code == 200
    resp = search(stack, token, region, "赵静")
    assert resp.status_code == 429 and error_of(resp)["code"] == "too_many_requests"
    assert "每小时" in error_of(resp)["message"]
    # badly formed searches were refused before counting; the meter lookups have their own allowance
    for _ in range(METER_HOURLY):
        assert stack.api("GET", f"/api/v1/accounts/by-meter/{meter_no}", token=token).status_code == 200
    resp = stack.api("GET", f"/api/v1/accounts/by-meter/{meter_no}", token=token)
    assert resp.status_code == 429 and error_of(resp)["code"] == "too_many_requests"
    # another user is not held back
    assert search(stack, stack.login(), region, "赵静").status_code == 200


def test_meter_barcode_lookup_and_binding(stack):
    meter_no = f"41{uuid.uuid4().int % 10**20:020d}"
    account = put_account(stack, meter_no=meter_no, holder_name="陈明")
    token = stack.login()
    resp = stack.api("GET", f"/api/v1/accounts/by-meter/{meter_no}", token=token)
    assert resp.status_code == 200, resp.text
    candidate = resp.json()["candidate"]
    assert candidate["source"] == "meter" and candidate["holder_name"] == "*明"
    assert account["account_no"] not in resp.text and meter_no not in resp.text
    resp = stack.api("GET", f"/api/v1/accounts/by-meter/{'9' * 22}", token=token)
    assert resp.status_code == 404 and error_of(resp)["code"] == "meter_not_found"
    resp = stack.api("GET", "/api/v1/accounts/by-meter/ab", token=token)
    assert resp.status_code == 422 and error_of(resp)["code"] == "validation_failed"

    resp = bind_by_sms(stack, token, candidate, account)
    assert resp.status_code == 201, resp.text
    assert resp.json()["account"]["account_no"] == account["account_no"] and resp.json()["account"]["proof"] == "sms"

    # the marketing system's meter number is optional, checked, and null removes it
    body = {k: v for k, v in account.items() if k not in ("account_no",)}
    resp = stack.internal("PUT", f"/internal/v1/accounts/{account['account_no']}", json={**body, "meter_no": "1-2"})
    assert resp.status_code == 422 and {d["field"] for d in error_of(resp)["details"]} == {"meter_no"}
    resp = stack.internal("PUT", f"/internal/v1/accounts/{account['account_no']}", json={**body, "meter_no": None})
    assert resp.status_code == 200
    assert stack.api("GET", f"/api/v1/accounts/by-meter/{meter_no}", token=token).status_code == 404


def test_the_tenth_binding_is_refused_on_every_path(stack):
    phone = new_mobile()
    region = new_region()
    meter_no = f"42{uuid.uuid4().int % 10**20:020d}"
    accounts = [put_account(stack, phone=phone) for _ in range(10)]
    by_search = put_account(stack, region=region, holder_name="杨帆")
    by_meter = put_account(stack, meter_no=meter_no)
    token = stack.login()
    verify_phone(stack, token, phone)
    listed = proposals(stack, token)
    assert len(listed) == 10
    for candidate in listed[:9]:
        assert bind_candidate(stack, token, candidate).status_code == 201
    assert len(stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]) == 9

    resp = bind_candidate(stack, token, listed[9])
    assert resp.status_code == 409 and error_of(resp)["code"] == "too_many_accounts"
    found = search(stack, token, region, "杨帆").json()["candidates"][0]
    resp = bind_by_sms(stack, token, found, by_search)
    assert resp.status_code == 409 and error_of(resp)["code"] == "too_many_accounts"
    meter = stack.api("GET", f"/api/v1/accounts/by-meter/{meter_no}", token=token).json()["candidate"]
    resp = bind_by_sms(stack, token, meter, by_meter)
    assert resp.status_code == 409 and error_of(resp)["code"] == "too_many_accounts"
    resp = stack.api(
        "POST",
        "/api/v1/accounts",
        token=token,
        json={
            "account_no": by_search["account_no"],
            "holder_name": "杨帆",
            "sms_code": stack.last_sms_code(by_search["phone"]),
        },
    )
    assert resp.status_code == 409 and error_of(resp)["code"] == "too_many_accounts"
    assert len(stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]) == 9
    for account in (by_search, by_meter):
        assert stack.db.accounts.find_one({"_id": account["account_no"]})["bindings"] == []
    assert sum(len(stack.db.accounts.find_one({"_id": a["account_no"]})["bindings"]) for a in accounts) == 9


def test_remarks_and_the_default_account_are_the_users_own(stack):
    phone = new_mobile()
    home, shop = put_account(stack, phone=phone), put_account(stack, phone=phone, customer_class="低压非居民")
    token, other = stack.login(), stack.login()
    verify_phone(stack, token, phone)
    for candidate in proposals(stack, token):
        assert bind_candidate(stack, token, candidate).status_code == 201
    order = [a["account_no"] for a in stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]]
    first, second = order
    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert [(a["remark"], a["is_default"]) for a in listed] == [(None, True), (None, False)]

    resp = stack.api(
        "PATCH", f"/api/v1/accounts/{second}/preferences", token=token, json={"remark": " 门店 ", "default": True}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["account"]["remark"] == "门店" and resp.json()["account"]["is_default"] is True
    assert (
        stack.api("PATCH", f"/api/v1/accounts/{first}/preferences", token=token, json={"remark": "家"}).status_code
        == 200
    )
    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert [(a["account_no"], a["remark"], a["is_default"]) for a in listed] == [
        (first, "家", False),
        (second, "门店", True),
    ]
    assert stack.api("GET", "/api/v1/accounts/default", token=token).json()["account"]["account_no"] == second
    # a request naming no account is about the default one
    resp = stack.api("GET", "/api/v1/outages", token=token)
    assert resp.status_code == 200, resp.text
    assert resp.json() == stack.api("GET", "/api/v1/outages", token=token, params={"account_no": second}).json()

    before = stack.db.binding_preferences.find_one({"_id": user_id(stack, token)})
    for body, field in (
        ({"remark": "一二三四五六七八九十一"}, "remark"),
        ({"default": "yes"}, "default"),
        ({"colour": "red"}, "colour"),
        ({}, "body"),
    ):
        resp = stack.api("PATCH", f"/api/v1/accounts/{first}/preferences", token=token, json=body)
        assert resp.status_code == 422 and {d["field"] for d in error_of(resp)["details"]} == {field}

    # another user can neither read nor change them, even after binding the same account
    for body in ({"remark": "抢"}, {"default": True}):
        resp = stack.api("PATCH", f"/api/v1/accounts/{second}/preferences", token=other, json=body)
        assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    resp = stack.api("GET", "/api/v1/accounts/default", token=other)
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    verify_phone(stack, other, phone)
    shop_candidate = next(p for p in proposals(stack, other) if p["account_no"].endswith(second[-3:]))
    assert bind_candidate(stack, other, shop_candidate).status_code == 201
    resp = stack.api("GET", "/api/v1/accounts", token=other)
    assert "门店" not in resp.text and resp.json()["accounts"][0]["remark"] is None
    assert (
        stack.api("PATCH", f"/api/v1/accounts/{second}/preferences", token=other, json={"remark": "仓库"}).status_code
        == 200
    )
    assert stack.db.binding_preferences.find_one({"_id": user_id(stack, token)}) == before

    # unbinding drops the remark and the default; binding again starts afresh
    assert stack.api("DELETE", f"/api/v1/accounts/{second}", token=token).status_code == 204
    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert [(a["account_no"], a["remark"], a["is_default"]) for a in listed] == [(first, "家", True)]
    again = next(p for p in proposals(stack, token) if p["account_no"].endswith(second[-3:]))
    assert bind_candidate(stack, token, again).status_code == 201
    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert [(a["remark"], a["is_default"]) for a in listed] == [("家", True), (None, False)]
    assert home["account_no"] in order and shop["account_no"] in order
