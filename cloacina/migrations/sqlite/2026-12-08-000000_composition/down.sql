DROP INDEX task_executions_hooks;
ALTER TABLE workflow_executions DROP COLUMN hooks;
ALTER TABLE workflow_executions DROP COLUMN hook_outcome;
ALTER TABLE task_executions DROP COLUMN hook;
ALTER TABLE task_executions DROP COLUMN child_execution_id;
DROP INDEX workflow_executions_parent;
ALTER TABLE workflow_executions DROP COLUMN depth;
ALTER TABLE workflow_executions DROP COLUMN parent_task_id;
ALTER TABLE workflow_executions DROP COLUMN parent_execution_id;
