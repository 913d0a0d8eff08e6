"""Notifications on job events (seed 002), webhooks and emails: planned into the store's outbox, signed (webhooks),
delivered, retried, guarded.

- :mod:`.planner`: which notifications a state change triggers, their URL and body (template variables);
- :mod:`.signing`: Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``);
- :mod:`.guard`: the SSRF guard: a target is resolved and checked before each attempt;
- :mod:`.dispatcher`: the loop that sends what the outbox holds, with retries on a schedule;
- :mod:`.mailer`: email notifications: the message, and one SMTP session per attempt;
- :mod:`.attempt`: the outcome of one attempt.
"""
