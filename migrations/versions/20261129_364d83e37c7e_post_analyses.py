"""Create post_analyses: the outcome of each analysis.process_post task.

Revision ID: 364d83e37c7e
Revises: 
Create Date: 2026-11-29 00:21:23.009057

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '364d83e37c7e'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('post_analyses',
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('trust_score', sa.Float(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('task_id')
    )
    with op.batch_alter_table('post_analyses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_post_analyses_url'), ['url'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('post_analyses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_post_analyses_url'))

    op.drop_table('post_analyses')
