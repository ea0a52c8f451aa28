//! The asyncio <-> tokio bridge: Rust futures as asyncio awaitables, and GIL access from Rust threads.
//!
//! Every Rust thread that needs Python goes through [`with_python`]. At interpreter exit an
//! `atexit` hook closes that gate and waits for threads already inside it: a thread that tried to
//! take the GIL during finalisation would be killed mid-unwind and abort the process.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3_asyncio_0_21::TaskLocals;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::errors::to_py_err;
use crate::error::Error;

/// Set in `GATE` once the interpreter is exiting; the lower bits count threads using Python.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// Longest the exit hook waits for threads still running Python code.
const EXIT_GRACE: Duration = Duration::from_secs(10);

static GATE: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` with the GIL from a Rust thread; `None` once the interpreter is exiting.
pub(crate) fn with_python<T>(f: impl FnOnce(Python<'_>) -> T) -> Option<T> {
    if GATE.fetch_add(1, Ordering::SeqCst) & CLOSED != 0 {
        GATE.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    let result = Python::with_gil(f);
    GATE.fetch_sub(1, Ordering::SeqCst);
    Some(result)
}

/// `atexit` hook: lets no new Rust thread into Python and waits for those inside.
#[pyfunction]
fn _close_python_gate(py: Python<'_>) {
    GATE.fetch_or(CLOSED, Ordering::SeqCst);
    py.allow_threads(|| {
        let deadline = Instant::now() + EXIT_GRACE;
        while GATE.load(Ordering::SeqCst) & !CLOSED != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Registers the exit hook; called once at module import.
pub(crate) fn install_exit_hook(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(_close_python_gate, module)?;
    module
        .py()
        .import_bound("atexit")?
        .call_method1("register", (hook,))?;
    Ok(())
}

/// Resolves an asyncio future on its loop's thread, unless it was cancelled meanwhile.
#[pyfunction]
fn _resolve_future(
    future: &Bound<'_, PyAny>,
    method: &str,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if !future.call_method0("done")?.is_truthy()? {
        future.call_method1(method, (value,))?;
    }
    Ok(())
}

/// Done-callback that aborts the Rust side when the awaiting coroutine is cancelled.
#[pyclass(frozen)]
struct AbortOnCancel {
    handle: Mutex<Option<AbortHandle>>,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if future.call_method0("cancelled")?.is_truthy()? {
                handle.abort();
            }
        }
        Ok(())
    }
}

/// Watches a coroutine running as an asyncio task: started on the loop thread, reports its result.
#[pyclass(frozen)]
struct CoroutineWatcher {
    sender: Mutex<Option<oneshot::Sender<PyResult<PyObject>>>>,
    task: Mutex<Option<PyObject>>,
}

#[pymethods]
impl CoroutineWatcher {
    /// Runs on the loop thread: wraps the coroutine in a task that runs in `context`.
    fn start(
        slf: &Bound<'_, Self>,
        coroutine: &Bound<'_, PyAny>,
        context: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let ensure_future = py.import_bound("asyncio")?.getattr("ensure_future")?;
        let task = context.call_method1("run", (ensure_future, coroutine))?;
        task.call_method1("add_done_callback", (slf,))?;
        *slf.get().task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.unbind());
        Ok(())
    }

    /// Done-callback: hands the task's result (or exception) to the waiting Rust future.
    fn __call__(&self, task: &Bound<'_, PyAny>) {
        let result = if task
            .call_method0("cancelled")
            .and_then(|c| c.is_truthy())
            .unwrap_or(false)
        {
            Err(pyo3::exceptions::asyncio::CancelledError::new_err(
                "the task's coroutine was cancelled",
            ))
        } else {
            task.call_method0("result").map(Bound::unbind)
        };
        if let Some(sender) = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = sender.send(result);
        }
    }

    /// Runs on the loop thread: cancels the task if it is still running.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(task) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
            task.call_method0(py, "cancel")?;
        }
        Ok(())
    }
}

/// A coroutine running on an asyncio loop; dropping it before it finishes cancels it.
pub(crate) struct RunningCoroutine {
    receiver: oneshot::Receiver<PyResult<PyObject>>,
    watcher: Py<CoroutineWatcher>,
    event_loop: PyObject,
    finished: bool,
}

impl RunningCoroutine {
    /// Waits for the coroutine's result.
    pub(crate) async fn result(mut self) -> PyResult<PyObject> {
        let result = (&mut self.receiver).await;
        self.finished = true;
        result.unwrap_or_else(|_| {
            Err(pyo3::exceptions::asyncio::CancelledError::new_err(
                "the event loop running the task stopped",
            ))
        })
    }
}

impl Drop for RunningCoroutine {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        with_python(|py| {
            if let Ok(cancel) = self.watcher.getattr(py, "cancel") {
                // Fails only when the loop is closed, and then the coroutine is gone anyway.
                let _ = self
                    .event_loop
                    .call_method1(py, "call_soon_threadsafe", (cancel,));
            }
        });
    }
}

/// Schedules `coroutine` on the loop in `locals`, in its context; call with the GIL from any thread.
pub(crate) fn spawn_coroutine(
    py: Python<'_>,
    locals: &TaskLocals,
    coroutine: Bound<'_, PyAny>,
) -> PyResult<RunningCoroutine> {
    let (sender, receiver) = oneshot::channel();
    let watcher = Py::new(
        py,
        CoroutineWatcher {
            sender: Mutex::new(Some(sender)),
            task: Mutex::new(None),
        },
    )?;
    let event_loop = locals.event_loop(py);
    let start = watcher.getattr(py, "start")?;
    event_loop.call_method1(
        "call_soon_threadsafe",
        (start, coroutine, locals.context(py)),
    )?;
    Ok(RunningCoroutine {
        receiver,
        watcher,
        event_loop: event_loop.unbind(),
        finished: false,
    })
}

/// The running asyncio loop, or a RuntimeError saying the call must be awaited from async code.
pub(crate) fn running_loop<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    py.import_bound("asyncio")?
        .call_method0("get_running_loop")
        .map_err(|_| PyRuntimeError::new_err("no running event loop: call this from async code and await it, e.g. inside asyncio.run(...)"))
}

/// Runs `work` on the tokio runtime and returns an asyncio future for its result.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: IntoPy<PyObject> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let future = event_loop.call_method0("create_future")?;
    let resolve = wrap_pyfunction_bound!(_resolve_future, py)?.unbind();
    let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
    let task = pyo3_asyncio_0_21::tokio::get_runtime().spawn(async move {
        let result = work.await;
        with_python(|py| {
            let (method, value) = match result {
                Ok(value) => ("set_result", value.into_py(py)),
                Err(err) => ("set_exception", to_py_err(err).into_value(py).into_py(py)),
            };
            // Fails only if the loop is already closed, when nobody is waiting any more.
            let _ = loop_ref.call_method1(
                py,
                "call_soon_threadsafe",
                (resolve, future_ref, method, value),
            );
        });
    });
    let on_done = AbortOnCancel {
        handle: Mutex::new(Some(task.abort_handle())),
    };
    future.call_method1("add_done_callback", (on_done.into_py(py),))?;
    Ok(future)
}
