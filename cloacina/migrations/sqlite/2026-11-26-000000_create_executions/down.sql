DROP TABLE task_attempts;
DROP TABLE task_executions;
DROP TABLE workflow_executions;
