"""analytics-service: exactly-once campaign aggregates from `ad-events`, queries, dashboard.

- `consumer` reads `ad-events` in batches and hands each batch to a `store`, which
  writes the aggregates, the processed event ids and the consumer offsets in one
  database transaction (PostgreSQL: one bulk statement through asyncpg; SQLite: the
  portable SQLAlchemy path used by `adplatform dev`).
- `queries` and `routes` serve `/analytics/...`; `dashboard` serves the built page.
- `retention` rolls old minute buckets into hourly ones and prunes processed ids.
"""
