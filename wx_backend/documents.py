"""Contract documents: Jinja2 templates under ``templates/contracts/`` rendered to PDF by WeasyPrint.

``render_contract`` is synchronous and CPU-bound (about half a second): callers on the IOLoop
run it in a process pool. Besides the PDF it returns the 签署页 spots — the boxes of the
(盖章) and (签字) places — read from WeasyPrint's layout, so sealing never relies on
hard-coded coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

_PARTY = ["name"]
_COMMON = ["contract_no", "account_no", "sign_place", "supplier.name", "customer.name", "usage_address", "term_months"]

TEMPLATES: dict[str, dict] = {
    "hv_new_connection": {
        "title": "高压供用电合同",
        "required": [
            *_COMMON,
            "capacity_kva",
            "supply_voltage",
            "power_source",
            "property_boundary",
            "metering_point",
            "tariff",
        ],
        "optional": [
            "industry",
            "circuits",
            "backup_power",
            "metering_method",
            "basic_charge_method",
            "power_factor_standard",
            "special_terms",
        ],
    },
    "lv_non_residential": {
        "title": "低压非居民供用电合同",
        "required": [*_COMMON, "capacity_kw", "supply_voltage", "metering_point", "tariff"],
        "optional": ["power_source", "property_boundary", "tou", "special_terms"],
    },
}
"""Available templates: name -> Chinese title, required and optional context fields.

Both parties (``supplier``, ``customer``) are dicts with ``name`` (required) and the optional
签署页 fields ``address``, ``contact``, ``phone``, ``fax``, ``bank``, ``bank_account``,
``credit_code``, ``sign_date``. Dotted names are fields of a party.
"""

# Elements of the 签署页 whose boxes are reported (see templates/contracts/_base.html).
SPOT_IDS = ("seal-supplier", "seal-customer", "sign-supplier", "sign-customer", "date-supplier", "date-customer")

PX_TO_PT = 72 / 96  # CSS px are 1/96 in, PDF points 1/72 in

Spot = tuple[int, tuple[float, float, float, float]]


class ContractTemplateError(ValueError):
    """Unknown template or missing context fields (``missing`` lists the dotted names)."""

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []


@dataclass
class RenderedContract:
    """A rendered contract.

    ``spots`` maps a spot name (``seal-supplier``, ``seal-customer``, ``sign-supplier``,
    ``sign-customer``, ``date-supplier``, ``date-customer``) to ``(page_index, (x1, y1, x2, y2))``
    in PDF points with the origin at the bottom-left of the page — the form ``seal_pdf`` takes.
    """

    pdf: bytes
    page_count: int
    spots: dict[str, Spot] = field(default_factory=dict)
    title: str = ""


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.ChainableUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _lookup(context: dict, dotted: str):
    value = context
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _missing(template: str, context: dict) -> list[str]:
    return [name for name in TEMPLATES[template]["required"] if _lookup(context, name) in (None, "")]


def _spots(document) -> dict[str, Spot]:
    found: dict[str, Spot] = {}
    for index, page in enumerate(document.pages):
        height_pt = page.height * PX_TO_PT
        for box in page._page_box.descendants():
            element = getattr(box, "element", None)
            if element is None or not hasattr(element, "get"):
                continue
            spot_id = element.get("id")
            if spot_id not in SPOT_IDS or spot_id in found:
                continue  # the first box of an element is its outermost one
            x = box.border_box_x() * PX_TO_PT
            y_top = box.border_box_y() * PX_TO_PT
            w = box.border_width() * PX_TO_PT
            h = box.border_height() * PX_TO_PT
            box_pt = (round(x, 2), round(height_pt - y_top - h, 2), round(x + w, 2), round(height_pt - y_top, 2))
            found[spot_id] = (index, box_pt)
    return found


def render_contract(template: str, context: dict) -> RenderedContract:
    """Render contract ``template`` (a key of ``TEMPLATES``) with ``context`` to PDF.

    Raises ContractTemplateError for an unknown template or missing required fields, and
    RuntimeError if the rendered layout lacks a 签署页 spot (a broken template).
    """
    if template not in TEMPLATES:
        raise ContractTemplateError(f"unknown contract template {template!r}")
    missing = _missing(template, context)
    if missing:
        raise ContractTemplateError("missing contract fields: " + ", ".join(missing), missing)
    from weasyprint import HTML  # imported on first render: the web process only lists templates

    title = TEMPLATES[template]["title"]
    html = _env.get_template(f"contracts/{template}.html").render({**context, "title": title})
    document = HTML(string=html, base_url=str(TEMPLATE_DIR)).render()
    spots = _spots(document)
    absent = [s for s in SPOT_IDS if s not in spots]
    if absent:
        raise RuntimeError(f"template {template} lacks signature spots: {absent}")
    pdf = document.write_pdf()
    return RenderedContract(pdf=pdf, page_count=len(document.pages), spots=spots, title=title)


def example_context(template: str = "hv_new_connection") -> dict:
    """A complete context for ``template`` with made-up data (demos, tests, benchmarks)."""
    supplier = {
        "name": "国网河南省电力公司郏县供电公司",
        "address": "河南省平顶山市郏县龙山大道中段",
        "contact": "岳建印",
        "phone": "0375-5112345",
        "fax": "0375-5112346",
        "bank": "中国银行郏县支行",
        "bank_account": "252000228884",
        "credit_code": "91410425MA44XX000N",
    }
    customer = {
        "name": "郏县惠源纺织有限公司",
        "address": "河南省平顶山市郏县产业集聚区纺织路 106 号",
        "contact": "王立新",
        "phone": "18201322796",
        "fax": "",
        "bank": "郏县农村商业银行城关支行",
        "bank_account": "6229 1234 5678 9012",
        "credit_code": "91410425MA45YY0008",
    }
    context = {
        "contract_no": "JX2026HV000123",
        "account_no": "5263940474",
        "sign_place": "河南省平顶山市郏县",
        "supplier": supplier,
        "customer": customer,
        "usage_address": "河南省平顶山市郏县产业集聚区纺织路 106 号",
        "term_months": 12,
        "tariff": "大工业用电",
        "supply_voltage": "10kV",
        "metering_point": "用电人 10kV 进线柜计量柜内",
    }
    if template == "hv_new_connection":
        context |= {
            "capacity_kva": 1250,
            "power_source": "110kV 郏县城关变电站 10kV 纺织线 #23 杆",
            "property_boundary": "10kV 纺织线 #23 杆 T 接点跌落式熔断器上桩头",
            "industry": "纺织业",
        }
    else:
        context |= {
            "contract_no": "JX2026LV000456",
            "tariff": "一般工商业用电",
            "supply_voltage": "380V",
            "capacity_kw": 80,
            "metering_point": "用电人门前计量箱内",
            "tou": True,
        }
    return context
