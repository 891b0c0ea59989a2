"""Storyboard service schema: API tokens, projects, characters, shots, storyboards.

Revision ID: 0002_service
Revises: 0001_pgqueue
Create Date: 2026-11-28
"""

from __future__ import annotations

from migrations._sql import run_script

revision = "0002_service"
down_revision = "0001_pgqueue"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA storyboard;

-- Only a SHA-256 of each token is stored: a leaked table grants nothing.
CREATE TABLE storyboard.api_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name   text NOT NULL CONSTRAINT api_tokens_user_name_length
                    CHECK (length(user_name) BETWEEN 1 AND 100),
    token_hash  text NOT NULL UNIQUE,
    tier        text NOT NULL DEFAULT 'free'
                    CONSTRAINT api_tokens_tier CHECK (tier IN ('free', 'pro')),
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- `status` is the step status of storyboard generation; `generation` numbers the generate
-- calls that enqueued work, and is part of every job's idempotency key.
CREATE TABLE storyboard.projects (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner         text NOT NULL,
    title         text NOT NULL
                      CONSTRAINT projects_title_length CHECK (length(title) BETWEEN 1 AND 200),
    style         text NOT NULL DEFAULT '',
    aspect_ratio  text NOT NULL CONSTRAINT projects_aspect_ratio
                      CHECK (aspect_ratio IN ('16:9', '9:16', '1:1')),
    status        text NOT NULL DEFAULT 'pending' CONSTRAINT projects_status
                      CHECK (status IN ('pending', 'generating', 'completed', 'partial', 'failed')),
    generation    integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_owner_idx ON storyboard.projects (owner, created_at DESC);

CREATE TABLE storyboard.characters (
    project_id           uuid NOT NULL REFERENCES storyboard.projects ON DELETE CASCADE,
    name                 text NOT NULL,
    position             integer NOT NULL,
    description          text NOT NULL DEFAULT '',
    reference_image_url  text,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE storyboard.shots (
    project_id        uuid NOT NULL REFERENCES storyboard.projects ON DELETE CASCADE,
    shot_number       integer NOT NULL CONSTRAINT shots_shot_number_range
                          CHECK (shot_number BETWEEN 1 AND 1000),
    description       text NOT NULL,
    duration_seconds  double precision NOT NULL CONSTRAINT shots_duration_range
                          CHECK (duration_seconds > 0 AND duration_seconds <= 60),
    characters        text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (project_id, shot_number)
);

-- One storyboard per shot. `job_id` names the job that owns the storyboard now: a job finding
-- another id there has been superseded and writes nothing. No foreign key to pgqueue.jobs:
-- retention deletes finished jobs while their storyboards stay.
CREATE TABLE storyboard.storyboards (
    project_id   uuid NOT NULL,
    shot_number  integer NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CONSTRAINT storyboards_status
                     CHECK (status IN ('pending', 'generating', 'success', 'failed')),
    image_url    text,
    error        text,
    attempts     integer NOT NULL DEFAULT 0,
    job_id       bigint,
    generation   integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, shot_number),
    FOREIGN KEY (project_id, shot_number) REFERENCES storyboard.shots ON DELETE CASCADE,
    CONSTRAINT storyboards_generating_has_job CHECK (status <> 'generating' OR job_id IS NOT NULL),
    CONSTRAINT storyboards_success_has_image CHECK (status <> 'success' OR image_url IS NOT NULL)
);
CREATE INDEX storyboards_job_idx ON storyboard.storyboards (job_id) WHERE job_id IS NOT NULL;
"""

DOWNGRADE = r"""
DROP TABLE storyboard.storyboards;
DROP TABLE storyboard.shots;
DROP TABLE storyboard.characters;
DROP TABLE storyboard.projects;
DROP TABLE storyboard.api_tokens;
DROP SCHEMA storyboard;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
