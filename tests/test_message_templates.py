"""The message catalogue against WeChat's rules as the sandbox keeps them (its own copy)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from wx_backend.sandbox import templates as wechat
from wx_backend.services.notifications import Template, load_message_templates, render

CATALOGUE = load_message_templates()
# realistic values of every data field a caller gives, as the services format them
SAMPLES = {
    "app_no": "20260226000123",
    "service_name": "高压新装（增容）及配套工程",
    "contract_no": "HT2026000123",
    "stage": "装表接电",
    "submitted_at": "2026-02-26 09:30",
    "account_no": "5263900001",
    "period": "2026-02",
    "amount_fen": 1234567,
    "due_date": "2026-03-15",
    "region": "郏县城关镇人民路及周边十二个台区",
    "start": "2026-03-01 08:00",
    "end": "2026-03-01 18:00",
    "reason": "线路检修，更换10kV柱上开关及配套设备",
    "paid_at": "2026-02-26 10:00",
    "balance_fen": 1234,
    "days_text": "约3天",
    "as_of": "2026-02-26 10:00",
    "owed_fen": 98765,
    "at": "2026-02-26 10:00",
    "cutoff_at": "2026-03-01 09:00",
    "invoice_no": "26412000000012345678",
}


def entries():
    for message in CATALOGUE.messages.values():
        for channel, known in (
            ("subscribe", wechat.SUBSCRIBE_TEMPLATES),
            ("official_account", wechat.TEMPLATE_MESSAGE_TEMPLATES),
        ):
            template = getattr(message, channel)
            if template:
                yield pytest.param(message, channel, template, known, id=f"{message.key}.{channel}")


@pytest.mark.parametrize(("message", "channel", "template", "known"), list(entries()))
def test_every_catalogue_entry_satisfies_wechats_rules(message, channel, template, known):
    assert template.template_id in known, "a template id WeChat does not know"
    assert set(template.data) == set(known[template.template_id]), "keywords differ from the template's"
    data = {name: SAMPLES[name] for name in message.fields}
    values = render(template, data, channel)
    refused = wechat.check_data(known[template.template_id], {k: {"value": v} for k, v in values.items()})
    assert refused is None, (refused, values)


def test_the_sandbox_keeps_its_own_copy_of_the_rules():
    for path in Path(wechat.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [m for m in imported if "services" in m], f"{path.name} learns WeChat's rules from the backend"


@pytest.mark.parametrize(
    ("keyword", "value", "ok"),
    [
        ("thing1", "二十个字以内的事物描述", True),
        ("thing1", "字" * 21, False),
        ("thing1", "换\n行", False),
        ("character_string1", "HT2026-000123_a", True),
        ("character_string1", "A" * 33, False),
        ("character_string1", "20260226…", False),
        ("character_string1", "户号5263", False),
        ("phrase3", "待签订", True),
        ("phrase3", "已开具发票了", False),
        ("phrase3", "OK", False),
        ("time2", "15:01", True),
        ("time2", "2026-03-01 08:00", True),
        ("time2", "2019年10月1日 15:01", True),
        ("time2", "2026-03-01 08:00~2026-03-01 18:00", True),
        ("time2", "2026-03-15", False),
        ("time2", "请尽快交费", False),
        ("date4", "2026-03-15", True),
        ("date4", "2019年10月1日", True),
        ("date4", "明天", False),
        ("amount3", "123.45元", True),
        ("amount3", "¥5", True),
        ("amount3", "-1.00元", False),
        ("phone_number1", "+86-0766-66888866", True),
        ("phone_number1", "电话", False),
        ("car_number1", "粤A8Z888挂", True),
        ("car_number1", "粤A8Z888挂12", False),
        ("name1", "张威", True),
        ("name1", "Zhang Wei", True),
        ("name1", "张Wei", False),
        ("number1", "12.5", True),
        ("number1", "1a", False),
        ("letter1", "abc", True),
        ("symbol1", "#", True),
    ],
)
def test_keyword_types_as_wechat_states_them(keyword, value, ok):
    assert wechat.valid(keyword, value) is ok


def test_no_ellipsis_inside_a_character_string():
    # a thing is shortened to 20 characters; an identifier is never cut: the channel is skipped
    template = Template("x", {"character_string1": "{app_no}", "thing2": "{reason}"})
    values = render(template, {"app_no": "A" * 20, "reason": "原" * 30}, "subscribe")
    assert values == {"character_string1": "A" * 20, "thing2": "原" * 19 + "…"}
    assert wechat.valid("thing2", values["thing2"])
    with pytest.raises(ValueError, match="character_string1"):
        render(template, {"app_no": "A" * 33, "reason": "x"}, "subscribe")
