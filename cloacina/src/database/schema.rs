//! Diesel table definitions shared by every backend.

diesel::table! {
    /// One row per workflow execution.
    workflow_executions (id) {
        id -> Text,
        workflow_name -> Text,
        workflow_version -> Text,
        status -> Text,
        input_context -> Text,
        final_context -> Nullable<Text>,
        error -> Nullable<Text>,
        started_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        plan -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        deadline -> Nullable<Timestamp>,
        cancel_reason -> Nullable<Text>,
        reason -> Nullable<Text>,
        priority -> Integer,
        parent_execution_id -> Nullable<Text>,
        parent_task_id -> Nullable<Text>,
        depth -> Integer,
        hook_outcome -> Nullable<Text>,
        hooks -> Integer,
    }
}

diesel::table! {
    /// One row per task of an execution.
    task_executions (execution_id, task_id) {
        execution_id -> Text,
        task_id -> Text,
        position -> Integer,
        dependencies -> Text,
        status -> Text,
        attempt -> Integer,
        output -> Nullable<Text>,
        error -> Nullable<Text>,
        traceback -> Nullable<Text>,
        reason -> Nullable<Text>,
        started_at -> Nullable<Timestamp>,
        completed_at -> Nullable<Timestamp>,
        ready_at -> Nullable<Timestamp>,
        waiting_on -> Integer,
        worker_id -> Nullable<Text>,
        queue -> Text,
        concurrency_key -> Nullable<Text>,
        map_index -> Integer,
        map_task -> Nullable<Text>,
        map_element -> Nullable<Text>,
        map_count -> Nullable<Integer>,
        map_counts -> Nullable<Text>,
        limit_keys -> Nullable<Text>,
        priority -> Integer,
        wake_at -> Nullable<Timestamp>,
        wait_key -> Nullable<Text>,
        retries_used -> Integer,
        snoozes -> Integer,
        child_execution_id -> Nullable<Text>,
        hook -> Nullable<Text>,
    }
}

diesel::table! {
    /// One row per finished attempt of a task.
    task_attempts (execution_id, task_id, attempt) {
        execution_id -> Text,
        task_id -> Text,
        attempt -> Integer,
        status -> Text,
        error -> Nullable<Text>,
        started_at -> Timestamp,
        completed_at -> Timestamp,
    }
}

diesel::table! {
    /// One row per live worker: its heartbeat and the task ids it runs.
    workers (id) {
        id -> Text,
        hostname -> Text,
        pid -> Integer,
        task_ids -> Text,
        started_at -> Timestamp,
        heartbeat_at -> Timestamp,
        process_key -> Nullable<Text>,
    }
}

diesel::table! {
    /// SQLite only: counters other processes poll to learn of new work (PostgreSQL notifies).
    signals (id) {
        id -> Integer,
        ready -> BigInt,
        done -> BigInt,
        cancelled -> BigInt,
        schedules -> BigInt,
    }
}

diesel::table! {
    /// One row per cron schedule.
    schedules (name) {
        name -> Text,
        workflow_name -> Text,
        workflow_version -> Text,
        plan -> Text,
        cron -> Text,
        timezone -> Text,
        context -> Text,
        catchup -> Text,
        paused -> Bool,
        next_fire_at -> Nullable<Timestamp>,
        last_fire_at -> Nullable<Timestamp>,
        last_execution_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Named limits shared by every worker: a key's cap on running attempts and on starts.
    limits (name) {
        name -> Text,
        concurrency -> Nullable<Integer>,
        rate -> Nullable<Integer>,
        per_seconds -> Double,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// One row per concrete limit key in use: locked by claims, with the rate's next start.
    limit_usage (key) {
        key -> Text,
        next_start -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// The running attempts holding each limit key.
    limit_holders (execution_id, task_id, key) {
        execution_id -> Text,
        task_id -> Text,
        key -> Text,
        attempt -> Integer,
    }
}

diesel::joinable!(task_executions -> workflow_executions (execution_id));
diesel::table! {
    /// One row per event sent with `send_event`, kept 7 days.
    events (id) {
        id -> BigInt,
        key -> Text,
        payload -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    workflow_executions,
    task_executions,
    task_attempts,
    workers,
    limits,
    limit_usage,
    limit_holders,
    events
);
