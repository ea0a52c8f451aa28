//! The asyncio <-> tokio bridge: Rust futures as asyncio awaitables, and GIL access from Rust threads.
//!
//! Every Rust thread that needs Python goes through [`with_python`]. At interpreter exit an
//! `atexit` hook closes that gate and waits for threads already inside it: a thread that tried to
//! take the GIL during finalisation would be killed mid-unwind and abort the process.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use once_cell::sync::OnceCell;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use pyo3_asyncio_0_21::TaskLocals;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::errors::{new_err, to_py_err, ErrorKind};
use crate::error::Error;
use crate::spawn::catch_panic;

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
    let result = Python::with_gil(|py| {
        if KEEPS_STATE.with(Cell::get) && KEPT.with(Cell::get).is_none() {
            // A second hold, taken with the GIL held: the state outlives `with_gil`'s.
            KEPT.with(|kept| kept.set(Some(unsafe { pyo3::ffi::PyGILState_Ensure() })));
        }
        f(py)
    });
    GATE.fetch_sub(1, Ordering::SeqCst);
    Some(result)
}

thread_local! {
    /// Whether this thread is one the engine owns (a task or runtime thread) and so keeps its
    /// Python thread state from its first [`with_python`] to [`release_thread_state`].
    static KEEPS_STATE: Cell<bool> = const { Cell::new(false) };
    /// The hold that keeps this thread's Python thread state, once taken.
    static KEPT: Cell<Option<pyo3::ffi::PyGILState_STATE>> = const { Cell::new(None) };
}

/// Marks the calling thread, one the engine owns, as keeping its Python thread state between
/// calls: CPython otherwise makes and frees one per [`with_python`] (a memory map and unmap
/// each time, a third of a sync task's thread time). Pair with [`release_thread_state`].
pub(crate) fn keep_thread_state() {
    KEEPS_STATE.with(|keeps| keeps.set(true));
}

/// Frees the Python thread state the calling thread kept, before it exits (once the
/// interpreter is exiting, it frees the state itself).
pub(crate) fn release_thread_state() {
    KEEPS_STATE.with(|keeps| keeps.set(false));
    if let Some(hold) = KEPT.with(Cell::take) {
        with_python(|_| unsafe { pyo3::ffi::PyGILState_Release(hold) });
    }
}

/// `atexit` hook: lets no new Rust thread into Python and waits for those inside, then for
/// connections still being opened (see `database/connects.rs`). A thread
/// still inside after [`EXIT_GRACE`] (a sync task that ignored its cancellation) would be
/// unwound through Rust frames by the interpreter's finalization, which aborts the process;
/// the process exits with status 1 and says why instead. Signal handlers run meanwhile, so a
/// Ctrl-C (KeyboardInterrupt) ends the wait at once, with status 130.
#[pyfunction]
fn _close_python_gate(py: Python<'_>) -> PyResult<()> {
    GATE.fetch_or(CLOSED, Ordering::SeqCst);
    let deadline = Instant::now() + EXIT_GRACE;
    let mut stuck = threads_inside();
    while stuck != 0 && Instant::now() < deadline {
        stuck =
            py.allow_threads(|| wait_for_threads((Instant::now() + SIGNAL_CHECK).min(deadline)));
        // Python runs signal handlers only in the main thread, with the GIL: here.
        if let Err(err) = py.check_signals() {
            let interrupted = err.is_instance_of::<PyKeyboardInterrupt>(py);
            let reason = if interrupted {
                "KeyboardInterrupt".to_string()
            } else {
                err.to_string()
            };
            return exit_unfinalized(
                py,
                if interrupted { 130 } else { 1 },
                &format!(
                    "interrupted ({reason}) while {stuck} task thread(s) still ran Python code"
                ),
            );
        }
    }
    if stuck == 0 {
        py.allow_threads(|| {
            crate::database::connects::wait_for_connects(crate::executor::CONNECTS_GRACE)
        });
        return Ok(());
    }
    exit_unfinalized(
        py,
        1,
        &format!(
            "{stuck} task thread(s) still running Python code {} s after the program ended (a \
             sync task that ignores cancellation?)",
            EXIT_GRACE.as_secs()
        ),
    )
}

