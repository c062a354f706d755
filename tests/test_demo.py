"""`dialwatch demo` shows a newcomer firing and resolved alerts, then ends."""

from __future__ import annotations

import io
from datetime import timedelta

from dialwatch.demo import run_demo


async def test_demo_fires_and_resolves_and_ends() -> None:
    """The scripted wallet fires two thresholds and a cancellation, then all resolve."""
    out = io.StringIO()
    await run_demo(out, scene_seconds=0.4, interval=timedelta(seconds=0.1))
    text = out.getvalue()

    titles = [line.strip() for line in text.splitlines() if line.startswith("  [")]
    assert titles[0] == "[WARNING] dial / wallet-low: balance $47.00 is below $50.00"
    assert titles[1].startswith("[WARNING] dial / cancelling: subscription cancels at period end")
    assert titles[1].endswith("(20 days left)")
    assert "[CRITICAL] dial / wallet-critical: balance $18.50 is below $20.00" in titles
    resolved = sorted(t for t in titles if t.startswith("[RESOLVED]"))
    assert resolved[1:] == [
        "[RESOLVED] dial / wallet-critical: balance $120.50 is back above $20.00",
        "[RESOLVED] dial / wallet-low: balance $120.50 is back above $50.00",
    ]
    assert resolved[0].startswith("[RESOLVED] dial / cancelling: subscription renews on")
    assert len(titles) == 6  # no repeats, no flapping at the $20 wobble
    assert text.rstrip().endswith("and run `dialwatch validate` then `dialwatch run`.")
