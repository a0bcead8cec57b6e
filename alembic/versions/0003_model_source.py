"""Record what a deployment's model URI resolved to, and where each config key came from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:50:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_source', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('config_sources', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_column('config_sources')
        batch_op.drop_column('model_source')
