//! `Workflow`: a named, validated graph of registered tasks.

use std::collections::HashSet;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::marshal::type_name;
use pyo3::types::PyString;

use super::decorator::{task_id_of, task_ids};
use super::errors::{new_err, to_py_err, ErrorKind};
use super::registry::{registry, TaskDefinition};
use super::task::PythonTask;
use crate::error::{Error, WorkflowError};
use crate::model::hooks::HookKind;
use crate::policy::TaskOptions;
use crate::workflow::Workflow;

/// A workflow: the given tasks plus everything they depend on, in topological order.
#[pyclass(name = "Workflow", module = "cloacina", frozen)]
pub(crate) struct PyWorkflow {
    graph: Workflow,
}

impl PyWorkflow {
    /// The validated graph; its tasks are run by id from the registry.
    pub(crate) fn graph(&self) -> &Workflow {
        &self.graph
    }
}

#[pymethods]
impl PyWorkflow {
    #[new]
    #[pyo3(signature = (name, tasks=None, *, limits=None, on_success=None, on_failure=None))]
    fn new(
        name: &Bound<'_, PyAny>,
        tasks: Option<&Bound<'_, PyAny>>,
        limits: Option<&Bound<'_, PyAny>>,
        on_success: Option<&Bound<'_, PyAny>>,
        on_failure: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = name
            .downcast::<PyString>()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "workflow name must be a str, got {}",
                    type_name(name)
                ))
            })?
            .to_cow()?
            .into_owned();
        if name.contains('\0') {
            return Err(PyValueError::new_err(format!(
                "workflow name {name:?} contains a NUL character; databases cannot store it, remove it"
            )));
        }
        let limits = super::options::limit_keys("limits", limits)?;
        let roots = match tasks {
            Some(tasks) => task_ids(tasks)?,
            None => registry().ids().to_vec(),
        };
        let mut listed = HashSet::new();
        if let Some(repeated) = roots.iter().find(|id| !listed.insert(id.as_str())) {
            return Err(to_py_err(Error::from(WorkflowError::DuplicateTask {
                workflow: name,
                task: repeated.clone(),
            })));
        }
        let mut definitions = collect_with_dependencies(&name, &roots)?;
        for (kind, hook) in [
            (HookKind::Success, on_success),
            (HookKind::Failure, on_failure),
        ] {
            if let Some(hook) = hook.filter(|h| !h.is_none()) {
                let hook = hook_definition(&name, kind, hook, &definitions)?;
                definitions.push(hook);
            }
        }
        let graph = Workflow::new(
            name,
            definitions
                .iter()
                .map(|d| PythonTask::unbound(d.clone()))
                .collect(),
        )
        .map_err(|e| to_py_err(Error::from(e)))?
        .with_limits(limits);
        crate::model::subworkflows::check_nesting(graph.name(), &graph.plan())
            .map_err(|e| new_err(ErrorKind::Workflow, e))?;
        Ok(Self { graph })
    }

    /// Limit keys each execution holds from its first task's start to its end.
    #[getter]
    fn limits(&self) -> Vec<&str> {
        self.graph.limits().iter().map(|k| k.as_str()).collect()
    }

    /// The workflow's name.
    #[getter]
    fn name(&self) -> &str {
        self.graph.name()
    }

    /// Task ids in topological order.
    #[getter]
    fn task_ids(&self) -> Vec<&str> {
        self.graph.task_ids().collect()
    }

    /// A digest of the graph: the same tasks and edges give the same version.
    #[getter]
    fn version(&self) -> &str {
        self.graph.version()
    }

    fn __len__(&self) -> usize {
        self.graph.len()
    }

    /// The graph as a Mermaid flowchart.
    fn to_mermaid(&self) -> String {
        self.graph.to_mermaid()
    }

    /// The graph in Graphviz DOT.
    fn to_dot(&self) -> String {
        self.graph.to_dot()
    }

    /// A workflow of one registered task alone, its dependencies left out: runs the task, with
    /// its options, on a context its upstream tasks would have produced (for tests).
    #[staticmethod]
    #[pyo3(signature = (task, *, name=None))]
    fn of_task(task: &Bound<'_, PyAny>, name: Option<String>) -> PyResult<Self> {
        let id = task_id_of(task)?;
        let definition = collect_with_dependencies("of_task", std::slice::from_ref(&id))?
            .into_iter()
            .next()
            .expect("the task itself comes first");
        let py = task.py();
        let alone = TaskDefinition {
            id: definition.id.clone(),
            dependencies: Vec::new(),
            function: definition.function.clone_ref(py),
            is_async: definition.is_async,
            options: definition.options.clone(),
            retry_on: definition.retry_on.clone_ref(py),
        };
        let name = name.unwrap_or_else(|| format!("{id} (alone)"));
        let graph = Workflow::new(name, vec![PythonTask::unbound(Arc::new(alone))])
            .map_err(|e| to_py_err(Error::from(e)))?;
        Ok(Self { graph })
    }

    fn __repr__(&self) -> String {
        format!(
            "Workflow({:?}, tasks={:?}, version={:?})",
            self.graph.name(),
            self.task_ids(),
            self.graph.version()
        )
    }
}

