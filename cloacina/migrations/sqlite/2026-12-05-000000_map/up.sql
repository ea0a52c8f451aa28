-- Dynamic map: a mapped task (a node) runs once per element of a list, each run an instance
-- row at the node's position. map_index is the instance's index (-1 for a task or a node);
-- instance rows are keyed "node[index]" and name their node in map_task; map_element holds
-- the element as JSON; map_count is set on a node once it is expanded (its number of instances),
-- map_counts once it has ended (its instances per status, so reads need not count them).
ALTER TABLE task_executions ADD COLUMN map_index INTEGER NOT NULL DEFAULT -1;
ALTER TABLE task_executions ADD COLUMN map_task TEXT;
ALTER TABLE task_executions ADD COLUMN map_element TEXT;
ALTER TABLE task_executions ADD COLUMN map_count INTEGER;
ALTER TABLE task_executions ADD COLUMN map_counts TEXT;
DROP INDEX task_executions_position;
CREATE UNIQUE INDEX task_executions_position ON task_executions (execution_id, position, map_index);
-- Ready tasks and ready instances of an execution, apart: a commit looks up the tasks it may
-- start without reading past a large map's ready instances.
DROP INDEX task_executions_ready_in;
CREATE INDEX task_executions_ready_in ON task_executions (execution_id, ready_at) WHERE status = 'Pending' AND ready_at IS NOT NULL AND map_index = -1;
CREATE INDEX task_executions_instances_ready ON task_executions (execution_id, ready_at) WHERE status = 'Pending' AND ready_at IS NOT NULL AND map_index >= 0;
