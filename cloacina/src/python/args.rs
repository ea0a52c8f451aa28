//! Reading arguments from Python: which types each kind of number takes is decided here, the
//! range from the option's rule in `crate::limits`, so every option is checked once, alike; and
//! str arguments, whose errors never echo the text (it may be a URL holding a password).

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyLong, PyString};

use super::marshal::{repr, type_name};
use crate::limits::{Count, Number, Seconds};

/// The text of a str argument `name`: TypeError for another type (`expected` says what fits),
/// ValueError for a str holding a lone surrogate.
pub(crate) fn text<'a>(
    name: &str,
    expected: &str,
    value: &'a Bound<'_, PyAny>,
) -> PyResult<std::borrow::Cow<'a, str>> {
    value
        .downcast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} must be {expected}, got {}",
                type_name(value)
            ))
        })?
        .to_cow()
        .map_err(|_| {
            PyValueError::new_err(format!(
                "{name} is not valid Unicode text (it holds a lone surrogate)"
            ))
        })
}

/// A number of seconds (int or float) within `rule`'s range.
pub(crate) fn seconds(rule: &Seconds, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let seconds = real(rule.name, "a number of seconds (int or float)", value)?;
    rule.duration(seconds)
        .ok_or_else(|| out_of_range(rule.out_of_range(repr(value))))
}

/// Like [`seconds`], with None (or no argument) meaning no limit.
pub(crate) fn optional_seconds(
    rule: &Seconds,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Duration>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let seconds = real(
        rule.name,
        "a number of seconds (int or float) or None",
        value,
    )?;
    rule.duration(seconds)
        .map(Some)
        .ok_or_else(|| out_of_range(rule.out_of_range(repr(value))))
}

/// An int (not a bool, not a float) within `rule`'s range.
pub(crate) fn count(rule: &Count, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyLong>() {
        return Err(wrong_type(rule.name, "an int", value));
    }
    match value.extract::<i64>() {
        Ok(n) if rule.contains(i128::from(n)) => Ok(n as u64),
        _ => Err(out_of_range(rule.out_of_range(repr(value)))),
    }
}

/// A number (int or float) within `rule`'s range.
pub(crate) fn number(rule: &Number, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let n = real(rule.name, "a number (int or float)", value)?;
    if rule.contains(n) {
        Ok(n)
    } else {
        Err(out_of_range(rule.out_of_range(repr(value))))
    }
}

/// The value of an int or float (not a bool); an int beyond a float's range is infinite.
fn real(name: &str, expected: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyLong>() || value.is_instance_of::<PyFloat>())
    {
        return Err(wrong_type(name, expected, value));
    }
    Ok(value.extract::<f64>().unwrap_or(f64::INFINITY))
}

fn wrong_type(name: &str, expected: &str, value: &Bound<'_, PyAny>) -> PyErr {
    let hint = if value.is_instance_of::<PyBool>() {
        " (True and False are not numbers here)"
    } else {
        ""
    };
    PyTypeError::new_err(format!(
        "{name} must be {expected}, got {}{hint}",
        type_name(value)
    ))
}

fn out_of_range(message: String) -> PyErr {
    PyValueError::new_err(message)
}
