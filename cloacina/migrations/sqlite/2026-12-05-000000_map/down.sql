DELETE FROM task_executions WHERE map_index >= 0;
DROP INDEX task_executions_position;
CREATE UNIQUE INDEX task_executions_position ON task_executions (execution_id, position);
ALTER TABLE task_executions DROP COLUMN map_count;
ALTER TABLE task_executions DROP COLUMN map_element;
ALTER TABLE task_executions DROP COLUMN map_task;
ALTER TABLE task_executions DROP COLUMN map_index;
