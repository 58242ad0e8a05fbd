//! The WSGI environ of a request (PEP 3333 "environ Variables", the CGI variables of
//! RFC 3875 section 4.1): every value a native string, bytes read as latin-1 (PATH_INFO is
//! the percent-decoded path, any byte).

use crate::streams::{Errors, FileWrapper, Input};
use ferricorn_sdk::{abi, Request};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::{ffi, intern};

/// What every environ of the worker shares.
pub struct Shared {
    /// `wsgi.version`: (1, 0).
    version: Py<PyTuple>,
    /// `wsgi.errors`: the server's error log.
    errors: Py<Errors>,
    /// `wsgi.file_wrapper`: the FileWrapper type.
    file_wrapper: Py<PyType>,
    /// `SERVER_SOFTWARE`: `ferricorn/VERSION`.
    software: Py<PyString>,
}

impl Shared {
    /// Builds the shared values. Errors: Python's.
    pub fn new(py: Python<'_>) -> PyResult<Shared> {
        Ok(Shared {
            version: PyTuple::new(py, [1, 0])?.unbind(),
            errors: Py::new(py, Errors)?,
            file_wrapper: py.get_type::<FileWrapper>().unbind(),
            software: PyString::new(py, concat!("ferricorn/", env!("CARGO_PKG_VERSION"))).unbind(),
        })
    }
}

/// `bytes` read as latin-1: a str of the same length whose code points are the bytes.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe `bytes`; a NULL result is turned into the
    // pending Python exception by from_owned_ptr_or_err.
    unsafe {
        let text = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr_or_err(py, text)
    }
}

/// `HTTP_` and the field name upper-cased with `-` as `_` (CGI's meta-variable name).
fn http_key(name: &[u8], key: &mut Vec<u8>) {
    key.clear();
    key.extend_from_slice(b"HTTP_");
    key.extend(name.iter().map(|&b| match b {
        b'-' => b'_',
        _ => b.to_ascii_uppercase(),
    }));
}

/// The environ of `req`, with `input` as `wsgi.input`. Errors: Python's (memory).
pub fn build<'py>(
    py: Python<'py>,
    shared: &Shared,
    req: &Request<'_>,
    input: Bound<'py, Input>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    let text = |bytes: &[u8]| latin1(py, bytes);
    env.set_item(
        intern!(py, "REQUEST_METHOD"),
        text(req.method().as_bytes())?,
    )?;
    env.set_item(intern!(py, "SCRIPT_NAME"), text(req.script_name())?)?;
    env.set_item(intern!(py, "PATH_INFO"), text(req.path_info())?)?;
    env.set_item(
        intern!(py, "QUERY_STRING"),
        text(req.query_string().as_bytes())?,
    )?;
    let raw_uri = text(req.raw_uri())?;
    env.set_item(intern!(py, "RAW_URI"), &raw_uri)?;
    env.set_item(intern!(py, "REQUEST_URI"), raw_uri)?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        text(req.server_protocol().as_bytes())?,
    )?;
    env.set_item(intern!(py, "SERVER_NAME"), text(req.server_name())?)?;
    env.set_item(intern!(py, "SERVER_PORT"), text(req.server_port())?)?;
    env.set_item(intern!(py, "REMOTE_ADDR"), text(req.remote_addr())?)?;
    env.set_item(intern!(py, "REMOTE_PORT"), text(req.remote_port())?)?;
    env.set_item(intern!(py, "SERVER_SOFTWARE"), shared.software.bind(py))?;
    if let Some(content_type) = req.content_type() {
        env.set_item(intern!(py, "CONTENT_TYPE"), text(content_type)?)?;
    }
    if let Some(length) = req.content_length() {
        env.set_item(intern!(py, "CONTENT_LENGTH"), length.to_string())?;
    }
    let mut key = Vec::with_capacity(64);
    for (name, value) in req.headers() {
        if name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"content-length")
        {
            continue;
        }
        http_key(name, &mut key);
        let key = text(&key)?;
        let value = match env.get_item(&key)? {
            // A repeated field: its values joined with commas (RFC 9110 section 5.3).
            Some(before) => {
                let mut joined: Vec<u8> = before
                    .extract::<String>()?
                    .chars()
                    .map(|c| c as u8)
                    .collect();
                joined.push(b',');
                joined.extend_from_slice(value);
                text(&joined)?
            }
            None => text(value)?,
        };
        env.set_item(key, value)?;
    }
    let flags = req.flags();
    env.set_item(intern!(py, "wsgi.version"), shared.version.bind(py))?;
    env.set_item(intern!(py, "wsgi.url_scheme"), text(req.url_scheme())?)?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    env.set_item(intern!(py, "wsgi.errors"), shared.errors.bind(py))?;
    env.set_item(
        intern!(py, "wsgi.multithread"),
        flags & abi::FC_REQ_MULTITHREAD != 0,
    )?;
    env.set_item(
        intern!(py, "wsgi.multiprocess"),
        flags & abi::FC_REQ_MULTIPROCESS != 0,
    )?;
    env.set_item(
        intern!(py, "wsgi.run_once"),
        flags & abi::FC_REQ_RUN_ONCE != 0,
    )?;
    env.set_item(
        intern!(py, "wsgi.file_wrapper"),
        shared.file_wrapper.bind(py),
    )?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::http_key;

    #[test]
    fn field_names_become_cgi_meta_variables() {
        let mut key = Vec::new();
        http_key(b"X-Forwarded-For", &mut key);
        assert_eq!(key, b"HTTP_X_FORWARDED_FOR");
        http_key(b"host", &mut key);
        assert_eq!(key, b"HTTP_HOST");
    }
}