/// Longest the exit hook goes without running signal handlers.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// How many Rust threads are inside [`with_python`].
fn threads_inside() -> usize {
    GATE.load(Ordering::SeqCst) & !CLOSED
}

/// Waits until no Rust thread is inside [`with_python`] or `until` passes; returns how many are.
fn wait_for_threads(until: Instant) -> usize {
    while threads_inside() != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    threads_inside()
}

/// Writes `cloacina: <why>; exiting with status <code> without finalizing the interpreter` on
/// stderr and ends the process with `code`.
fn exit_unfinalized(py: Python<'_>, code: i32, why: &str) -> PyResult<()> {
    let sys = py.import_bound("sys")?;
    let stderr = sys.getattr("stderr")?;
    let _ = sys.getattr("stdout")?.call_method0("flush");
    let _ = stderr.call_method1(
        "write",
        (format!(
            "cloacina: {why}; exiting with status {code} without finalizing the interpreter\n"
        ),),
    );
    let _ = stderr.call_method0("flush");
    py.import_bound("os")?.call_method1("_exit", (code,))?;
    Ok(())
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

/// A context variable and the value it has during a call.
pub(crate) type Scope = (PyObject, PyObject);

/// Calls `callable(arg)`; with a scope, in a copy of the current contextvars context where the
/// scope's variable is set, so the call (and any task it creates) sees it.
pub(crate) fn call_in_scope<'py>(
    py: Python<'py>,
    scope: Option<&Scope>,
    callable: &Bound<'py, PyAny>,
    arg: impl IntoPy<PyObject>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some((variable, value)) = scope else {
        return callable.call1((arg,));
    };
    let context = py
        .import_bound("contextvars")?
        .call_method0("copy_context")?;
    context.call_method1("run", (variable.getattr(py, "set")?, value))?;
    context.call_method1("run", (callable, arg))
}

/// Makes the coroutine, on the loop thread.
type StartFn = Box<dyn FnOnce(Python<'_>) -> PyResult<PyObject> + Send>;
/// Consumes the coroutine's result (or the error that stopped it), on the loop thread.
type FinishFn = Box<dyn FnOnce(Python<'_>, PyResult<PyObject>) + Send>;

/// A coroutine run as an asyncio task, made and finished on the loop thread, so a Rust thread
/// hands the GIL over only once per call: to schedule it. The coroutine's wrapper hands its end
/// on itself, a loop iteration sooner than a done-callback would.
#[pyclass(frozen)]
struct LoopCall {
    start: Mutex<Option<StartFn>>,
    finish: Mutex<Option<FinishFn>>,
    task: Mutex<Option<PyObject>>,
    /// The variable set inside the coroutine.
    scope: Option<Scope>,
}

impl LoopCall {
    fn finish(&self, py: Python<'_>, result: PyResult<PyObject>) {
        let finish = self.finish.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(finish) = finish {
            finish(py, result);
        }
    }
}

#[pymethods]
impl LoopCall {
    /// Runs on the loop thread, in the caller's contextvars context: starts the coroutine's task.
    fn run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let start = slf
            .get()
            .start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(start) = start else {
            return Ok(());
        };
        let task = start(py).and_then(|coroutine| {
            let helpers = helpers(py)?;
            let wrapped = helpers
                .settling
                .call1(py, (coroutine, slf.getattr("settle")?))?;
            let ensure_future = helpers.ensure_future.bind(py);
            // The task copies the context it is created in, so it sees the scope's variable.
            call_in_scope(py, slf.get().scope.as_ref(), ensure_future, wrapped)
        });
        match task {
            Ok(task) => {
                *slf.get().task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.unbind())
            }
            Err(err) => slf.get().finish(py, Err(err)),
        }
        Ok(())
    }

    /// Called by the coroutine's wrapper as its last step: hands its result (or exception) on.
    fn settle(&self, py: Python<'_>, result: PyObject, error: Option<Bound<'_, PyAny>>) {
        let result = match error {
            Some(error) => Err(PyErr::from_value_bound(error)),
            None => Ok(result),
        };
        self.finish(py, result);
    }

    /// Runs on the loop thread: cancels the task if it is still running.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(task) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
            task.call_method0(py, "cancel")?;
        }
        Ok(())
    }
}

