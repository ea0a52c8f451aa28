DROP INDEX task_executions_ready_in;
CREATE INDEX task_executions_ready_in ON task_executions (execution_id, ready_at) WHERE status = 'Pending' AND ready_at IS NOT NULL AND map_index = -1;
ALTER TABLE workflow_executions DROP COLUMN priority;
ALTER TABLE task_executions DROP COLUMN priority;
ALTER TABLE task_executions DROP COLUMN limit_keys;
DROP TABLE limit_holders;
DROP TABLE limit_usage;
DROP TABLE limits;
