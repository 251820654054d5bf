"""Account binding (户号绑定): proof by holder name and SMS to the phone on record, at most 9 per user."""

from __future__ import annotations

from conftest import bind_account, error_of, new_account_no, put_account, skip_sms_interval


def request_code(stack, token, account) -> str:
    resp = stack.api(
        "POST", "/api/v1/sms-codes", token=token, json={"purpose": "bind_account", "account_no": account["account_no"]}
    )
    assert resp.status_code == 201, resp.text
    return stack.last_sms_code(account["phone"])


def bind(stack, token, account, code, name=None):
    return stack.api(
        "POST",
        "/api/v1/accounts",
        token=token,
        json={
            "account_no": account["account_no"],
            "holder_name": account["holder_name"] if name is None else name,
            "sms_code": code,
        },
    )


def bindings(stack, account) -> list:
    return stack.db.accounts.find_one({"account_no": account["account_no"]})["bindings"]


def test_bind_list_and_unbind(stack):
    account = put_account(stack, holder_name="张威", phone="18200000490")
    token = stack.login()
    resp = stack.api(
        "POST", "/api/v1/sms-codes", token=token, json={"purpose": "bind_account", "account_no": account["account_no"]}
    )
    assert resp.status_code == 201
    assert resp.json() == {"sent_to": "182****0490", "expires_in": 300}
    assert "绑定户号" in stack.sms_texts("18200000490")[-1]

    resp = bind(stack, token, account, stack.last_sms_code("18200000490"), name="  张威 ")
    assert resp.status_code == 201, resp.text
    view = resp.json()["account"]
    assert view["account_no"] == account["account_no"]
    assert view["holder_name"] == "*威" and view["phone"] == "182****0490"
    assert view["role"] == "holder" and view["bound_at"]

    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert [a["account_no"] for a in listed] == [account["account_no"]]
    assert listed[0]["holder_name"] == "*威" and listed[0]["phone"] == "182****0490"
    assert "张威" not in str(listed) and "18200000490" not in str(listed)
    assert "bindings" not in listed[0]

    # binding again is a no-op that succeeds (a retried request), even with the spent code
    resp = bind(stack, token, account, stack.last_sms_code("18200000490"))
    assert resp.status_code == 200 and len(bindings(stack, account)) == 1

    resp = stack.api("DELETE", f"/api/v1/accounts/{account['account_no']}", token=token)
    assert resp.status_code == 204
    assert stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"] == []
    assert bindings(stack, account) == []
    resp = stack.api("DELETE", f"/api/v1/accounts/{account['account_no']}", token=token)
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"


def test_wrong_code_is_refused_and_changes_nothing(stack):
    account = put_account(stack)
    token = stack.login()
    code = request_code(stack, token, account)
    resp = bind(stack, token, account, f"{(int(code) + 1) % 10**6:06d}")
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"
    assert bindings(stack, account) == []
    resp = bind(stack, token, account, "12ab56")
    assert resp.status_code == 422 and {d["field"] for d in error_of(resp)["details"]} == {"sms_code"}
    assert bind(stack, token, account, code).status_code == 201  # the right code still works


def test_wrong_name_is_refused_and_changes_nothing(stack):
    account = put_account(stack, holder_name="郏县明超实业有限公司", customer_class="低压非居民")
    token = stack.login()
    resp = bind(stack, token, account, request_code(stack, token, account), name="郏县明超实业公司")
    assert resp.status_code == 422 and error_of(resp)["code"] == "holder_name_mismatch"
    assert bindings(stack, account) == []
    # the code was spent on that attempt: a new one is needed
    skip_sms_interval(stack, account["phone"])
    resp = bind(stack, token, account, request_code(stack, token, account))
    assert resp.status_code == 201
    assert resp.json()["account"]["holder_name"] == "郏县******公司"