/// Source of the Python helpers the bridge runs: `settling`, the wrapper [`LoopCall`] runs a
/// coroutine in, calls `settle(result, None)` or `settle(None, exception)` as the coroutine's
/// last step (the exception is handed on, not raised again: nobody awaits the task, except those
/// that must stop the loop); `deferred_call` awaits what `start()` returns, calling it only once
/// a loop runs the coroutine ([`deferred`]).
const HELPERS_SOURCE: &str = "\
async def settling(coroutine, settle):
    try:
        result = await coroutine
    except BaseException as error:
        settle(None, error)
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        settle(result, None)

async def deferred_call(start):
    return await start()
";

/// The bridge's Python helpers, made once.
struct Helpers {
    settling: PyObject,
    deferred_call: PyObject,
    ensure_future: PyObject,
}

static HELPERS: GILOnceCell<Helpers> = GILOnceCell::new();

/// The bridge's Python helpers (see [`HELPERS_SOURCE`]) and `asyncio.ensure_future`.
fn helpers(py: Python<'_>) -> PyResult<&Helpers> {
    HELPERS.get_or_try_init(py, || {
        let module =
            PyModule::from_code_bound(py, HELPERS_SOURCE, "<cloacina bridge>", "_cloacina_bridge")?;
        Ok(Helpers {
            settling: module.getattr("settling")?.unbind(),
            deferred_call: module.getattr("deferred_call")?.unbind(),
            ensure_future: py
                .import_bound("asyncio")?
                .getattr("ensure_future")?
                .unbind(),
        })
    })
}

/// A coroutine scheduled on an asyncio loop; dropping it before it finishes cancels it.
pub(crate) struct RunningCoroutine<T> {
    receiver: oneshot::Receiver<T>,
    call: Py<LoopCall>,
    event_loop: PyObject,
    finished: bool,
}

impl<T> RunningCoroutine<T> {
    /// Waits for what `finish` made of the coroutine's result; None if the loop stopped first.
    pub(crate) async fn result(mut self) -> Option<T> {
        let result = (&mut self.receiver).await.ok();
        self.finished = true;
        result
    }
}

impl<T> Drop for RunningCoroutine<T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        with_python(|py| {
            if let Ok(cancel) = self.call.getattr(py, "cancel") {
                // Fails only when the loop is closed, and then the coroutine is gone anyway.
                let _ = self
                    .event_loop
                    .call_method1(py, "call_soon_threadsafe", (cancel,));
            }
        });
    }
}

