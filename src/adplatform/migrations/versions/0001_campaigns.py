"""campaign-service tables: advertisers, api_keys, campaigns, creatives, campaign_outbox.

Revision ID: 0001_campaigns
Revises:
Create Date: 2026-12-01

Hand-written so it runs the same on PostgreSQL and SQLite (`jsonb` and `bigint` ids
on PostgreSQL only). `api_keys` belongs to `core.auth`, but its foreign key to
`advertisers` is declared here, where the advertisers table is.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_campaigns"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OUTBOX_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "advertisers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("domain", sa.String(253), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_advertisers"),
        sa.UniqueConstraint("name", name="uq_advertisers_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("advertiser_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("display_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.ForeignKeyConstraint(
            ["advertiser_id"],
            ["advertisers.id"],
            name="fk_api_keys_advertiser_id_advertisers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_api_keys_advertiser_id", "api_keys", ["advertiser_id"])

    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("advertiser_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total_budget_micros", sa.BigInteger(), nullable=False),
        sa.Column("daily_budget_micros", sa.BigInteger(), nullable=False),
        sa.Column("max_bid_cpm_micros", sa.BigInteger(), nullable=False),
        sa.Column("pacing", sa.String(8), nullable=False),
        sa.Column("flight_start", TIMESTAMP, nullable=True),
        sa.Column("flight_end", TIMESTAMP, nullable=True),
        sa.Column("frequency_cap_impressions", sa.Integer(), nullable=True),
        sa.Column("frequency_cap_window_seconds", sa.Integer(), nullable=True),
        sa.Column("targeting", JSON_DOCUMENT, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.ForeignKeyConstraint(
            ["advertiser_id"],
            ["advertisers.id"],
            name="fk_campaigns_advertiser_id_advertisers",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("advertiser_id", "name", name="uq_campaigns_advertiser_id_name"),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'paused', 'completed', 'archived')",
            name="ck_campaigns_status",
        ),
        sa.CheckConstraint("pacing IN ('even', 'asap')", name="ck_campaigns_pacing"),
        sa.CheckConstraint("total_budget_micros > 0", name="ck_campaigns_total_budget_positive"),
        sa.CheckConstraint("daily_budget_micros > 0", name="ck_campaigns_daily_budget_positive"),
        sa.CheckConstraint(
            "daily_budget_micros <= total_budget_micros", name="ck_campaigns_daily_within_total"
        ),
        sa.CheckConstraint("max_bid_cpm_micros > 0", name="ck_campaigns_max_bid_positive"),
    )
    op.create_index("ix_campaigns_advertiser_id", "campaigns", ["advertiser_id"])
    op.create_index("ix_campaigns_status_id", "campaigns", ["status", "id"])

    op.create_table(
        "creatives",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("advertiser_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("markup", sa.Text(), nullable=True),
        sa.Column("image_url", sa.String(2048), nullable=True),
        sa.Column("click_url", sa.String(2048), nullable=False),
        sa.Column("adomain", sa.String(253), nullable=False),
        sa.Column("iab_category", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_creatives"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_creatives_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["advertiser_id"],
            ["advertisers.id"],
            name="fk_creatives_advertiser_id_advertisers",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'archived')", name="ck_creatives_status"
        ),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_creatives_size_positive"),
    )
    op.create_index("ix_creatives_campaign_id", "creatives", ["campaign_id"])
    op.create_index("ix_creatives_advertiser_id", "creatives", ["advertiser_id"])

    op.create_table(
        "campaign_outbox",
        sa.Column("id", OUTBOX_ID, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("campaign_version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_outbox"),
    )
    op.create_index(
        "ix_campaign_outbox_pending",
        "campaign_outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_campaign_outbox_pending", table_name="campaign_outbox")
    op.drop_table("campaign_outbox")
    op.drop_index("ix_creatives_advertiser_id", table_name="creatives")
    op.drop_index("ix_creatives_campaign_id", table_name="creatives")
    op.drop_table("creatives")
    op.drop_index("ix_campaigns_status_id", table_name="campaigns")
    op.drop_index("ix_campaigns_advertiser_id", table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_index("ix_api_keys_advertiser_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("advertisers")
