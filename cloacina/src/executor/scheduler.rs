//! Runs the tasks one worker claimed of one execution: builds each task's input, runs it, and
//! commits what ended in batches, each commit claiming the dependents it unblocks so they
//! start at once. A scheduler lives while its worker holds claims of the execution.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::attempt::{conclude, run_task, AttemptEnd, TaskRunner, GIVEN_BACK};
use super::lineage::{FinalContext, Lineage, INPUT};
use super::worker::{Backoff, CancelSender, WorkerHandle};
use crate::context::{Context, Output};
use crate::database::claims::{Claim, Committed, EndedTask, SharedContext};
use crate::database::signals::Signal;
use crate::error::{Error, Result};
use crate::events::{report, AttemptRef, Event};
use crate::model::{now, ExecutionPlan};
use crate::task::{EngineFailure, TaskError};

/// Most tasks a scheduler holds claimed ahead of free slots (see [`Pace`]).
const MOST_AHEAD: usize = 256;
/// Failed commits of one batch after which, if heartbeats still write and the error is not one
/// known to clear by itself, the database is taken to refuse the batch rather than to be unavailable.
const REFUSED_AFTER: u32 = 5;
/// Failed commits of one batch after which `wait` callers are told the execution is stalled.
const STALLED_AFTER: u32 = 3;

/// A claimed task with the concurrency slot it runs in.
pub(crate) struct Claimed {
    /// The task and the claim's attempt number.
    pub claim: Claim,
    /// The slot it runs in.
    pub permit: OwnedSemaphorePermit,
}

/// An execution's plan and input, when the worker has them at hand (it just submitted it).
#[derive(Clone)]
pub(crate) struct Preloaded {
    /// The execution's id.
    pub execution_id: Uuid,
    /// The name of its workflow.
    pub workflow_name: Arc<str>,
    /// Its tasks and their dependencies.
    pub plan: Arc<ExecutionPlan>,
    /// The context it started with.
    pub input: Context,
}

/// A task runner's run of one claim, as it hands it back to its scheduler.
struct FinishedRun {
    /// The claim it ran under.
    claim: Claim,
    /// The task's input lineage, kept when it has dependents.
    input: Option<Lineage>,
    /// The task's end and its output; None when its claim was given back while it ran.
    end: Option<(EndedTask, Option<Output>)>,
    /// The slot the task ran in, kept so the commit can claim the next task into it.
    slot: Option<OwnedSemaphorePermit>,
    /// How long it ran in this process, its input's read included: what the pace learns from.
    /// Not the attempt's stored start, which for a task started by the commit that claimed it
    /// is the claim, inside that commit: instances measured so always seemed slower than
    /// commits and were never claimed ahead (PostgreSQL map of 10,000 no-ops: 2,000/s).
    ran: Duration,
}

/// A commit's result, the slots reserved for the tasks it claims, and how long it took.
type CommitEnd = (Result<Committed>, Vec<OwnedSemaphorePermit>, Duration);

/// How fast this execution's tasks end and its commits land, as moving averages. While tasks
/// end faster than commits land, a commit claims up to [`MOST_AHEAD`] tasks beyond the free
/// slots, queued here and started the moment a slot frees, so slots do not idle through each
/// commit's round trips. Tasks slower than a commit are never claimed ahead: another worker
/// may be free to run them.
#[derive(Default, Clone, Copy)]
pub(crate) struct Pace {
    task: Option<Duration>,
    /// Of map instances alone.
    instance: Option<Duration>,
    commit: Option<Duration>,
}

impl Pace {
    fn average(old: Option<Duration>, new: Duration) -> Option<Duration> {
        Some(old.map_or(new, |old| (old * 7 + new) / 8))
    }

    fn task_ran(&mut self, took: Duration, instance: bool) {
        if instance {
            self.instance = Self::average(self.instance, took);
        } else {
            self.task = Self::average(self.task, took);
        }
    }

    fn commit_landed(&mut self, took: Duration) {
        self.commit = Self::average(self.commit, took);
    }

