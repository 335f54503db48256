"""Create analyses: one row per analysis, each stage's part written as it ends.

The partial unique index keeps one analysis under way per post.

Revision ID: 2fa872ea31dc
Revises: 364d83e37c7e
Create Date: 2026-12-02 01:42:51.740761

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '2fa872ea31dc'
down_revision: Union[str, Sequence[str], None] = '364d83e37c7e'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('analyses',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('shortcode', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('stages', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('failed_stage', sa.String(length=64), nullable=True),
    sa.Column('trust_score', sa.Float(), nullable=True),
    sa.Column('submitted_by', sa.String(length=255), nullable=True),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('callback', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_analyses_shortcode'), ['shortcode'], unique=False)
        batch_op.create_index('ix_analyses_status_created_at', ['status', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_analyses_url_created_at', ['url', 'created_at', 'id'], unique=False)
        batch_op.create_index('ux_analyses_active_url', ['url'], unique=True, sqlite_where=sa.text("status IN ('pending', 'running')"), postgresql_where=sa.text("status IN ('pending', 'running')"))



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('analyses', schema=None) as batch_op:
        batch_op.drop_index('ux_analyses_active_url', sqlite_where=sa.text("status IN ('pending', 'running')"), postgresql_where=sa.text("status IN ('pending', 'running')"))
        batch_op.drop_index('ix_analyses_url_created_at')
        batch_op.drop_index('ix_analyses_status_created_at')
        batch_op.drop_index(batch_op.f('ix_analyses_shortcode'))

    op.drop_table('analyses')
