//! A worker's upkeep, apart from claiming and running tasks: heartbeats, giving back dead
//! workers' tasks, cancelling executions past their deadline, explaining ready work nobody
//! claims, and relaying cancellations made in other processes.

use std::time::Duration;

use uuid::Uuid;

use super::Worker;
use crate::database::control::timed_out_reason;
use crate::database::signals::Signal;

/// How long a ready task waits unclaimed before its execution shows why.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(1);

impl Worker {
    /// Heartbeats, gives back dead workers' tasks, enforces deadlines, explains stuck work and
    /// relays cancellations from other processes, until shutdown. Each runs on its own, so
    /// none waits on another: a reap stuck behind a peer's lock delays no heartbeat and no
    /// cancellation.
    pub(super) async fn maintenance_loop(self: std::sync::Arc<Self>) {
        let beat = self.beat_interval();
        tokio::join!(
            self.every(beat, |w| Box::pin(w.beat())),
            self.every(beat, |w| Box::pin(w.reap())),
            self.every(UNCLAIMED_GRACE, |w| Box::pin(w.explain_unclaimed())),
            self.relay_loop(beat),
        );
    }

    /// How often a worker heartbeats: three times per lease.
    fn beat_interval(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(10))
    }

    /// Runs `step` every `period` (after it ends) until shutdown.
    async fn every<F>(&self, period: Duration, step: F)
    where
        F: for<'a> Fn(
            &'a Self,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>,
    {
        while !self.is_closed() {
            step(self).await;
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.closing.notified() => return,
            }
        }
    }

    /// Relays cancellations from other processes as they are announced, and every beat.
    async fn relay_loop(&self, beat: Duration) {
        let mut cancelled = self.db.signals().subscribe(Signal::Cancelled);
        while !self.is_closed() {
            tokio::select! {
                _ = cancelled.changed() => {}
                () = tokio::time::sleep(beat) => {}
                () = self.closing.notified() => return,
            }
            self.relay_cancellations().await;
        }
    }

    /// Refreshes this worker's lease.
    pub(super) async fn beat(&self) {
        if self
            .db
            .heartbeat(self.identity.clone(), self.task_ids_json())
            .await
            .is_ok()
        {
            *self.last_beat.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(tokio::time::Instant::now());
        }
    }

    /// Whether a heartbeat wrote to the database after `since`: it accepts writes.
    pub(super) fn wrote_since(&self, since: tokio::time::Instant) -> bool {
        let last = *self.last_beat.lock().unwrap_or_else(|p| p.into_inner());
        last.is_some_and(|beat| beat > since)
    }

    /// Gives back dead workers' tasks and cancels executions past their deadline.
    pub(super) async fn reap(&self) {
        if let Ok(requeued) = self
            .db
            .reap_dead_workers(self.identity.clone(), self.lease)
            .await
        {
            if requeued > 0 {
                self.db.signals().raise(Signal::Ready);
            }
        }
        if let Ok(expired) = self.db.expired_deadlines().await {
            for (execution, seconds) in expired {
                let _ = self.db.cancel(execution, timed_out_reason(seconds)).await;
                self.cancel_local(execution, &timed_out_reason(seconds));
            }
        }
    }

    fn task_ids_json(&self) -> String {
        serde_json::to_string(&self.registry.ids()).expect("strings serialise")
    }

    async fn explain_unclaimed(&self) {
        if let Ok(live) = self.db.live_task_ids(self.lease).await {
            let _ = self.db.explain_unclaimed(live, UNCLAIMED_GRACE).await;
        }
    }

    async fn relay_cancellations(&self) {
        let running: Vec<Uuid> = self.sessions().keys().copied().collect();
        if running.is_empty() {
            return;
        }
        if let Ok(requests) = self.db.cancel_requests(running).await {
            for (execution, reason) in requests {
                self.cancel_local(execution, &reason);
            }
        }
    }
}
