CREATE TABLE workflow_executions (
    id TEXT PRIMARY KEY NOT NULL,
    workflow_name TEXT NOT NULL,
    workflow_version TEXT NOT NULL,
    status TEXT NOT NULL,
    input_context TEXT NOT NULL,
    final_context TEXT,
    error TEXT,
    started_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP
);
CREATE INDEX workflow_executions_started ON workflow_executions (started_at);
CREATE INDEX workflow_executions_name_started ON workflow_executions (workflow_name, started_at);

CREATE TABLE task_executions (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    task_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    dependencies TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    output TEXT,
    error TEXT,
    traceback TEXT,
    reason TEXT,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    PRIMARY KEY (execution_id, task_id)
);

CREATE TABLE task_attempts (
    execution_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    started_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (execution_id, task_id, attempt),
    FOREIGN KEY (execution_id, task_id) REFERENCES task_executions (execution_id, task_id) ON DELETE CASCADE
);
