"""analytics-service: per-minute and per-hour campaign aggregates, processed event ids,
consumer offsets.

Revision ID: 0002_analytics
Revises: 0001_campaigns
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_analytics"
down_revision: str | None = "0001_campaigns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counters() -> list[sa.Column[int]]:
    return [
        sa.Column("advertiser_id", sa.BigInteger(), nullable=False),
        sa.Column("bids", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("wins", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("impressions", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("clicks", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("bid_micros", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("spend_micros", sa.BigInteger(), nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    for resolution in ("minute", "hour"):
        table = f"analytics_campaign_{resolution}"
        op.create_table(
            table,
            sa.Column("campaign_id", sa.BigInteger(), nullable=False),
            sa.Column("bucket", sa.BigInteger(), nullable=False),
            *_counters(),
            sa.PrimaryKeyConstraint("campaign_id", "bucket", name=f"pk_{table}"),
        )
        op.create_index(f"ix_{table}_bucket", table, ["bucket"])
        op.create_index(f"ix_{table}_advertiser", table, ["advertiser_id", "bucket"])
    if op.get_bind().dialect.name == "postgresql":
        # Room on each page for the counters' new row versions: the consumer's upserts
        # then stay heap-only (HOT) and touch none of the three indexes.
        op.execute("ALTER TABLE analytics_campaign_minute SET (fillfactor = 70)")

    op.create_table(
        "analytics_processed_events",
        sa.Column("event_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_analytics_processed_events"),
    )
    op.create_index(
        "ix_analytics_processed_events_bucket",
        "analytics_processed_events",
        ["bucket"],
        postgresql_using="brin",
    )

    op.create_table(
        "analytics_consumer_offsets",
        sa.Column("group_id", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "group_id", "topic", "partition", name="pk_analytics_consumer_offsets"
        ),
    )


def downgrade() -> None:
    op.drop_table("analytics_consumer_offsets")
    op.drop_index("ix_analytics_processed_events_bucket", "analytics_processed_events")
    op.drop_table("analytics_processed_events")
    for resolution in ("hour", "minute"):
        table = f"analytics_campaign_{resolution}"
        op.drop_index(f"ix_{table}_advertiser", table)
        op.drop_index(f"ix_{table}_bucket", table)
        op.drop_table(table)