    /// Whether tasks (or map instances) end faster than commits land.
    fn outrun_commits(&self, instances: bool) -> bool {
        let ran = if instances { self.instance } else { self.task };
        matches!((ran, self.commit), (Some(ran), Some(commit)) if ran < commit)
    }
}

struct Scheduler {
    worker: WorkerHandle,
    workflow_name: Arc<str>,
    plan: Arc<ExecutionPlan>,
    input: Lineage,
    /// Lineage of each task ended here whose local dependents have not all taken their input.
    lineages: Vec<Option<Lineage>>,
    /// Dependents of each task that have not taken their input here yet.
    unconsumed: Vec<usize>,
    /// The attempt number of each task's latest claim here (0: none); a runner of an older
    /// claim of the same task is stale.
    claims: Vec<u32>,
    /// The same for map instances running here, by (position, index).
    instance_claims: HashMap<(usize, u32), u32>,
    /// The input of each mapped task whose instances ran here, read once for all of them.
    node_inputs: HashMap<usize, Arc<tokio::sync::OnceCell<Lineage>>>,
    final_context: Arc<Mutex<FinalContext>>,
    running: JoinSet<FinishedRun>,
    /// Ended tasks not committed yet; committed together once the commit in flight lands.
    batch: Vec<EndedTask>,
    /// The slots the batch's tasks ran in, for the tasks its commit claims.
    batch_permits: Vec<OwnedSemaphorePermit>,
    commits: JoinSet<CommitEnd>,
    /// Tasks claimed ahead of free slots, in claim order.
    queued: VecDeque<Claim>,
    pace: Pace,
    cancel: Arc<CancelSender>,
}

/// Drives the claimed tasks of `execution` until none is left running or uncommitted.
pub(crate) async fn drive(
    worker: WorkerHandle,
    first: Vec<Claimed>,
    mut receiver: mpsc::UnboundedReceiver<Vec<Claimed>>,
    cancel: Arc<CancelSender>,
    preloaded: Option<Preloaded>,
) {
    // A commit on PostgreSQL waits on the server longer than a spin lasts, and spinning
    // threads take CPU from a server on the same machine (S2 `def` ran 29 % slower).
    let _driving = worker
        .db()
        .in_process()
        .then(crate::handoff::Driving::start);
    let Some((workflow_name, plan, input, cancel_reason)) = load(&worker, preloaded).await else {
        // The claims stay Running under this worker; they are given back once it stops.
        while worker.end_session(&mut receiver).is_some() {}
        return;
    };
    if let Some(reason) = cancel_reason {
        cancel.send_replace(Some(reason));
    }
    let mut lineage = Lineage::default();
    lineage.absorb(INPUT, &Output::from(input));
    let n = plan.len();
    // Learnt from earlier executions of the workflow here, so the first commit (a fan-out
    // root's) already claims ahead.
    let pace = worker.pace_of(&workflow_name);
    let mut scheduler = Scheduler {
        final_context: Arc::new(Mutex::new(FinalContext::new(&lineage, n))),
        worker,
        workflow_name,
        input: lineage,
        lineages: vec![None; n],
        unconsumed: (0..n).map(|p| plan.dependents_of(p).len()).collect(),
        claims: vec![0; n],
        instance_claims: HashMap::new(),
        node_inputs: HashMap::new(),
        plan,
        running: JoinSet::new(),
        batch: Vec::new(),
        batch_permits: Vec::new(),
        commits: JoinSet::new(),
        queued: VecDeque::new(),
        pace,
        cancel,
    };
    for claimed in first {
        scheduler.start(claimed);
    }
    scheduler.run(receiver).await;
}

/// The workflow name, plan, input and cancel request of an execution, retrying while the
/// database fails.
async fn load(
    worker: &WorkerHandle,
    preloaded: Option<Preloaded>,
) -> Option<(Arc<str>, Arc<ExecutionPlan>, Context, Option<String>)> {
    if let Some(p) = preloaded {
        return Some((p.workflow_name, p.plan, p.input, None));
    }
    let mut backoff = Backoff::default();
    loop {
        match worker.db().load_stored(worker.execution()).await {
            Ok(Some(stored)) => {
                return Some((
                    stored.workflow_name.into(),
                    Arc::new(stored.plan),
                    stored.input,
                    stored.cancel_reason,
                ))
            }
            Ok(None) => return None,
            Err(_) if !worker.is_closed() => backoff.wait().await,
            Err(_) => return None,
        }
    }
}

