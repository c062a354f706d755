"""Message templates: Jinja2 in a sandbox, checked by `validate` against each kind's fields.

Every template sees the common fields; a rule's own templates also see the fields of
its kind (the facts of its messages, by snake_case name). A field a template names
but the kind does not provide is an error at `validate`, never a surprise at 3 a.m.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

COMMON = (
    "account", "provider", "rule", "kind", "severity", "decision", "summary", "description",
    "since", "reminder", "title", "body",
)  # fmt: skip
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "balance_below": ("balance", "threshold", "resolves_at", "change"),
    "subscription_cancelling": ("period_ends", "time_left", "numbers_covered", "then"),
    "numbers_at_risk": ("release_date", "time_left", "balance", "payg_numbers"),
    "payment_method_expiring": ("payment_method", "expires", "warning_window", "payg_numbers"),
    "spend_above": ("spend", "threshold", "window", "counting", "top_numbers", "top_items"),
    "runway_below": ("balance", "burn_rate", "time_to_empty", "runway_threshold"),
    "spend_anomaly": ("spend", "usually", "impact", "increase_from", "baseline", "window"),
    "usage_item": ("count", "total", "items"),
    "ledger_event": ("count", "total", "items"),
    "quota_above": ("used", "plan_limit", "overage", "period", "time_left_in_the_month"),
    "watcher_auth": ("error", "what_to_do"),
    "watcher_unhealthy": ("failing_since", "last_errors", "meanwhile"),
}

_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
)


def fields_for(kind: str | None) -> tuple[str, ...]:
    """The fields a template for `kind` may use (None: a channel's, common fields only)."""
    return COMMON + (KIND_FIELDS.get(kind, ()) if kind else ())


def field_name(label: str) -> str:
    """A fact's label as a template field: "Time left" -> time_left."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def problem(source: str, kind: str | None) -> str | None:
    """Why `source` cannot render for `kind`, or None: syntax, or a field it lacks."""
    try:
        template = _ENV.from_string(source)
        template.render(dict.fromkeys(fields_for(kind), "x"))
    except TemplateError as exc:
        valid = ", ".join(fields_for(kind))
        return f"template error: {exc.message}; fields here: {valid}"
    except Exception as exc:  # raised while rendering (`x // 0`): it would at 3 a.m. too
        return f"template error: {exc} (rendering it with sample values failed)"
    return None


def render(source: str, context: dict[str, Any]) -> str:
    """Render a template that `problem` accepted; fields a kind lacks this time are ""."""
    return _ENV.from_string(source).render(context).strip()
