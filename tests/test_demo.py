"""`dialwatch demo` shows a newcomer firing, grouped and resolved alerts, then ends."""

from __future__ import annotations

import io
import re
from datetime import timedelta

from dialwatch.demo import run_demo


async def test_demo_fires_groups_and_resolves_then_ends() -> None:
    """Thresholds, a cancellation and a spend spike fire; a top-up resolves them once.
    Beside Dial, the SMS credits at Mifumo run low and a bundle resolves that."""
    out = io.StringIO()
    await run_demo(out, scene_seconds=0.4, interval=timedelta(seconds=0.1))
    text = out.getvalue()

    # Each alert's title, whether alone or as a numbered part of a grouped message.
    titles = [
        match[1]
        for line in text.splitlines()
        if (match := re.match(r"^  (?:\d+\. )?(\[.*)$", line))
        and not re.search(r": \d+ notifications \(", match[1])
    ]
    sms = [title for title in titles if " sms / " in title]
    titles = [title for title in titles if " sms / " not in title]
    assert sms == [
        "[WARNING] sms / sms-credits-low: SMS credit balance 450 credits is below 500 credits",
        "[RESOLVED] sms / sms-credits-low: SMS credit balance 1,300 credits is back above "
        "500 credits",
        "[INFO] sms / sms-bundles: new purchase of $50.00 (Starter Package - 1000 SMS)",
    ]
    assert titles[0] == "[WARNING] dial / wallet-low: wallet balance $47.00 is below $50.00"
    assert titles[1].startswith("[WARNING] dial / cancelling: subscription cancels at period end")
    assert titles[1].endswith("(20 days left)")
    assert sorted(titles[2:5]) == [
        "[CRITICAL] dial / wallet-critical: wallet balance $18.50 is below $20.00",
        "[WARNING] dial / expensive-call: 4 spend item(s) at or above $2.00 (total $14.00)",
        "[WARNING] dial / hourly-spend: spend $25.70 in the last 1h is above $25.00",
    ]
    later = sorted(titles[5:])
    assert len(later) == 4  # no repeats, no flapping at the $20 wobble
    assert later[0] == "[INFO] dial / top-ups: new credit of $100.00 (card), invoice in_demo9"
    assert later[1].startswith("[RESOLVED] dial / cancelling: subscription renews on")
    assert later[2:] == [
        "[RESOLVED] dial / wallet-critical: wallet balance $120.50 is back above $20.00",
        "[RESOLVED] dial / wallet-low: wallet balance $120.50 is back above $50.00",
    ]
    assert text.rstrip().endswith("`dialwatch simulate` lets you try it without keys.")
