//! Final contexts handed from the scheduler that ended an execution to the `wait` calls of the
//! same process, with the objects its tasks returned, so they need not read and decode them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::context::StoredContext;

/// The executions that `wait` calls of this process are waiting for, and their final contexts
/// once ended here.
#[derive(Default)]
pub(crate) struct Finals(Mutex<HashMap<Uuid, Awaited>>);

#[derive(Default)]
struct Awaited {
    waiters: usize,
    context: Option<StoredContext>,
}

impl Finals {
    /// Registers a waiter for `execution` until the returned guard is dropped.
    pub(crate) fn expect(self: &Arc<Self>, execution: Uuid) -> Expected {
        self.lock().entry(execution).or_default().waiters += 1;
        Expected {
            finals: self.clone(),
            execution,
        }
    }

    /// Leaves `context` for the waiters of `execution`, if it has any.
    pub(crate) fn deposit(&self, execution: Uuid, context: StoredContext) {
        if let Some(awaited) = self.lock().get_mut(&execution) {
            awaited.context = Some(context);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Awaited>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registered waiter of one execution.
pub(crate) struct Expected {
    finals: Arc<Finals>,
    execution: Uuid,
}

impl Expected {
    /// The final context left by this process's scheduler, if it ended the execution.
    pub(crate) fn context(&self) -> Option<StoredContext> {
        self.finals
            .lock()
            .get(&self.execution)
            .and_then(|a| a.context.clone())
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        let mut finals = self.finals.lock();
        if let Some(awaited) = finals.get_mut(&self.execution) {
            awaited.waiters -= 1;
            if awaited.waiters == 0 {
                finals.remove(&self.execution);
            }
        }
    }
}