impl Scheduler {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Vec<Claimed>>) {
        loop {
            if self.worker.is_closed() {
                // Left Running under this worker, given back once it stops.
                self.queued.clear();
            }
            if self.running.is_empty() && self.commits.is_empty() && self.queued.is_empty() {
                if !self.batch.is_empty() {
                    self.flush();
                    continue;
                }
                match self.worker.end_session(&mut receiver) {
                    Some(more) => more.into_iter().for_each(|c| self.start(c)),
                    None => return,
                }
                continue;
            }
            tokio::select! {
                biased;
                Some(joined) = self.commits.join_next(), if !self.commits.is_empty() => {
                    self.on_committed(unwind(joined));
                    self.flush();
                }
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    self.on_finished(unwind(joined));
                    while let Some(joined) = self.running.try_join_next() {
                        self.on_finished(unwind(joined));
                    }
                    self.flush();
                }
                Ok(permit) = self.worker.permits().clone().acquire_owned(), if !self.queued.is_empty() => {
                    self.start_queued(permit);
                }
                Some(claims) = receiver.recv() => {
                    claims.into_iter().for_each(|c| self.start(c));
                }
            }
        }
    }

    /// The input lineage of the task at `position` from the lineages held here; None when an
    /// upstream task ended elsewhere, so its input must be read from the database.
    fn take_input(&mut self, position: usize) -> Option<Lineage> {
        let deps = self.plan.dependencies_of(position);
        if deps.is_empty() {
            return Some(self.input.clone());
        }
        if deps.iter().any(|&d| self.lineages[d].is_none()) {
            return None;
        }
        let input = Lineage::union(deps.iter().filter_map(|&d| self.lineages[d].as_ref()));
        for &dep in deps {
            self.unconsumed[dep] -= 1;
            if self.unconsumed[dep] == 0 {
                self.lineages[dep] = None;
            }
        }
        Some(input)
    }

    /// The input lineage of the mapped task at `position` from the lineages held here, without
    /// taking it from them (every instance reads it); None as in `take_input`.
    fn held_input(&self, position: usize) -> Option<Lineage> {
        let deps = self.plan.dependencies_of(position);
        if deps.iter().any(|&d| self.lineages[d].is_none()) {
            return None;
        }
        if deps.is_empty() {
            return Some(self.input.clone());
        }
        Some(Lineage::union(
            deps.iter().filter_map(|&d| self.lineages[d].as_ref()),
        ))
    }

    /// The input shared by the instances of the mapped task at `position`, once known: its
    /// input without the list it maps over (each instance sees its own element; the whole list
    /// in every instance's context would cost a map of n elements n times n to hand over).
    fn node_input(&mut self, position: usize) -> Arc<tokio::sync::OnceCell<Lineage>> {
        if let Some(cell) = self.node_inputs.get(&position) {
            return cell.clone();
        }
        let held = self.held_input(position).map(|mut input| {
            if let Some(map) = &self.plan.tasks()[position].options.map {
                input.without(&map.over);
            }
            input
        });
        let cell = Arc::new(tokio::sync::OnceCell::new_with(held));
        self.node_inputs.insert(position, cell.clone());
        cell
    }

    fn start(&mut self, claimed: Claimed) {
        let Claimed { claim, permit } = claimed;
        let position = claim.position;
        if self.plan.tasks().get(position).map(|t| t.id.as_str()) != Some(claim.task_id.as_str()) {
            return; // a corrupt claim: left Running, given back when this worker stops
        }
        let options = self.plan.tasks()[position].options.clone();
        let instance = claim.instance.clone();
        let (input, node_input) = match &instance {
            Some(i) => {
                self.instance_claims
                    .insert((position, i.index), claim.attempt);
                (None, Some(self.node_input(position)))
            }
            None => {
                self.claims[position] = claim.attempt;
                // A hook's input (the final context) is read from the database.
                let held = options.hook.is_none().then(|| self.take_input(position));
                (held.flatten(), None)
            }
        };
        let element = instance
            .as_ref()
            .zip(options.map.as_ref())
            .map(|(i, map)| (map.item.clone(), i.element.clone()));
        let over = options
            .map
            .as_ref()
            .map(|m| m.over.clone())
            .unwrap_or_default();
        let keep_input = instance.is_none() && !self.plan.dependents_of(position).is_empty();
        let options_hook = options.hook.is_some();
        let task = self.worker.task(&claim.task_id);
        let runner = task.map(|task| TaskRunner {
            worker: self.worker.clone(),
            position,
            workflow_name: self.workflow_name.clone(),
            task,
            options,
            // A hook runs after a cancellation too: nothing cancels it.
            cancel: match options_hook {
                true => watch::channel(None).1,
                false => self.cancel.subscribe(),
            },
            map_index: instance.as_ref().map(|i| i.index),
            snoozes: 0,
        });
        let db = self.worker.db().clone();
        let plan = self.plan.clone();
        let base = self.input.clone();
        let execution = self.worker.execution();
        self.running.spawn(async move {
            let began = Instant::now();
            let input = match (input, node_input) {
                (Some(input), _) => Ok(input),
                (None, Some(cell)) => cell
                    .get_or_try_init(|| async {
                        let mut input = stored_input(&db, execution, &plan, position, base).await?;
                        input.without(&over);
                        Ok::<_, Error>(input)
                    })
                    .await
                    .cloned(),
                (None, None) => stored_input(&db, execution, &plan, position, base).await,
            };
            let input = input.and_then(|input| with_element(input, position, element));
            let (input, end, slot) = match (input, runner) {
                (Ok(input), Some(runner)) => {
                    let context = input.to_shared();
                    let mut slot = Some(permit);
                    let (attempt, start) = (claim.attempt, claim.started_at);
                    let end = run_task(runner, context, &mut slot, attempt, start).await;
                    // A lost claim's slot is freed at once.
                    let slot = slot.filter(|_| end.is_some());
                    (Some(input), end, slot)
                }
                (Ok(input), None) => {
                    let error = TaskError::engine(
                        EngineFailure::NotRegistered,
                        format_args!("task '{}' is not registered in this process", claim.task_id),
                    );
                    (Some(input), Some(failed(&claim, error)), None)
                }
                (Err(e), _) => {
                    let error = TaskError::fatal(format!("could not read the task's input: {e}"));
                    (None, Some(failed(&claim, error)), None)
                }
            };
            FinishedRun {
                claim,
                input: input.filter(|_| keep_input),
                end,
                slot,
                ran: began.elapsed(),
            }
        });
    }

    fn on_finished(&mut self, run: FinishedRun) {
        let FinishedRun {
            claim,
            input,
            end,
            slot,
            ran,
        } = run;
        let position = claim.position;
        let index = claim.instance.as_ref().map(|i| i.index);
        let latest = match index {
            Some(index) => self.instance_claims.get(&(position, index)).copied(),
            None => Some(self.claims[position]),
        };
        // None: the runner found its claim given back, and said so.
        let Some((mut end, output)) = end else { return };
        if Some(claim.attempt) != latest {
            // This worker claimed the task again while this older run went on.
            self.discard(position, end.attempt);
            return;
        }
        if end.started_at.is_some() {
            self.pace.task_ran(ran, index.is_some());
        }
        match slot {
            Some(slot) if !self.queued.is_empty() => self.start_queued(slot),
            slot => self.batch_permits.extend(slot),
        }
        if let Some(index) = index {
            // An instance's value reaches dependents through its node, from the database.
            self.instance_claims.remove(&(position, index));
            end.map_index = Some(index);
            self.batch.push(end);
            return;
        }
        if let Some(output) = &output {
            self.final_context
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .absorb(position, output);
        }
        if let Some(mut lineage) = input {
            if let Some(output) = &output {
                lineage.absorb(position as i64, output);
            }
            self.lineages[position] = Some(lineage);
        }
        self.batch.push(end);
    }

    /// Logs that the result of `attempt` of the task at `position` was thrown away.
    fn discard(&self, position: usize, attempt: u32) {
        report(
            self.worker.observer(),
            Event::AttemptDiscarded {
                attempt: AttemptRef {
                    execution_id: self.worker.execution(),
                    workflow_name: &self.workflow_name,
                    task_id: &self.plan.tasks()[position].id,
                    attempt,
                },
                reason: GIVEN_BACK,
            },
        );
    }

    /// Commits the ended tasks in the background, one commit at a time: tasks ending meanwhile
    /// form the next batch, which grows while the commit in flight lands (a second commit in
    /// flight would only wait on the execution's row, with a smaller batch: S2 ran 10-20 %
    /// slower with two on PostgreSQL, 20 % on SQLite).
    fn flush(&mut self) {
        if !self.commits.is_empty() || self.batch.is_empty() {
            return;
        }
        let ended = Arc::new(std::mem::take(&mut self.batch));
        // An instance unblocks only its next instances, in the slot it ran in.
        let unblockable: usize = ended
            .iter()
            .filter(|e| e.map_index.is_none())
            .map(|e| self.plan.dependents_of(e.position).len())
            .sum();
        let mut permits = std::mem::take(&mut self.batch_permits);
        if self.cancel.borrow().is_some() || self.worker.is_closed() {
            permits.clear();
        } else {
            permits.extend(
                self.worker
                    .reserve(unblockable.saturating_sub(permits.len())),
            );
        }
        let ahead = |instances| {
            if self.pace.outrun_commits(instances) && !permits.is_empty() {
                MOST_AHEAD.saturating_sub(self.queued.len())
            } else {
                0
            }
        };
        let ahead = (ahead(false), ahead(true));
        let worker = self.worker.clone();
        let plan = self.plan.clone();
        let context: SharedContext = self.final_context.clone();
        self.commits.spawn(async move {
            let started = Instant::now();
            let claim = (permits.len(), ahead);
            let stored = store_batch(&worker, plan, ended, claim, context).await;
            (stored, permits, started.elapsed())
        });
    }

    fn on_committed(&mut self, (committed, mut permits, took): CommitEnd) {
        // On an error the tasks stay Running under this worker, given back once it stops.
        let Ok(committed) = committed else { return };
        self.pace.commit_landed(took);
        self.worker.remember_pace(&self.workflow_name, self.pace);
        let signals = self.worker.db().signals();
        for &(position, attempt) in &committed.lost {
            self.discard(position, attempt);
            // What this run handed on in memory is stale: dependents read inputs from the
            // database, and the final context is rebuilt from it.
            self.lineages[position] = None;
            *self.final_context.lock().unwrap_or_else(|p| p.into_inner()) =
                FinalContext::new(&self.input, self.plan.len());
        }
        for position in committed.skipped {
            let deps = self.plan.dependencies_of(position);
            if deps.iter().all(|&d| self.lineages[d].is_some())
                && !self.plan.dependents_of(position).is_empty()
            {
                let lineage =
                    Lineage::union(deps.iter().filter_map(|&d| self.lineages[d].as_ref()));
                self.lineages[position] = Some(lineage);
            }
        }
        if let Some(reason) = committed.cancel_reason {
            if self.cancel.borrow().is_none() {
                self.cancel.send_replace(Some(reason));
            }
        }
        if committed.made_ready {
            signals.raise(Signal::Ready);
        }
        if let Some(status) = committed.finished {
            report(
                self.worker.observer(),
                Event::ExecutionEnded {
                    execution_id: self.worker.execution(),
                    workflow_name: &self.workflow_name,
                    status,
                },
            );
            let finished = self
                .final_context
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finished();
            if let Some(context) = finished {
                self.worker.deposit_final(context);
            }
            signals.raise(Signal::Done);
        }
        for claim in committed.claimed {
            match permits.pop() {
                Some(permit) => self.start(Claimed { claim, permit }),
                None => self.queued.push_back(claim),
            }
        }
    }

    /// Starts the oldest task claimed ahead in `slot`; its attempt starts now.
    fn start_queued(&mut self, slot: OwnedSemaphorePermit) {
        if let Some(mut claim) = self.queued.pop_front() {
            claim.started_at = now();
            self.start(Claimed {
                claim,
                permit: slot,
            });
        }
    }
}

