//! Spawning on the tokio runtime: tasks that stop with their handle, and panics as errors; and
//! large values dropped on a background thread instead of where they were let go.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use once_cell::sync::Lazy;
use serde_json::Value;

use crate::context::SharedValue;
use tokio::task::JoinError;

#[cfg(any(feature = "python", test))]
use crate::error::Error;

/// A spawned task that is aborted when its handle is dropped, so abandoned work stops.
#[cfg(any(feature = "python", test))]
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

#[cfg(any(feature = "python", test))]
impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(any(feature = "python", test))]
impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Runs `work` as its own task and returns its result, or `Error::Internal` if it panicked;
/// dropping the returned future aborts the task.
#[cfg(any(feature = "python", test))]
pub(crate) async fn catch_panic<T, F>(work: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    AbortOnDrop(tokio::spawn(work))
        .await
        .unwrap_or_else(|e| Err(Error::Internal(panic_message(e))))
}

/// Containers with more elements than this are freed on the background thread.
const LARGE: usize = 64;

/// The background thread that frees large values; None if it could not be started.
static DROPPER: Lazy<Option<Sender<Arc<SharedValue>>>> = Lazy::new(|| {
    let (sender, receiver) = channel::<Arc<SharedValue>>();
    std::thread::Builder::new()
        .name("cloacina-drop".into())
        .spawn(move || receiver.into_iter().for_each(drop))
        .ok()
        .map(|_| sender)
});

/// Lets go of `value`; if this was its last reference and it is large (freeing a big JSON tree
/// takes milliseconds), it is freed on a background thread, off the path of the next task.
pub(crate) fn drop_later(value: Arc<SharedValue>) {
    let large = match value.parsed() {
        Some(Value::Array(items)) => items.len() > LARGE,
        Some(Value::Object(map)) => map.len() > LARGE,
        _ => false,
    };
    if !large || Arc::strong_count(&value) > 1 {
        return;
    }
    if let Some(dropper) = &*DROPPER {
        // If the thread is gone, the value comes back in the error and is dropped here.
        let _ = dropper.send(value);
    }
}

/// What a failed task's join error says: the panic's message, or that it was aborted.
pub(crate) fn panic_message(err: JoinError) -> String {
    if !err.is_panic() {
        return "the engine task was aborted".into();
    }
    payload_message(err.into_panic())
}

/// What a panic's payload says, as a failure message.
fn payload_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("the engine panicked: {text}")
}

/// A future run in place whose panic ends it with `Err` and the panic's message, as a spawned
/// task's would, without the hand-off to another task.
pub(crate) struct CatchUnwind<F: Future>(pub Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload_message(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_place_becomes_an_error() {
        let ok = CatchUnwind(Box::pin(async { 7 })).await;
        assert_eq!(ok, Ok(7));
        let panicked = CatchUnwind(Box::pin(async { panic!("boom {}", 42) })).await;
        assert_eq!(
            panicked,
            Err::<(), _>("the engine panicked: boom 42".into())
        );
    }

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error() {
        let result: Result<(), Error> = catch_panic(async { panic!("boom {}", 42) }).await;
        match result {
            Err(Error::Internal(message)) => assert_eq!(message, "the engine panicked: boom 42"),
            other => panic!("expected an internal error, got {other:?}"),
        }
        assert_eq!(catch_panic(async { Ok(7) }).await.unwrap(), 7);
    }
}
