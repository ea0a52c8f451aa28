DROP TABLE events;
DROP INDEX task_executions_wait_key;
DROP INDEX task_executions_waking;
ALTER TABLE task_executions DROP COLUMN snoozes;
ALTER TABLE task_executions DROP COLUMN retries_used;
ALTER TABLE task_executions DROP COLUMN wait_key;
ALTER TABLE task_executions DROP COLUMN wake_at;
