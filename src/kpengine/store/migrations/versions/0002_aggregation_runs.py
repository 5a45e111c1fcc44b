"""aggregation runs and candidates (t-SNE coordinates, clusters) for human verification

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["category_id"], ["categories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_aggregation_runs_category_id", "aggregation_runs", ["category_id"])
    op.create_table(
        "aggregation_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("point_index", sa.Integer(), nullable=False),
        sa.Column("error", sa.Double(), nullable=False),
        sa.Column("tsne_x", sa.Double(), nullable=False),
        sa.Column("tsne_y", sa.Double(), nullable=False),
        sa.Column("cluster", sa.Integer(), nullable=False),
        sa.Column("keypoint_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["aggregation_runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["keypoint_id"], ["aggregated_keypoints.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_aggregation_candidates_run_id", "aggregation_candidates", ["run_id"])
    op.create_index("ix_aggregation_candidates_keypoint_id", "aggregation_candidates", ["keypoint_id"])


def downgrade() -> None:
    op.drop_table("aggregation_candidates")
    op.drop_table("aggregation_runs")