/// Commits a batch of ended tasks, claiming what it unblocks for `slots` reserved slots and up to
/// `ahead` tasks beyond them, retrying while the database cannot be written (this worker's
/// `wait` callers hear of it meanwhile). When the database refuses the batch for good — a
/// refused value, or commits failing while heartbeats succeed — the execution is failed with
/// the database's message instead, so it never stays Running with nobody able to finish it.
async fn store_batch(
    worker: &WorkerHandle,
    plan: Arc<ExecutionPlan>,
    ended: Arc<Vec<EndedTask>>,
    (slots, ahead): (usize, (usize, usize)),
    context: SharedContext,
) -> Result<Committed> {
    let mut backoff = Backoff::default();
    let mut failures = 0;
    let failing_since = tokio::time::Instant::now();
    loop {
        let committed = worker
            .db()
            .commit_ended(
                worker.execution(),
                plan.clone(),
                worker.worker_id().to_string(),
                ended.clone(),
                worker.claim_request(slots, ahead),
                context.clone(),
            )
            .await;
        let error = match committed {
            Ok(committed) => {
                if failures > 0 {
                    worker.set_stalled(None);
                }
                return Ok(committed);
            }
            Err(error) => error,
        };
        failures += 1;
        let refused = matches!(error, Error::Refused(_))
            || (failures >= REFUSED_AFTER
                && !error.is_transient()
                && worker.wrote_since(failing_since));
        if refused {
            let message = format!("could not store the execution's results: {error}");
            if worker
                .db()
                .fail_execution(worker.execution(), message.clone())
                .await
                .is_ok()
            {
                worker.set_stalled(None);
                worker.cancel(&message);
                worker.db().signals().raise(Signal::Done);
                return Err(error);
            }
        }
        if worker.is_closed() {
            return Err(error);
        }
        if failures >= STALLED_AFTER {
            worker.set_stalled(Some(error.to_string()));
        }
        backoff.wait().await;
    }
}

