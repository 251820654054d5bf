"""The catalogue: every type validated from generated submissions, eligibility, stages, the HTTP
endpoints, start-up checks of malformed files, and a 15th type added without code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import date, timedelta

import pytest
from catalog_samples import (
    eligible_case,
    ineligible_cases,
    invalid_submission,
    resident_id,
    sample_account,
    valid_submission,
)
from conftest import error_of

from wx_backend.embedded import ROOT, free_port
from wx_backend.services.catalog import BUILTIN_DIR, CatalogError, ServiceNotFound, StageNotFound, load_catalog

CATALOG = load_catalog(BUILTIN_DIR)
CODES = CATALOG.codes()
TODAY = date(2026, 2, 26)
CJK = re.compile(r"[\u4e00-\u9fff]")

FOURTEEN = {
    "rename_transfer": "更名/过户",
    "suspend_reduce": "暂停/减容",
    "demand_change": "需量值变更",
    "tou_change": "峰谷电变更",
    "enterprise_new": "企业新装",
    "personal_new": "个人新装",
    "meter_test": "电能表校验",
    "capacity_demand_change": "容量/需量变更",
    "capacity_restore": "容量恢复",
    "vat_change": "增值税变更",
    "ev_charger": "充电桩报装",
    "new_power_on": "新户通电",
    "capacity_increase": "增容",
    "other": "其他办电",
}


def test_the_catalogue_has_the_fourteen_types_of_the_manual():
    assert {s["code"]: s["name"] for s in CATALOG.list()} == FOURTEEN
    entries = {s["code"]: s["entry"] for s in CATALOG.list()}
    assert entries["enterprise_new"] == "首页→新装→企业新装"
    assert entries["personal_new"] == "首页→新装→个人新装"
    assert entries["capacity_demand_change"] == "首页→容量/需量变更"
    for item in CATALOG.list():
        assert item["entry"].startswith("首页→")
        assert CJK.search(item["description"])


# -- every type, from generated submissions ------------------------------------------------


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("identity", ["owner", "agent"])
def test_a_generated_valid_submission_passes(code, identity):
    schema = CATALOG.schema(code)
    account = sample_account(schema)
    submission = valid_submission(schema, choose={"applicant.identity": identity}, account=account, today=TODAY)
    clean, errors = CATALOG.validate(code, submission, account=account, today=TODAY)
    assert errors == []
    assert clean["applicant"]["identity"] == identity
    assert set(clean["form"]) == set(submission["form"])
    assert clean["attachments"] == submission["attachments"]
    # agent details are asked for, and kept, only when an agent applies
    assert ("agent_id_no" in clean["applicant"]) == (identity == "agent")


@pytest.mark.parametrize("code", CODES)
def test_a_submission_with_only_required_fields_passes(code):
    schema = CATALOG.schema(code)
    account = sample_account(schema)
    submission = valid_submission(schema, account=account, today=TODAY, optional=False)
    assert CATALOG.validate(code, submission, account=account, today=TODAY)[1] == []


@pytest.mark.parametrize("code", CODES)
def test_every_broken_field_gets_its_own_error_in_chinese(code):
    schema = CATALOG.schema(code)
    submission, paths = invalid_submission(schema)
    _, errors = CATALOG.validate(code, submission, account=sample_account(schema), today=TODAY)
    got = [e["field"] for e in errors]
    assert sorted(got) == sorted(paths)  # every broken field, each once, nothing else
    for error in errors:
        assert CJK.search(error["message"]), error


@pytest.mark.parametrize("code", CODES)
def test_an_empty_submission_names_every_required_field(code):
    schema = CATALOG.schema(code)
    _, errors = CATALOG.validate(code, {}, today=TODAY)
    required = {
        f["path"]
        for s in ("applicant", "form")
        for f in schema[s]["fields"]
        if f["required"] and "required_when" not in f
    }
    required |= {
        f"attachments.{a['kind']}" for a in schema["attachments"] if a["required"] and "required_when" not in a
    }
    assert {e["field"] for e in errors} == required


@pytest.mark.parametrize("code", CODES)
def test_eligibility_refuses_other_customers_with_a_reason(code):
    schema = CATALOG.schema(code)
    account, form = eligible_case(schema)
    assert CATALOG.eligible(code, account, form) is None
    cases = ineligible_cases(schema)
    assert cases, "every type must have someone it refuses"
    for account, form in cases:
        reason = CATALOG.eligible(code, account, form)
        assert reason and CJK.search(reason), (account, form)


@pytest.mark.parametrize("code", CODES)
def test_stages_start_at_submitted_and_cancel_only_before_acceptance(code):
    stages = CATALOG.stages(code)
    assert stages[0]["code"] == "submitted"
    assert {"accepted", "cancelled"} <= set(CATALOG.next_stages(code, "submitted"))
    for stage in stages[1:]:
        assert "cancelled" not in CATALOG.next_stages(code, stage["code"])
    assert CATALOG.next_stages(code, "cancelled") == []
    assert CATALOG.next_stages(code, "archived") == []
    # archived is reached by following the declared transitions from accepted
    path, stage = [], "accepted"
    while CATALOG.next_stages(code, stage):
        stage = CATALOG.next_stages(code, stage)[0]
        path.append(stage)
    assert path[-1] == "archived"
    with pytest.raises(StageNotFound):
        CATALOG.next_stages(code, "no_such_stage")


def test_enterprise_new_has_the_full_work_order():
    codes = [s["code"] for s in CATALOG.stages("enterprise_new")]
    assert codes[:7] == ["submitted", "accepted", "survey", "plan_reply", "contract_signing", "connection", "archived"]
    assert [s["name"] for s in CATALOG.stages("enterprise_new")][1:7] == [
        "受理",
        "现场勘查",
        "供电方案答复",
        "合同签订",
        "装表接电",
        "归档",
    ]
    assert CATALOG.stage("enterprise_new", "contract_signing")["customer_action"] is True
    assert CATALOG.stage("enterprise_new", "survey")["customer_action"] is False


# -- particular rules ------------------------------------------------------------------------


def _with(code, account=None, **form):
    schema = CATALOG.schema(code)
    account = account if account is not None else sample_account(schema)
    submission = valid_submission(schema, account=account, today=TODAY)
    submission["form"].update(form)
    return CATALOG.validate(code, submission, account=account, today=TODAY)


def _errors(result):
    return {e["field"]: e["message"] for e in result[1]}


def test_pause_lasts_at_least_fifteen_days_and_at_most_six_months_from_a_start_five_days_ahead():
    start = TODAY + timedelta(days=5)
    ok = _with(
        "suspend_reduce",
        change_kind="pause",
        start_date=start.isoformat(),
        end_date=(start + timedelta(days=15)).isoformat(),
    )
    assert ok[1] == []
    short = _with(
        "suspend_reduce",
        change_kind="pause",
        start_date=start.isoformat(),
        end_date=(start + timedelta(days=14)).isoformat(),
    )
    assert "至少晚15天" in _errors(short)["form.end_date"]
    long = _with(
        "suspend_reduce",
        change_kind="pause",
        start_date=start.isoformat(),
        end_date=(start + timedelta(days=184)).isoformat(),
    )
    assert "183" in _errors(long)["form.end_date"]
    early = _with("suspend_reduce", start_date=(TODAY + timedelta(days=4)).isoformat())
    assert "form.start_date" in _errors(early)
    # a capacity reduction has no end date: one sent along is dropped, not kept
    clean, errors = _with("suspend_reduce", change_kind="reduce", end_date="2020-01-01")
    assert errors == [] and "end_date" not in clean["form"]


def test_pause_capacity_cannot_exceed_the_account_capacity():
    account = {"customer_class": "高压", "tariff": {}, "capacity_kva": 400}
    message = _errors(_with("suspend_reduce", account, capacity_kva=401))["form.capacity_kva"]
    assert message == "暂停/减少容量不能超过合同容量（400kVA），即400kVA"
    assert _with("suspend_reduce", account, capacity_kva="400")[0]["form"]["capacity_kva"] == 400


def test_contract_demand_is_not_below_forty_percent_of_capacity():
    account = {"customer_class": "高压", "tariff": {"two_part": True, "max_demand": True}, "capacity_kva": 1000}
    message = _errors(_with("demand_change", account, new_demand_kw=399))["form.new_demand_kw"]
    assert "40%" in message and "400kW" in message
    assert _with("demand_change", account, new_demand_kw=400)[1] == []
    assert "form.new_demand_kw" in _errors(_with("demand_change", account, new_demand_kw=1001))
    assert "form.effective_month" in _errors(_with("demand_change", account, effective_month="2026-02"))
    assert _with("demand_change", account, effective_month="2026-03")[1] == []


def test_contract_demand_is_asked_for_only_when_billing_by_contract_demand():
    account = sample_account(CATALOG.schema("capacity_demand_change"))
    clean, errors = _with("capacity_demand_change", account, billing_method="capacity", contract_demand_kw=None)
    assert errors == [] and "contract_demand_kw" not in clean["form"]
    errors = _errors(
        _with("capacity_demand_change", account, billing_method="contract_demand", contract_demand_kw=None)
    )
    assert errors == {"form.contract_demand_kw": "请填写合同最大需量"}


def test_an_agent_must_give_name_id_and_mobile_and_the_authorisation():
    schema = CATALOG.schema("other")
    submission = valid_submission(schema, today=TODAY)
    submission["applicant"]["identity"] = "agent"
    errors = _errors(CATALOG.validate("other", submission, today=TODAY))
    assert errors == {
        "applicant.agent_name": "请填写经办人姓名",
        "applicant.agent_id_no": "请填写经办人身份证号码",
        "applicant.agent_mobile": "请填写经办人手机号码",
        "attachments.agent_authorization": "请上传授权委托书",
        "attachments.agent_id_card": "请上传经办人身份证",
    }


def test_the_id_number_is_checked_by_the_chosen_document_type():
    schema = CATALOG.schema("rename_transfer")
    submission = valid_submission(schema, today=TODAY)
    submission["applicant"].update(id_type="credit_code", id_no=resident_id())
    assert _errors(CATALOG.validate("rename_transfer", submission, today=TODAY)) == {
        "applicant.id_no": "身份证件号码不是有效的统一社会信用代码"
    }
    submission["applicant"].update(id_type="resident_id", id_no=resident_id("11010519491231002")[:-1] + "0")
    assert "applicant.id_no" in _errors(CATALOG.validate("rename_transfer", submission, today=TODAY))
    submission["applicant"].update(id_type="resident_id", id_no="11010519491231002x")
    clean, errors = CATALOG.validate("rename_transfer", submission, today=TODAY)
    assert errors == [] and clean["applicant"]["id_no"] == "11010519491231002X"
    submission["applicant"].update(id_type="passport", id_no="e12345678")
    assert CATALOG.validate("rename_transfer", submission, today=TODAY)[1] == []


def test_person_only_types_do_not_offer_organisation_documents():
    options = {o["value"] for o in CATALOG.schema("personal_new")["applicant"]["fields"][1]["options"]}
    assert "credit_code" not in options and "resident_id" in options
    options = {o["value"] for o in CATALOG.schema("vat_change")["applicant"]["fields"][1]["options"]}
    assert options == {"credit_code"}


def test_voltage_options_follow_the_customer_class():
    schema = CATALOG.schema("enterprise_new")
    submission = valid_submission(schema, choose={"form.customer_class": "高压"}, today=TODAY)
    assert submission["form"]["voltage"] == "10kV"  # the first option available to 高压
    assert "load_list" in submission["attachments"]  # asked of high-voltage applicants only
    assert CATALOG.validate("enterprise_new", submission, today=TODAY)[1] == []
    submission["form"]["voltage"] = "380V"
    assert _errors(CATALOG.validate("enterprise_new", submission, today=TODAY)) == {
        "form.voltage": "供电电压“380V”与所选客户类别不符"
    }
    assert CATALOG.eligible("enterprise_new", None, {"customer_class": "高压"}) is None
    assert (
        CATALOG.eligible("enterprise_new", None, {"customer_class": "低压居民"}) == "企业新装仅受理低压非居民、高压客户"
    )


def test_values_are_normalised():
    clean, errors = _with("ev_charger", charger_power_kw="11")
    assert errors == [] and clean["form"]["charger_power_kw"] == 11
    clean, errors = _with("vat_change", bank_account="6222 0202 0011 2233")
    assert errors == [] and clean["form"]["bank_account"] == "6222020200112233"
    assert _errors(_with("ev_charger", property_consent=False)) == {
        "form.property_consent": "请确认已取得物业同意安装证明"
    }
    assert "form.description" in _errors(_with("other", description="说" * 201))
    assert _with("other", description="说" * 200)[1] == []
    assert "form.capacity_kva" in _errors(_with("personal_new", capacity_kva=12.5))
    assert "form.capacity_kva" in _errors(_with("personal_new", capacity_kva=True))


def test_attachments_are_lists_of_upload_ids_within_the_limit():
    schema = CATALOG.schema("personal_new")
    submission = valid_submission(schema, today=TODAY)
    submission["attachments"]["owner_id_proof"] = [f"{i:024x}" for i in range(3)]
    assert _errors(CATALOG.validate("personal_new", submission, today=TODAY)) == {
        "attachments.owner_id_proof": "产权人身份证明（身份证或营业执照）最多上传2个文件"
    }
    submission["attachments"]["owner_id_proof"] = f"{7:024x}"
    clean, errors = CATALOG.validate("personal_new", submission, today=TODAY)
    assert errors == [] and clean["attachments"]["owner_id_proof"] == [f"{7:024x}"]
    assert CATALOG.check_attachment("personal_new", "owner_id_proof", "application/pdf") is None
    assert CATALOG.check_attachment("personal_new", "agent_id_card", "application/pdf")
    assert CATALOG.check_attachment("personal_new", "no_such_kind", "image/png")


def test_malformed_submissions_are_errors_not_crashes():
    assert CATALOG.validate("other", None)[1] == [{"field": "submission", "message": "提交内容格式不正确"}]
    errors = _errors(CATALOG.validate("other", {"applicant": [], "form": "x", "attachments": 3, "extra": 1}))
    assert {"applicant", "form", "attachments", "extra"} <= set(errors)
    with pytest.raises(ServiceNotFound):
        CATALOG.validate("no_such_type", {})
    assert CATALOG.sensitive_paths("rename_transfer") == [
        "applicant.id_no",
        "applicant.mobile",
        "applicant.agent_id_no",
        "applicant.agent_mobile",
        "form.new_holder_id_no",
        "form.new_holder_mobile",
    ]


# -- over HTTP --------------------------------------------------------------------------------


def test_services_are_listed_without_login(stack):
    resp = stack.api("GET", "/api/v1/services")
    assert resp.status_code == 200
    services = resp.json()["services"]
    assert len(services) == 14
    assert [s["code"] for s in services] == CODES
    assert services[0] == {
        "code": "rename_transfer",
        "name": "更名/过户",
        "description": "过户/更名为低压居民和低压非居用户提供过户、更名申请服务",
        "entry": "首页→更名/过户",
        "customer_classes": ["低压居民", "低压非居民"],
        "requires_account": True,
    }


def test_each_schema_is_served(stack):
    for code in CODES:
        resp = stack.api("GET", f"/api/v1/services/{code}")
        assert resp.status_code == 200, code
        assert resp.json() == CATALOG.schema(code)
    resp = stack.api("GET", "/api/v1/services/no_such_type")
    assert resp.status_code == 404 and error_of(resp)["code"] == "service_not_found"


# -- the files themselves ----------------------------------------------------------------------

NEW_TYPE = """
code = "meter_relocation"
name = "计量装置迁移"
description = "计量装置迁移为客户提供电能表移位申请服务。"
entry = "首页→其他办电→计量装置迁移"
order = 15

