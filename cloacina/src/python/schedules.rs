//! Schedules in Python: the arguments of `UnifiedExecutor.schedule`, and schedules as dicts.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args;
use super::errors::{new_err, ErrorKind};
use super::json_text::json_to_py;
use super::marshal::context_from_py;
use super::results::iso;
use crate::context::Context;
use crate::database::schedules::Schedule;
use crate::executor::ScheduleOptions;
use crate::schedule::Catchup;

/// The options of `schedule()`, checked; a bad catch-up mode is a ValueError.
pub(crate) fn schedule_options(
    name: Option<&Bound<'_, PyAny>>,
    timezone: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
    catchup: &Bound<'_, PyAny>,
) -> PyResult<ScheduleOptions> {
    let name = match name.filter(|n| !n.is_none()) {
        Some(name) => Some(args::text("name", "a str or None", name)?.into_owned()),
        None => None,
    };
    let timezone = args::text("timezone", "a str such as \"UTC\"", timezone)?.into_owned();
    let catchup = args::text("catchup", "\"none\", \"latest\" or \"all\"", catchup)?;
    let catchup = Catchup::parse(&catchup).map_err(super::errors::to_py_err)?;
    let context = match context.filter(|c| !c.is_none()) {
        Some(c) => {
            context_from_py(c).map_err(|e| new_err(ErrorKind::Context, e.describe("context")))?
        }
        None => Context::new(),
    };
    Ok(ScheduleOptions {
        name,
        timezone,
        context,
        catchup,
    })
}

/// A schedule on its way to Python, converted to a dict when the GIL is held.
pub(crate) struct ScheduleRecord(pub Schedule);

impl IntoPy<PyObject> for ScheduleRecord {
    fn into_py(self, py: Python<'_>) -> PyObject {
        schedule_to_py(py, &self.0).unwrap_or_else(|err| err.into_value(py).into_py(py))
    }
}

fn schedule_to_py(py: Python<'_>, schedule: &Schedule) -> PyResult<PyObject> {
    let dict = PyDict::new_bound(py);
    dict.set_item("name", &schedule.name)?;
    dict.set_item("workflow_name", &schedule.workflow_name)?;
    dict.set_item("cron", &schedule.cron)?;
    dict.set_item("timezone", &schedule.timezone)?;
    dict.set_item("catchup", schedule.catchup.as_str())?;
    dict.set_item("context", json_to_py(py, &schedule.context.to_json())?)?;
    dict.set_item("paused", schedule.paused)?;
    dict.set_item("next_fire_time", iso(schedule.next_fire_time))?;
    dict.set_item("last_fire_time", iso(schedule.last_fire_time))?;
    dict.set_item(
        "last_execution_id",
        schedule.last_execution_id.map(|id| id.to_string()),
    )?;
    dict.set_item("created_at", iso(Some(schedule.created_at)))?;
    dict.set_item("updated_at", iso(Some(schedule.updated_at)))?;
    Ok(dict.into_any().unbind())
}
