"""From decided alerts to sent messages: message text and templates, grouping, digests,
the outbox and its delivery, and the apprise notifier."""