def test_unknown_account_is_404(stack):
    token = stack.login()
    no = new_account_no()
    resp = stack.api("POST", "/api/v1/sms-codes", token=token, json={"purpose": "bind_account", "account_no": no})
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    resp = stack.api(
        "POST", "/api/v1/accounts", token=token, json={"account_no": no, "holder_name": "张威", "sms_code": "123456"}
    )
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    resp = stack.api("POST", "/api/v1/accounts", token=token, json={"account_no": "1"})
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"account_no", "holder_name", "sms_code"}
    assert stack.api("GET", "/api/v1/accounts").status_code == 401


def test_another_users_binding_is_invisible_and_untouchable(stack):
    account = put_account(stack)
    token_a, token_b = stack.login(), stack.login()
    bind_account(stack, token_a, account)

    assert stack.api("GET", "/api/v1/accounts", token=token_b).json()["accounts"] == []
    resp = stack.api("DELETE", f"/api/v1/accounts/{account['account_no']}", token=token_b)
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    assert len(bindings(stack, account)) == 1

    # B cannot bind it with a code sent to B's own phone, nor with A's spent code
    resp = stack.api(
        "POST", "/api/v1/sms-codes", token=token_b, json={"mobile": "13900000001", "purpose": "bind_account"}
    )
    assert resp.status_code == 422  # bind_account codes go only to the phone on record
    resp = bind(stack, token_b, account, stack.last_sms_code(account["phone"]))
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"
    assert len(bindings(stack, account)) == 1

    # with a code texted to the account's phone (the holder lets a family member in), B may
    skip_sms_interval(stack, account["phone"])
    view_b = bind_account(stack, token_b, account)
    assert view_b["role"] == "holder"
    assert len(bindings(stack, account)) == 2
    listed_a = stack.api("GET", "/api/v1/accounts", token=token_a).json()["accounts"]
    assert "user_id" not in str(listed_a)

    # B unbinding removes only B
    assert stack.api("DELETE", f"/api/v1/accounts/{account['account_no']}", token=token_b).status_code == 204
    assert len(bindings(stack, account)) == 1
    assert len(stack.api("GET", "/api/v1/accounts", token=token_a).json()["accounts"]) == 1


def test_the_tenth_binding_is_refused(stack):
    token = stack.login()
    accounts = [put_account(stack) for _ in range(10)]
    for account in accounts[:9]:
        bind_account(stack, token, account)
    assert len(stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]) == 9

    tenth = accounts[9]
    code = request_code(stack, token, tenth)
    resp = bind(stack, token, tenth, code)
    assert resp.status_code == 409 and error_of(resp)["code"] == "too_many_accounts"
    assert bindings(stack, tenth) == []

    # after unbinding one, the same code (not spent by the refusal) binds the tenth
    assert stack.api("DELETE", f"/api/v1/accounts/{accounts[0]['account_no']}", token=token).status_code == 204
    assert bind(stack, token, tenth, code).status_code == 201
    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert len(listed) == 9 and listed[-1]["account_no"] == tenth["account_no"]


def test_no_phone_in_clear_in_the_database(stack):
    phone = "13712345678"
    account = put_account(stack, phone=phone)
    token = stack.login()
    bind_account(stack, token, account)
    stored = stack.db.accounts.find_one({"account_no": account["account_no"]})
    assert "phone" not in stored and stored["phone_enc"].startswith("v1:") and stored["phone_hash"]
    for name in ("accounts", "sms_codes", "rate_limits", "request_nonces", "binding_quota"):
        for doc in stack.db[name].find():
            assert phone not in str(doc), (name, doc)


def test_marketing_update_keeps_bindings(stack):
    account = put_account(stack)
    token = stack.login()
    bind_account(stack, token, account)
    new_phone = "13698765432"
    resp = stack.internal(
        "PUT",
        f"/internal/v1/accounts/{account['account_no']}",
        json={**{k: v for k, v in account.items() if k != "account_no"}, "phone": new_phone},
    )
    assert resp.status_code == 200
    listed = stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]
    assert listed[0]["phone"] == "136****5432"
