"""campaign-service: advertisers, campaigns, creatives, budgets and targeting.

Every campaign or creative write also writes an outbox row in the same transaction;
the relay (`outbox.py`) publishes those rows to `campaign-updates`, and
`/internal/snapshot` gives the bidder all active campaigns plus the outbox position.
"""
