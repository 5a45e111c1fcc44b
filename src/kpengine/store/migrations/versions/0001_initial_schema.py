"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "annotators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("synset", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("synset"),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=True),
        sa.Column("mesh_path", sa.String(length=1024), nullable=True),
        sa.Column("pcd_path", sa.String(length=1024), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("orientation", sa.JSON(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("symmetries_extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["category_id"], ["categories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("category_id", "model_id", name="uq_models_category_model"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_category_id"), ["category_id"], unique=False)

    op.create_table(
        "semantic_labels",
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("semantic_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["category_id"], ["categories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("category_id", "semantic_id"),
    )
    op.create_table(
        "aggregated_keypoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("semantic_id", sa.Integer(), nullable=False),
        sa.Column("x", sa.Double(), nullable=True),
        sa.Column("y", sa.Double(), nullable=True),
        sa.Column("z", sa.Double(), nullable=True),
        sa.Column("rgb", sa.JSON(), nullable=True),
        sa.Column("point_index", sa.Integer(), nullable=True),
        sa.Column("face_index", sa.Integer(), nullable=True),
        sa.Column("face_uv", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "ordinal", name="uq_agg_model_ordinal"),
    )
    with op.batch_alter_table("aggregated_keypoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_aggregated_keypoints_model_id"), ["model_id"], unique=False)

    op.create_table(
        "annotation_revisions",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotators.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "annotator_id"),
    )
    op.create_table(
        "raw_annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("kp_index", sa.Integer(), nullable=False),
        sa.Column("x", sa.Double(), nullable=False),
        sa.Column("y", sa.Double(), nullable=False),
        sa.Column("z", sa.Double(), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=True),
        sa.Column("u", sa.Double(), nullable=True),
        sa.Column("v", sa.Double(), nullable=True),
        sa.Column("w", sa.Double(), nullable=True),
        sa.Column("point_index", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["annotator_id"], ["annotators.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "annotator_id", "kp_index", name="uq_raw_model_annotator_index"),
    )
    with op.batch_alter_table("raw_annotations", schema=None) as batch_op:
        batch_op.create_index("ix_raw_annotator_model", ["annotator_id", "model_id"], unique=False)

    op.create_table(
        "symmetry_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("kp_indexes", sa.JSON(), nullable=False),
        sa.Column("is_circle", sa.Boolean(), nullable=False),
        sa.Column("circle", sa.JSON(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "kind", "ordinal", name="uq_sym_model_kind_ordinal"),
    )
    with op.batch_alter_table("symmetry_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_symmetry_groups_model_id"), ["model_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("symmetry_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_symmetry_groups_model_id"))

    op.drop_table("symmetry_groups")
    with op.batch_alter_table("raw_annotations", schema=None) as batch_op:
        batch_op.drop_index("ix_raw_annotator_model")

    op.drop_table("raw_annotations")
    op.drop_table("annotation_revisions")
    with op.batch_alter_table("aggregated_keypoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aggregated_keypoints_model_id"))

    op.drop_table("aggregated_keypoints")
    op.drop_table("semantic_labels")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_category_id"))

    op.drop_table("models")
    op.drop_table("categories")
    op.drop_table("annotators")
