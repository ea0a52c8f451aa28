-- Lists filtered by status, newest first (the dashboard's and the CLI's), read the index in order.
CREATE INDEX workflow_executions_status_started ON workflow_executions (status, started_at);
