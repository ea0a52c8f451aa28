//! The `cloacina_postgres` extension module: Cloacina's Python API on PostgreSQL.

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    cloacina::python::register(module, cloacina::BackendKind::Postgres)
}
