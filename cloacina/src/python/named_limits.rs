//! Named limits in Python: the arguments of `set_limit`, and limits as dicts.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use super::args;
use crate::database::named_limits::LimitInfo;
use crate::model::limits::Limit;

/// The arguments of `set_limit`, checked: a wrong type is a TypeError, a bad value a ValueError
/// naming it.
pub(crate) fn limit_arg(
    name: &Bound<'_, PyAny>,
    concurrency: Option<&Bound<'_, PyAny>>,
    rate: Option<&Bound<'_, PyAny>>,
    per: &Bound<'_, PyAny>,
) -> PyResult<Limit> {
    let name = args::text("name", "a str such as \"openai\" or \"tenant:*\"", name)?;
    let whole = |what: &str, value: Option<&Bound<'_, PyAny>>| -> PyResult<Option<i64>> {
        match value.filter(|v| !v.is_none()) {
            None => Ok(None),
            Some(v) if v.is_instance_of::<PyBool>() => Err(PyTypeError::new_err(format!(
                "{what} must be an int or None, not a bool"
            ))),
            Some(v) => v.extract::<i64>().map(Some).map_err(|_| {
                PyTypeError::new_err(format!(
                    "{what} must be an int or None, not {}",
                    type_name(v)
                ))
            }),
        }
    };
    let concurrency = whole("concurrency", concurrency)?;
    let rate = whole("rate", rate)?;
    if per.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "per must be a number of seconds, not a bool",
        ));
    }
    let per: f64 = per.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "per must be a number of seconds, not {}",
            type_name(per)
        ))
    })?;
    Limit::new(&name, concurrency, rate, per).map_err(PyValueError::new_err)
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A limit on its way to Python, converted to a dict when the GIL is held.
pub(crate) struct LimitRecord(pub LimitInfo);

impl IntoPy<PyObject> for LimitRecord {
    fn into_py(self, py: Python<'_>) -> PyObject {
        limit_to_py(py, &self.0).unwrap_or_else(|err| err.into_value(py).into_py(py))
    }
}

fn limit_to_py(py: Python<'_>, info: &LimitInfo) -> PyResult<PyObject> {
    let dict = PyDict::new_bound(py);
    dict.set_item("name", &info.limit.name)?;
    dict.set_item("concurrency", info.limit.concurrency)?;
    dict.set_item("rate", info.limit.rate)?;
    dict.set_item("per", info.limit.per.as_secs_f64())?;
    dict.set_item("running", info.running)?;
    dict.set_item("waiting", info.waiting)?;
    Ok(dict.into_py(py))
}
