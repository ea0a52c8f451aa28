-- Cron schedules, one row per name. The stored plan lets any worker submit the workflow.
-- next_fire_at is the oldest fire not made yet (NULL once the expression fires no more): a
-- worker makes a fire in the transaction that moves it on, so each fire is made once.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY NOT NULL,
    workflow_name TEXT NOT NULL,
    workflow_version TEXT NOT NULL,
    plan TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    context TEXT NOT NULL,
    catchup TEXT NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    next_fire_at TIMESTAMP,
    last_fire_at TIMESTAMP,
    last_execution_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
