"""Jobs: the fingerprint of the request an idempotency key was first sent with.

A key sent again with another request is refused (409) instead of answering with the first
request's ids. Rows stored before this revision have none: a key of theirs is taken as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("idempotency_fingerprint")
