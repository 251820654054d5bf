"""Template keyword values as WeChat accepts them, by the keyword's type.

A keyword's name is its type and a number (``thing2``, ``character_string1``, ``time3``), as
WeChat names the keywords of subscribe messages and of the official account's category
templates; both check the same rules. Only a ``thing`` may be shortened (to 20 characters, the
last one "…"): any other value is an identifier, a time or an amount, and a cut one would be
wrong, so it is refused (``ValueError``) and the channel is skipped for that message.
"""

from __future__ import annotations

import re

HAN = r"\u3400-\u4dbf\u4e00-\u9fff"
SYMBOL = r"!-/:-@\[-`{-~"
THING_LIMIT = 20
_CLOCK = r"([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?"
_DAY = (
    r"(\d{4}年\d{1,2}月(\d{1,2}日)?|\d{1,2}月\d{1,2}日"
    r"|\d{4}[-/.]\d{1,2}([-/.]\d{1,2})?|\d{1,2}[-/.]\d{1,2})"
)


def _range(point: str) -> re.Pattern[str]:
    return re.compile(rf"{point}(\s*~\s*{point})?")


RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "thing": (re.compile(r"[^\x00-\x1f\x7f]{1,20}"), "20 个以内字符"),
    "number": (re.compile(r"(?=[\d.]{1,32}$)\d+(\.\d+)?"), "32 位以内数字"),
    "letter": (re.compile(r"[A-Za-z]{1,32}"), "32 位以内字母"),
    "symbol": (re.compile(rf"[{SYMBOL}]{{1,5}}"), "5 位以内符号"),
    "character_string": (re.compile(rf"[0-9A-Za-z{SYMBOL}]{{1,32}}"), "32 位以内数字、字母或符号"),
    "time": (_range(rf"({_DAY}\s*)?{_CLOCK}"), "24 小时制时间"),
    "date": (_range(rf"{_DAY}(\s*{_CLOCK})?"), "日期"),
    "amount": (re.compile(r"[¥$€£]?\d{1,10}(\.\d{1,2})?元?"), "金额"),
    "phone_number": (re.compile(rf"[0-9{SYMBOL}]{{1,17}}"), "17 位以内数字、符号"),
    "car_number": (re.compile(rf"(?=.{{1,8}}$)[{HAN}0-9A-Za-z][0-9A-Za-z]*[{HAN}0-9A-Za-z]?"), "车牌号"),
    "name": (re.compile(rf"[{HAN}]{{1,10}}|[A-Za-z{SYMBOL} ]{{1,20}}"), "姓名"),
    "phrase": (re.compile(rf"[{HAN}]{{1,5}}"), "5 个以内汉字"),
}


def keyword_type(keyword: str) -> str:
    return keyword.rstrip("0123456789")


def fit(keyword: str, text: str) -> str:
    """``text`` as WeChat accepts it for ``keyword``; ``ValueError`` naming the rule if it cannot be."""
    kind = keyword_type(keyword)
    if kind not in RULES:
        raise ValueError(f"{keyword}: unknown keyword type {kind!r}")
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    if kind == "thing" and len(text) > THING_LIMIT:
        text = text[: THING_LIMIT - 1] + "…"
    rule, described = RULES[kind]
    if not rule.fullmatch(text):
        raise ValueError(f"{keyword}: {text!r} is not a {kind} ({described})")
    return text