/// The result of a task this scheduler spawned; its panic goes on in the scheduler, whose
/// supervisor then fails the execution (see `Worker::supervise`).
fn unwind<T>(joined: std::result::Result<T, tokio::task::JoinError>) -> T {
    joined.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
}

/// A task's input from the database: the execution's input and its completed ancestors' outputs.
async fn stored_input(
    db: &crate::database::Database,
    execution: Uuid,
    plan: &ExecutionPlan,
    position: usize,
    mut input: Lineage,
) -> Result<Lineage> {
    // A hook sees the final context (every other task's output) and its execution's outcome.
    let hook = plan.tasks()[position].options.hook.is_some();
    let sources = match hook {
        true => (0..plan.len())
            .filter(|&p| plan.tasks()[p].options.hook.is_none())
            .collect(),
        false => plan.ancestors_of(position),
    };
    let outputs = db.load_outputs(execution, sources).await?;
    for (ancestor, output) in outputs {
        input.absorb(ancestor as i64, &Output::from(output));
    }
    if hook {
        let mut outcome = Context::new();
        outcome.insert("execution", db.hook_outcome(execution).await?);
        input.absorb(plan.len() as i64, &Output::from(outcome));
    }
    Ok(input)
}

/// `input` with a map instance's element under its item key, written by its node.
fn with_element(
    mut input: Lineage,
    position: usize,
    element: Option<(String, String)>,
) -> Result<Lineage> {
    if let Some((key, json)) = element {
        let mut values = Context::new();
        values.insert(key, serde_json::from_str::<serde_json::Value>(&json)?);
        input.absorb(position as i64, &Output::from(values));
    }
    Ok(input)
}

/// The end of a claimed task that could not run, failed with `error`.
fn failed(claim: &Claim, error: TaskError) -> (EndedTask, Option<Output>) {
    let ended = AttemptEnd::Failed(error);
    let (position, attempt, started_at) = (claim.position, claim.attempt, claim.started_at);
    let end = conclude(ended, false, position, attempt, attempt, started_at, now());
    (
        end.expect("without retries left, no attempt is retried"),
        None,
    )
}
