-- Flow control: named limits shared by every worker on the database.
-- limits: a key's cap on attempts running at once and on starts per window (name ending in '*':
-- the default of every key with that prefix).
CREATE TABLE limits (
    name TEXT PRIMARY KEY NOT NULL,
    concurrency INTEGER,
    rate INTEGER,
    per_seconds DOUBLE PRECISION NOT NULL DEFAULT 1,
    updated_at TIMESTAMP NOT NULL
);
-- One row per concrete key in use: the row claims lock (in key order) before they count its
-- holders, and the earliest instant its rate lets the next attempt start.
CREATE TABLE limit_usage (
    key TEXT PRIMARY KEY NOT NULL,
    next_start TIMESTAMP
);
-- The running attempts holding each key: taken with the claim, given back with the attempt's
-- end, its cancellation or its dead worker's give-back.
CREATE TABLE limit_holders (
    execution_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (execution_id, task_id, key)
);
CREATE INDEX limit_holders_key ON limit_holders (key);
-- The keys a task holds, filled from its input when it becomes ready (a JSON list), and the
-- priority claims order ready tasks by (the execution's plus the task's).
ALTER TABLE task_executions ADD COLUMN limit_keys TEXT;
ALTER TABLE task_executions ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_executions ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- A commit looks up its execution's ready tasks highest priority first, then oldest.
DROP INDEX task_executions_ready_in;
CREATE INDEX task_executions_ready_in ON task_executions (execution_id, priority DESC, ready_at) WHERE status = 'Pending' AND ready_at IS NOT NULL AND map_index = -1;
