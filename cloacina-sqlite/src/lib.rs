//! The `cloacina_sqlite` extension module: Cloacina's Python API on SQLite.

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    cloacina::python::register(module, cloacina::BackendKind::Sqlite)
}
