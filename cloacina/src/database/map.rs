//! The write steps of mapped tasks ("nodes"): expanding a node into its instances when it
//! becomes ready, counting its instances' ends, and recording its end when the last one ends.
//!
//! A node is Running while its instances run; its `waiting_on` counts its unfinished instances
//! and `map_count` how many it has. Every step runs in a transaction that holds the
//! execution's row, so a node is expanded once and its end recorded once, however many
//! workers commit its instances.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use super::connection::{Conn, RunOn, CHUNK};
use super::literal::Pending;
use super::rows::TaskRow;
use super::schema::{task_executions, workflow_executions};
use crate::context::Context;
use crate::error::Result;
use crate::model::map::{elements, instance_key, node_end, InstanceEnd};
use crate::model::{ExecutionPlan, MapCounts, TaskStatus};

/// What making a node ready did.
pub(crate) enum Expansion {
    /// Its instances are ready to claim; it ends when they have.
    Running,
    /// It ended at once, with this status: an empty list, or no list to map over.
    Ended(TaskStatus),
}

/// A node's own row (not an instance's) at `position`.
#[diesel::dsl::auto_type]
fn node_row<'a>(execution: &'a str, position: i32) -> _ {
    let node: i32 = -1;
    task_executions::table
        .filter(task_executions::execution_id.eq(execution))
        .filter(task_executions::position.eq(position))
        .filter(task_executions::map_index.eq(node))
}

/// The instance rows of the node at `position`.
#[diesel::dsl::auto_type]
fn instance_rows<'a>(execution: &'a str, position: i32) -> _ {
    task_executions::table
        .filter(task_executions::execution_id.eq(execution))
        .filter(task_executions::position.eq(position))
        .filter(task_executions::map_index.ge(0_i32))
}

