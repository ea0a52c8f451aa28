-- Durable waits: a task may wait (status 'Waiting') until a time, for an event, or both.
-- wake_at: when a waiting task becomes Pending again (NULL: only an event wakes it); kept after
-- it wakes, so its next attempt knows the time it waited for. wait_key: the event it waits for.
-- retries_used and snoozes count what its attempts used: attempt numbers also count snoozes
-- and claims given back.
ALTER TABLE task_executions ADD COLUMN wake_at TIMESTAMP;
ALTER TABLE task_executions ADD COLUMN wait_key TEXT;
ALTER TABLE task_executions ADD COLUMN retries_used INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_executions ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX task_executions_waking ON task_executions (wake_at) WHERE status = 'Waiting';
CREATE INDEX task_executions_wait_key ON task_executions (wait_key) WHERE status = 'Waiting';
-- Events sent with send_event, kept 7 days: a wait that starts after an event was sent still
-- sees it, when the event came after its execution was submitted.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX events_key ON events (key, created_at);
CREATE INDEX events_expiry ON events (expires_at);
