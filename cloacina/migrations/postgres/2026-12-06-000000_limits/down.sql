ALTER TABLE workflow_executions DROP COLUMN priority;
ALTER TABLE task_executions DROP COLUMN priority;
ALTER TABLE task_executions DROP COLUMN limit_keys;
DROP TABLE limit_holders;
DROP TABLE limit_usage;
DROP TABLE limits;