impl Conn<'_> {
    /// Fails the node at `at` with `error` before it made any instance.
    fn fail_node(
        &mut self,
        execution: &str,
        at: i32,
        error: String,
        now: NaiveDateTime,
    ) -> Result<Expansion> {
        diesel::update(node_row(execution, at))
            .set((
                task_executions::status.eq(TaskStatus::Failed.as_str()),
                task_executions::error.eq(Some(error)),
                task_executions::started_at.eq(Some(now)),
                task_executions::completed_at.eq(Some(now)),
            ))
            .execute_on(self)?;
        Ok(Expansion::Ended(TaskStatus::Failed))
    }

    /// Makes the ready node at `position` run: its instances inserted, ready to claim (at most
    /// its `map_limit` of them at a time); or, resumed, its unfinished instances ready again;
    /// or ended at once when its list is empty or missing.
    pub(crate) fn expand(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        position: usize,
        now: NaiveDateTime,
    ) -> Result<Expansion> {
        let task = &plan.tasks()[position];
        let map = task.options.map.as_ref().expect("only mapped tasks expand");
        let at = position as i32;
        let count: Option<i32> = node_row(execution, at)
            .select(task_executions::map_count)
            .get_result_on(self)?;
        if count.is_some_and(|n| n >= 0) {
            return self.rearm(execution, plan, position, now);
        }
        let input = self.input_of(execution, plan, position)?;
        let list = match elements(&input, map) {
            Ok(list) => list,
            Err(error) => {
                return self.fail_node(execution, at, error, now);
            }
        };
        // The instances hold the node's limit keys, filled from its input.
        let keys: std::result::Result<Vec<String>, String> = task
            .options
            .limits
            .iter()
            .map(|t| t.render(&input))
            .collect();
        let keys = match keys {
            Ok(keys) if keys.is_empty() => None,
            Ok(mut keys) => {
                keys.sort_unstable();
                keys.dedup();
                Some(serde_json::to_string(&keys).expect("a list of strings is JSON"))
            }
            Err(error) => {
                return self.fail_node(execution, at, error, now);
            }
        };
        drop(input);
        let n = list.len();
        let released = map.limit.map_or(n, |l| l as usize);
        let mut rows = Vec::with_capacity(CHUNK.min(n));
        for (index, element) in list.into_iter().enumerate() {
            rows.push(instance_row(
                execution,
                task,
                position,
                index,
                element,
                (index < released).then_some(now),
                keys.clone(),
            ));
            if rows.len() == CHUNK {
                diesel::insert_into(task_executions::table)
                    .values(&rows)
                    .execute_on(self)?;
                rows.clear();
            }
        }
        if !rows.is_empty() {
            diesel::insert_into(task_executions::table)
                .values(&rows)
                .execute_on(self)?;
        }
        diesel::update(node_row(execution, at))
            .set((
                task_executions::status.eq(TaskStatus::Running.as_str()),
                task_executions::map_count.eq(Some(n as i32)),
                task_executions::waiting_on.eq(n as i32),
                task_executions::started_at.eq(Some(now)),
            ))
            .execute_on(self)?;
        if n == 0 {
            return Ok(Expansion::Ended(
                self.record_node_end(execution, plan, position, now)?,
            ));
        }
        Ok(Expansion::Running)
    }

    /// Runs a resumed node's unfinished instances again (its Completed ones keep their values).
    fn rearm(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        position: usize,
        now: NaiveDateTime,
    ) -> Result<Expansion> {
        let at = position as i32;
        let unfinished: i64 = instance_rows(execution, at)
            .filter(
                task_executions::status
                    .ne_all([TaskStatus::Completed.as_str(), TaskStatus::Skipped.as_str()]),
            )
            .count()
            .get_result_on(self)?;
        diesel::update(node_row(execution, at))
            .set((
                task_executions::status.eq(TaskStatus::Running.as_str()),
                task_executions::waiting_on.eq(unfinished as i32),
                task_executions::started_at.eq(Some(now)),
            ))
            .execute_on(self)?;
        if unfinished == 0 {
            return Ok(Expansion::Ended(
                self.record_node_end(execution, plan, position, now)?,
            ));
        }
        let map = plan.tasks()[position].options.map.as_ref().expect("mapped");
        self.release(
            execution,
            position,
            map.limit.map_or(unfinished, i64::from),
            now,
        )?;
        Ok(Expansion::Running)
    }

    /// Makes the `count` lowest-index instances of the node at `position` that wait for their
    /// turn (a node with a `map_limit`) ready to claim.
    fn release(
        &mut self,
        execution: &str,
        position: usize,
        count: i64,
        now: NaiveDateTime,
    ) -> Result<()> {
        let at = position as i32;
        let next: Vec<i32> = instance_rows(execution, at)
            .filter(task_executions::status.eq(Pending))
            .filter(task_executions::ready_at.is_null())
            .order(task_executions::map_index)
            .limit(count)
            .select(task_executions::map_index)
            .load_on(self)?;
        for chunk in next.chunks(CHUNK) {
            diesel::update(
                instance_rows(execution, at).filter(task_executions::map_index.eq_any(chunk)),
            )
            .set(task_executions::ready_at.eq(Some(now)))
            .execute_on(self)?;
        }
        Ok(())
    }

    /// Counts ended instances (`ended`: node position to how many) on their nodes, making the
    /// next instances of limited nodes ready; the nodes whose last instance ended, with the
    /// status each ended in.
    pub(crate) fn count_instance_ends(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        ended: &BTreeMap<usize, i32>,
        now: NaiveDateTime,
    ) -> Result<Vec<(usize, TaskStatus)>> {
        let mut nodes_ended = Vec::new();
        for (&position, &count) in ended {
            let map = plan.tasks()[position].options.map.as_ref();
            if map.is_some_and(|m| m.limit.is_some()) {
                self.release(execution, position, i64::from(count), now)?;
            }
            let left: Option<i32> = diesel::update(
                node_row(execution, position as i32)
                    .filter(task_executions::status.eq(TaskStatus::Running.as_str())),
            )
            .set(task_executions::waiting_on.eq(task_executions::waiting_on - count))
            .returning(task_executions::waiting_on)
            .get_result_on(self)
            .optional()?;
            if left.is_some_and(|left| left <= 0) {
                let status = self.record_node_end(execution, plan, position, now)?;
                nodes_ended.push((position, status));
            }
        }
        Ok(nodes_ended)
    }

    /// Records the end of the node at `position` from its instances' ends: its values in index
    /// order, and the failed indices if any failed.
    fn record_node_end(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        position: usize,
        now: NaiveDateTime,
    ) -> Result<TaskStatus> {
        let task = &plan.tasks()[position];
        let map = task.options.map.as_ref().expect("mapped");
        let rows: Vec<(i32, String, Option<String>, Option<String>)> =
            instance_rows(execution, position as i32)
                .order(task_executions::map_index)
                .select((
                    task_executions::map_index,
                    task_executions::status,
                    task_executions::output,
                    task_executions::error,
                ))
                .load_on(self)?;
        let ends: Vec<InstanceEnd<'_>> = rows
            .iter()
            .map(|(index, status, output, error)| InstanceEnd {
                index: (*index).max(0) as u32,
                status: TaskStatus::parse(status).unwrap_or(TaskStatus::Failed),
                output: output.as_deref(),
                error: error.as_deref(),
            })
            .collect();
        let end = node_end(&task.id, map, &ends);
        let mut counts = MapCounts::default();
        for instance in &ends {
            counts.add(instance.status, 1);
        }
        diesel::update(node_row(execution, position as i32))
            .set((
                task_executions::map_counts.eq(Some(counts.to_text())),
                task_executions::status.eq(end.status.as_str()),
                task_executions::output.eq(Some(end.output)),
                task_executions::error.eq(end.error),
                task_executions::completed_at.eq(Some(now)),
                task_executions::waiting_on.eq(0),
            ))
            .execute_on(self)?;
        Ok(end.status)
    }

    /// The input context of the task at `position` as JSON: the execution's input merged with
    /// the stored outputs of its ancestors, later positions winning.
    pub(crate) fn input_of(
        &mut self,
        execution: &str,
        plan: &ExecutionPlan,
        position: usize,
    ) -> Result<Value> {
        let input: String = workflow_executions::table
            .find(execution)
            .select(workflow_executions::input_context)
            .get_result_on(self)?;
        let mut context = Context::from_json(&input)?;
        let ancestors: Vec<i32> = plan
            .ancestors_of(position)
            .into_iter()
            .map(|p| p as i32)
            .collect();
        let mut outputs: Vec<(i32, String)> = Vec::new();
        for chunk in ancestors.chunks(CHUNK) {
            let rows: Vec<(i32, Option<String>)> = task_executions::table
                .filter(task_executions::execution_id.eq(execution))
                .filter(task_executions::position.eq_any(chunk))
                .filter(task_executions::map_index.eq(-1))
                .filter(handed_on())
                .select((task_executions::position, task_executions::output))
                .load_on(self)?;
            outputs.extend(rows.into_iter().filter_map(|(p, o)| Some((p, o?))));
        }
        outputs.sort_by_key(|(p, _)| *p);
        for (_, output) in outputs {
            context.merge(&Context::from_json(&output)?);
        }
        Ok(Value::Object(context.into_map()))
    }
}

/// The rows whose output dependents read: Completed tasks, and nodes that ended with values
/// (a Failed node hands on its list, with None at its failed indices, to `all_done` dependents).
#[diesel::dsl::auto_type]
pub(crate) fn handed_on() -> _ {
    let completed: &'static str = TaskStatus::Completed.as_str();
    task_executions::status
        .eq(completed)
        .or(task_executions::map_count.is_not_null())
}

/// The row of instance `index` of `task`, holding its element and its node's limit keys,
/// ready from `ready_at` (None: released later).
fn instance_row(
    execution: &str,
    task: &crate::model::PlannedTask,
    position: usize,
    index: usize,
    element: Value,
    ready_at: Option<NaiveDateTime>,
    limit_keys: Option<String>,
) -> TaskRow {
    TaskRow {
        ready_at,
        limit_keys,
        map_index: index as i32,
        map_task: Some(task.id.clone()),
        map_element: Some(element.to_string()),
        ..TaskRow::new(execution, instance_key(&task.id, index as u32), position)
    }
}
