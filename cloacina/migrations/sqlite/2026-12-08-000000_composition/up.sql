-- Composition. Sub-workflows: a child execution names the parent execution and the node (task row key) that
-- submitted it, and its depth below the top-level execution; the node's row names its child.
ALTER TABLE workflow_executions ADD COLUMN parent_execution_id TEXT;
ALTER TABLE workflow_executions ADD COLUMN parent_task_id TEXT;
ALTER TABLE workflow_executions ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX workflow_executions_parent ON workflow_executions (parent_execution_id) WHERE parent_execution_id IS NOT NULL;
ALTER TABLE task_executions ADD COLUMN child_execution_id TEXT;
-- Hooks: a task that runs once the execution's outcome is decided ('success' or 'failure'),
-- and that outcome, kept while the hooks run (the execution stays Running until they end).
-- hooks counts an execution's hooks, so an execution without any never looks for them.
ALTER TABLE task_executions ADD COLUMN hook TEXT;
ALTER TABLE workflow_executions ADD COLUMN hook_outcome TEXT;
ALTER TABLE workflow_executions ADD COLUMN hooks INTEGER NOT NULL DEFAULT 0;
CREATE INDEX task_executions_hooks ON task_executions (execution_id) WHERE hook IS NOT NULL;