/// Schedules a coroutine on the loop in `locals`, in its contextvars context with `scope`'s
/// variable set: `start` makes it and `finish` turns its result into `T`, both on the loop
/// thread. Call with the GIL held.
pub(crate) fn run_on_loop<T: Send + 'static>(
    py: Python<'_>,
    locals: &TaskLocals,
    scope: Option<Scope>,
    start: impl FnOnce(Python<'_>) -> PyResult<PyObject> + Send + 'static,
    finish: impl FnOnce(Python<'_>, PyResult<PyObject>) -> T + Send + 'static,
) -> PyResult<RunningCoroutine<T>> {
    let (sender, receiver) = oneshot::channel();
    let call = Py::new(
        py,
        LoopCall {
            start: Mutex::new(Some(Box::new(start))),
            finish: Mutex::new(Some(Box::new(move |py, result| {
                let _ = sender.send(finish(py, result));
            }))),
            task: Mutex::new(None),
            scope,
        },
    )?;
    let event_loop = locals.event_loop(py);
    let kwargs = PyDict::new_bound(py);
    kwargs.set_item("context", locals.context(py))?;
    event_loop.call_method(
        "call_soon_threadsafe",
        (call.getattr(py, "run")?,),
        Some(&kwargs),
    )?;
    Ok(RunningCoroutine {
        receiver,
        call,
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

/// Worker threads of the engine's tokio runtime. Its own work is light: tasks run on Python
/// threads and storage on blocking threads, so a second worker mostly adds hand-offs between
/// the two (measured on S1: 28 % more context switches, 17 % more CPU per sync task).
const RUNTIME_WORKERS: usize = 1;

/// Sets up the tokio runtime the engine starts on first use; call before anything runs on it.
pub(crate) fn configure_runtime() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .worker_threads(RUNTIME_WORKERS)
        .thread_name("cloacina-runtime")
        .on_thread_start(keep_thread_state)
        .on_thread_stop(release_thread_state)
        .on_thread_park(crate::handoff::await_runtime_work);
    pyo3_asyncio_0_21::tokio::init(builder);
}

/// The process that started the tokio runtime: its threads do not survive `os.fork()`.
static RUNTIME_PID: OnceCell<u32> = OnceCell::new();

/// The engine's tokio runtime; an error in a child forked after the runtime started, where
/// its threads are gone and anything spawned would wait forever.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    let pid = std::process::id();
    let owner = *RUNTIME_PID.get_or_init(|| pid);
    if owner != pid {
        return Err(new_err(
            ErrorKind::Base,
            format!(
                "cloacina cannot run in a process forked after it started (it started in process {owner}, this is {pid}); \
                 start child processes with multiprocessing's 'spawn' or 'forkserver' method, or use cloacina only after forking"
            ),
        ));
    }
    Ok(pyo3_asyncio_0_21::tokio::get_runtime())
}

/// Runs `work` on the tokio runtime and returns an asyncio future for its result; a panic in
/// `work` raises CloacinaError on the future.
///
/// Called in a thread that runs no event loop (a sync task's, say), returns instead a coroutine
/// that starts `work` when a loop first runs it, on that loop; so a sync task can hand
/// `executor.execute(...)` to `asyncio.run_coroutine_threadsafe(..., loop)`.
pub(crate) fn awaitable<'py, F, T>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: IntoPy<PyObject> + Send + 'static,
{
    if has_running_loop(py)? {
        started(py, work)
    } else {
        deferred(py, work)
    }
}

/// Whether an asyncio loop runs in this thread.
fn has_running_loop(py: Python<'_>) -> PyResult<bool> {
    Ok(!py
        .import_bound("asyncio")?
        .call_method0("_get_running_loop")?
        .is_none())
}

/// A coroutine that starts `work` (as [`started`]) on the loop that first runs it.
fn deferred<'py, F, T>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: IntoPy<PyObject> + Send + 'static,
{
    let work = Mutex::new(Some(work));
    let start = PyCFunction::new_closure_bound(
        py,
        None,
        None,
        move |args: &Bound<'_, PyTuple>, _: Option<&Bound<'_, PyDict>>| {
            let work = work.lock().unwrap_or_else(|p| p.into_inner()).take();
            let work = work
                .ok_or_else(|| PyRuntimeError::new_err("cannot reuse already awaited coroutine"))?;
            started(args.py(), work).map(Bound::unbind)
        },
    )?;
    helpers(py)?.deferred_call.bind(py).call1((start,))
}

/// [`awaitable`] on the loop running in this thread (a RuntimeError if none does).
fn started<'py, F, T>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: IntoPy<PyObject> + Send + 'static,
{
    let runtime = runtime()?;
    let event_loop = running_loop(py)?;
    let future = event_loop.call_method0("create_future")?;
    let resolve = wrap_pyfunction_bound!(_resolve_future, py)?.unbind();
    let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
    let task = runtime.spawn(async move {
        let result = catch_panic(work).await;
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