/// The registered definitions of `roots` and of everything they transitively depend on.
/// The task `hook` given as `on_success` or `on_failure` (`kind`), as the workflow runs it:
/// without dependencies, once the execution's outcome is decided.
fn hook_definition(
    workflow: &str,
    kind: HookKind,
    hook: &Bound<'_, PyAny>,
    tasks: &[Arc<TaskDefinition>],
) -> PyResult<Arc<TaskDefinition>> {
    let id = task_id_of(hook)?;
    let argument = format!("on_{}", kind.as_str());
    if tasks.iter().any(|t| t.id == id) {
        return Err(new_err(
            ErrorKind::Workflow,
            format!("workflow '{workflow}': task '{id}' is given as {argument} and is also one of its tasks (or a hook already); a hook is a task of its own, run once the execution's outcome is decided"),
        ));
    }
    let definition = collect_with_dependencies(workflow, std::slice::from_ref(&id))?
        .into_iter()
        .next()
        .expect("the task itself comes first");
    if definition.options.map.is_some() || definition.options.subworkflow.is_some() {
        return Err(PyValueError::new_err(format!(
            "{argument}={id:?} is a mapped or sub-workflow task; a hook must be a plain @task"
        )));
    }
    let py = hook.py();
    Ok(Arc::new(TaskDefinition {
        id: definition.id.clone(),
        dependencies: Vec::new(),
        function: definition.function.clone_ref(py),
        is_async: definition.is_async,
        options: TaskOptions {
            hook: Some(kind),
            ..definition.options.clone()
        },
        retry_on: definition.retry_on.clone_ref(py),
    }))
}

fn collect_with_dependencies(
    workflow: &str,
    roots: &[String],
) -> PyResult<Vec<Arc<TaskDefinition>>> {
    let registry = registry();
    if let Some(unknown) = roots.iter().find(|root| registry.get(root).is_none()) {
        let known = registry.ids();
        let listed = if known.is_empty() {
            "no tasks are registered yet".to_string()
        } else {
            format!(
                "registered tasks: {}",
                known
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(new_err(
            ErrorKind::Workflow,
            format!("workflow '{workflow}' names unknown task '{unknown}'; decorate it with @task first ({listed})"),
        ));
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut collected = Vec::new();
    let mut pending: Vec<String> = roots.iter().rev().cloned().collect();
    while let Some(id) = pending.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        // Unknown dependencies are left out here; Workflow::new reports them naming both tasks.
        if let Some(definition) = registry.get(&id) {
            pending.extend(
                definition
                    .dependencies
                    .iter()
                    .rev()
                    .filter(|d| !seen.contains(*d))
                    .cloned(),
            );
            collected.push(definition);
        }
    }
    Ok(collected)
}
