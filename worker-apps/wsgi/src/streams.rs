//! The file-like objects of the environ: `wsgi.input` (the request body, read from the
//! server as the app asks, never buffered whole), `wsgi.errors` (the server's error log) and
//! `wsgi.file_wrapper` (PEP 3333 "Optional Platform-Specific File Handling").

use crate::current;
use ferricorn_sdk::Level;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::io;

pyo3::create_exception!(
    ferricorn_wsgi,
    ClientDisconnected,
    PyOSError,
    "The client went away (or stalled past `timeout`) while the app read its body or wrote the response."
);

/// The Python exception for an I/O error of the server's responder.
pub fn io_error(error: io::Error) -> PyErr {
    match error.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::TimedOut => {
            ClientDisconnected::new_err(error.to_string())
        }
        _ => PyOSError::new_err(error.to_string()),
    }
}

/// The error of an object used outside its request.
pub fn gone(what: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{what} used outside the request it belongs to (after the response, or on another thread)"
    ))
}

/// Bytes asked of the server at a time when the app reads without a size.
const CHUNK: usize = 64 * 1024;

/// `wsgi.input`: the request body, de-chunked by the server; `read(n)` reads up to n bytes,
/// `read()` the rest, `readline(size)`, `readlines(hint)` and iteration read lines. The GIL is
/// released while the server reads (and answers Expect: 100-continue, at the first read).
#[pyclass(module = "ferricorn_wsgi")]
pub struct Input {
    /// The request this body belongs to.
    serial: u64,
    /// Bytes read from the server not yet given to the app: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// The server said the body ended.
    eof: bool,
}

impl Input {
    /// The body of request `serial`.
    pub fn new(serial: u64) -> Input {
        Input {
            serial,
            buf: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    /// Buffered bytes.
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads up to `want` more bytes (8 KiB at least, 1 MiB at most) from the server into
    /// the buffer; false at the end of the body.
    fn fill(&mut self, py: Python<'_>, want: usize) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + want.clamp(8192, 1 << 20), 0);
        let serial = self.serial;
        let target = &mut self.buf[start..];
        let read = py.detach(|| current::with(serial, |ex| ex.req.read_body(target)));
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.buf.truncate(start);
                return Err(io_error(e));
            }
            Err(current::Gone) => {
                self.buf.truncate(start);
                return Err(gone("wsgi.input"));
            }
        };
        self.buf.truncate(start + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next `n` buffered bytes as a bytes object.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.available());
        let bytes = PyBytes::new(py, &self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        bytes
    }

    /// One line of at most `limit` bytes (its newline included), or less at the end.
    fn line<'py>(&mut self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            let window = &self.buf[self.pos + scanned..];
            let room = limit - scanned.min(limit);
            if let Some(at) = window.iter().take(room).position(|&b| b == b'\n') {
                return Ok(self.take(py, scanned + at + 1));
            }
            scanned = self.available();
            if scanned >= limit || !self.fill(py, 8192)? {
                return Ok(self.take(py, limit));
            }
        }
    }
}

/// A size argument: None or negative means "no limit".
fn limit(size: Option<isize>) -> usize {
    size.and_then(|s| usize::try_from(s).ok())
        .unwrap_or(usize::MAX)
}

#[pymethods]
impl Input {
    /// Up to `size` bytes (all that is left when `size` is None or negative); fewer only at
    /// the end of the body.
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let size = limit(size);
        while self.available() < size {
            let want = (size - self.available()).min(CHUNK.max(self.available()));
            if !self.fill(py, want)? {
                break;
            }
        }
        Ok(self.take(py, size))
    }

    /// The next line (up to and including b"\n"), at most `size` bytes; b"" at the end.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.line(py, limit(size))
    }

    /// The remaining lines; stops once `hint` bytes were read (when `hint` is positive).
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit(hint.filter(|h| *h > 0));
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.line(py, usize::MAX)?;
            if line.as_bytes().is_empty() {
                return Ok(lines);
            }
            total += line.as_bytes().len();
            lines.push(line);
            if total >= hint {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, usize::MAX)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

/// `wsgi.errors`: text written here goes to the server's error log (one entry per write,
/// trailing newlines dropped), or to stderr outside a request.
#[pyclass(module = "ferricorn_wsgi")]
pub struct Errors;

impl Errors {
    fn log(text: &str) {
        let message = text.trim_end_matches(['\n', '\r']);
        if message.is_empty() {
            return;
        }
        if current::with_any(|ex| ex.res.log(Level::Error, message)).is_err() {
            eprintln!("{message}");
        }
    }
}

#[pymethods]
impl Errors {
    /// Logs `text`; returns its length, as a text file's write does.
    fn write(&self, text: &str) -> usize {
        Errors::log(text);
        text.chars().count()
    }

    /// Logs each string of `lines`.
    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            Errors::log(line?.extract::<&str>()?);
        }
        Ok(())
    }

    /// Nothing to do: every write is logged at once.
    fn flush(&self) {}
}

/// `wsgi.file_wrapper(filelike, block_size=8192)`: iterates over `filelike.read(block_size)`
/// until it returns b""; `close()` closes the file. The server sends a regular file with
/// sendfile(2) where it can.
#[pyclass(module = "ferricorn_wsgi")]
pub struct FileWrapper {
    /// The file-like object.
    pub filelike: Py<PyAny>,
    /// Bytes per read.
    pub block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size = 8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    /// Closes the file, if it has a `close`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let file = self.filelike.bind(py);
        if file.hasattr("close")? {
            file.call_method0("close")?;
        }
        Ok(())
    }
}
