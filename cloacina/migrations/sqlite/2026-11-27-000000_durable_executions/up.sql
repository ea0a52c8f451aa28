-- Durable executions: the stored plan, idempotency, cancellation and deadlines on executions;
-- claims on tasks; a heartbeat row per live worker.
ALTER TABLE workflow_executions ADD COLUMN plan TEXT;
ALTER TABLE workflow_executions ADD COLUMN idempotency_key TEXT;
ALTER TABLE workflow_executions ADD COLUMN deadline TIMESTAMP;
ALTER TABLE workflow_executions ADD COLUMN cancel_reason TEXT;
ALTER TABLE workflow_executions ADD COLUMN reason TEXT;
CREATE UNIQUE INDEX workflow_executions_idempotency ON workflow_executions (idempotency_key);
CREATE INDEX workflow_executions_deadline ON workflow_executions (deadline) WHERE deadline IS NOT NULL;

-- A Pending task with ready_at set is ready to claim; worker_id names the worker running it;
-- waiting_on counts its upstream tasks that have not ended. queue and concurrency_key are
-- reserved for queues with concurrency limits.
ALTER TABLE task_executions ADD COLUMN ready_at TIMESTAMP;
ALTER TABLE task_executions ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_executions ADD COLUMN worker_id TEXT;
ALTER TABLE task_executions ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE task_executions ADD COLUMN concurrency_key TEXT;
CREATE INDEX task_executions_ready ON task_executions (queue, ready_at) WHERE status = 'Pending' AND ready_at IS NOT NULL;
CREATE INDEX task_executions_ready_in ON task_executions (execution_id, ready_at) WHERE status = 'Pending' AND ready_at IS NOT NULL;
CREATE UNIQUE INDEX task_executions_position ON task_executions (execution_id, position);
CREATE INDEX task_executions_status ON task_executions (execution_id, status);
CREATE INDEX task_executions_worker ON task_executions (worker_id) WHERE worker_id IS NOT NULL;

CREATE TABLE workers (
    id TEXT PRIMARY KEY NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    task_ids TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL
);

-- Processes sharing a SQLite file learn of new work by polling these counters (no NOTIFY).
CREATE TABLE signals (
    id INTEGER PRIMARY KEY NOT NULL,
    ready BIGINT NOT NULL,
    done BIGINT NOT NULL,
    cancelled BIGINT NOT NULL
);
INSERT INTO signals (id, ready, done, cancelled) VALUES (1, 0, 0, 0);