[eligibility]
customer_classes = ["低压居民", "低压非居民"]
requires_account = true
applicant_kinds = ["person", "organisation"]

[[form]]
name = "new_location"
label = "迁移后位置"
type = "string"
min_length = 2
max_length = 100

[[form]]
name = "preferred_date"
label = "期望施工日期"
type = "date"
min_days = 3
max_days = 60

[[attachments]]
kind = "site_photo"
label = "现场照片"
accept = ["image/jpeg", "image/png"]

[[stages]]
code = "submitted"
name = "已提交"
next = ["accepted", "cancelled"]

[[stages]]
code = "accepted"
name = "受理"
next = ["relocation"]

[[stages]]
code = "relocation"
name = "表计迁移"
next = ["archived"]

[[stages]]
code = "archived"
name = "归档"
next = []

[[stages]]
code = "cancelled"
name = "已撤销"
next = []
"""


def test_a_fifteenth_type_is_a_file_in_the_extra_folder(stack, tmp_path):
    (tmp_path / "meter_relocation.toml").write_text(NEW_TYPE, encoding="utf-8")
    catalog = load_catalog(BUILTIN_DIR, tmp_path)
    schema = catalog.schema("meter_relocation")
    submission = valid_submission(schema, today=TODAY)
    assert catalog.validate("meter_relocation", submission, today=TODAY)[1] == []
    assert catalog.eligible("meter_relocation", {"customer_class": "高压"})
    # and a backend started with WX_CATALOG_DIR serves it
    port = free_port()
    app = stack.start_app(port, {"WX_CATALOG_DIR": str(tmp_path)})
    try:
        base = f"http://127.0.0.1:{port}/api/v1/services"
        services = stack.http.get(base, timeout=10).json()["services"]
        assert len(services) == 15 and services[-1]["code"] == "meter_relocation"
        assert stack.http.get(f"{base}/meter_relocation", timeout=10).json() == schema
    finally:
        app.stop()


def _broken(tmp_path, text):
    (tmp_path / "broken.toml").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(BUILTIN_DIR, tmp_path)
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (('type = "string"\nmin_length = 2', 'type = "strin"\nmin_length = 2'), "form.new_location.type"),
        (("max_length = 100", "max_lenght = 100"), "form.new_location.max_lenght"),
        (('next = ["archived"]', 'next = ["archived", "cancelled"]'), "stages.relocation.next"),
        (('next = ["relocation"]', 'next = ["relokation"]'), "stages.accepted.next"),
        (
            ('customer_classes = ["低压居民", "低压非居民"]', 'customer_classes = ["居民"]'),
            "eligibility.customer_classes",
        ),
        (("min_days = 3", 'min_days = "3"'), "form.preferred_date.min_days"),
        (('accept = ["image/jpeg", "image/png"]', 'accept = ["text/plain"]'), "attachments.site_photo.accept"),
        (("order = 15", 'order = 15\nlabel = "x"'), "label"),
        (('name = "计量装置迁移"', 'name = "计量装置迁移'), "not valid TOML"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_file_and_the_field(tmp_path, change, names):
    old, new = change
    assert old in NEW_TYPE
    message = _broken(tmp_path, NEW_TYPE.replace(old, new, 1))
    assert "broken.toml" in message and names in message, message


def test_a_type_declared_twice_in_one_folder_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text(NEW_TYPE, encoding="utf-8")
    (tmp_path / "b.toml").write_text(NEW_TYPE, encoding="utf-8")
    with pytest.raises(CatalogError, match=r"b\.toml"):
        load_catalog(BUILTIN_DIR, tmp_path)


def test_the_builtin_files_stay_valid_when_copied(tmp_path):
    # an operator's override folder may start as a copy of the built-in one
    shutil.copytree(BUILTIN_DIR, tmp_path / "copy")
    assert load_catalog(tmp_path / "copy").codes() == CODES


def test_the_backend_does_not_start_with_a_malformed_catalogue(stack, tmp_path):
    (tmp_path / "broken.toml").write_text(NEW_TYPE.replace("max_length = 100", "max_lenght = 100"), encoding="utf-8")
    env = {**stack.env, "WX_PORT": str(free_port()), "WX_CATALOG_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "scripts.serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "configuration error: catalogue file broken.toml: form.new_location.max_lenght: unknown key" in done.stderr
    assert "Traceback" not in done.stderr
