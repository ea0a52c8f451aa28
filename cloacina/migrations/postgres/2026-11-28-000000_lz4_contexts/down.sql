DO $$
BEGIN
    EXECUTE 'ALTER TABLE task_executions ALTER COLUMN output SET COMPRESSION default';
    EXECUTE 'ALTER TABLE workflow_executions ALTER COLUMN input_context SET COMPRESSION default, ALTER COLUMN final_context SET COMPRESSION default';
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;
