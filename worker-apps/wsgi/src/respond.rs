//! Running the application for one request (PEP 3333 "The Server/Gateway Side"):
//! `start_response` (status line, latin-1 header list, the `exc_info` rules, the `write`
//! callable), the response iterable (bytes only, empty items skipped, sent item by item
//! unless it is a list or tuple, `close()` always called), and errors as gunicorn reports
//! them (500 and the traceback in the error log, or a cut response once the body started).

use crate::current::{self, Exchange};
use crate::streams::{gone, io_error, ClientDisconnected, FileWrapper, Input};
use crate::{environ, Wsgi};
use ferricorn_sdk::{Error, HandlerResult, Level, Logged, Request, Response};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// The status line and header fields the app gave, as bytes for the server.
struct Head {
    status: u16,
    reason: Vec<u8>,
    fields: Fields,
    /// The app gave a Content-Length.
    has_length: bool,
}

/// `start_response` of one request, and the response state it shares with `write` and the
/// iteration over the result.
#[pyclass(module = "ferricorn_wsgi")]
pub struct StartResponse {
    serial: u64,
    /// The last head the app gave, until it is sent.
    head: Option<Head>,
    /// start_response was called.
    called: bool,
    /// The head went to the server (the first body byte was written, or the response ended),
    /// or is in `deferred`.
    sent: bool,
    /// Bytes the app's Content-Length still expects (None: it gave none).
    expected: Option<u64>,
    /// A whole small response kept to be handed to the server once the GIL is released.
    deferred: Option<Deferred>,
}

/// A complete response (head and at most [`DEFER_LIMIT`] body bytes) handed to the server
/// after Python is done with the request, without the GIL.
pub struct Deferred {
    head: Head,
    body: Vec<u8>,
}

/// Body bytes of a complete response that are copied to be sent without the GIL.
const DEFER_LIMIT: usize = 64 * 1024;

/// A str that must be latin-1 (a WSGI "native string"), as bytes. Errors: TypeError (not a
/// str), ValueError (a character past U+00FF, or CR, LF or NUL).
fn latin1_bytes(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let text = value
        .cast::<PyString>()
        .map_err(|_| {
            let kind = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            PyTypeError::new_err(format!("{what} must be a str, not {kind}: {value}"))
        })?
        .to_cow()?;
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        let code = u32::from(c);
        if code > 0xff {
            return Err(PyValueError::new_err(format!(
                "{what} is not latin-1: {text:?}"
            )));
        }
        if matches!(c, '\r' | '\n' | '\0') {
            return Err(PyValueError::new_err(format!(
                "{what} contains CR, LF or NUL: {text:?}"
            )));
        }
        bytes.push(code as u8);
    }
    Ok(bytes)
}

/// Parses "NNN Reason" (PEP 3333's status string). Errors: TypeError, ValueError.
fn parse_status(status: &Bound<'_, PyAny>) -> PyResult<(u16, Vec<u8>)> {
    let bytes = latin1_bytes(status, "the status")?;
    let code = bytes
        .get(..3)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u16>().ok())
        .filter(|c| (200..=999).contains(c))
        .filter(|_| bytes.len() == 3 || bytes[3] == b' ');
    let Some(code) = code else {
        return Err(PyValueError::new_err(format!(
            "the status must be a code from 200 to 999 and a reason phrase, like \"200 OK\": {:?}",
            String::from_utf8_lossy(&bytes)
        )));
    };
    let reason = bytes.get(4..).unwrap_or_default().to_vec();
    Ok((code, reason))
}

/// Header fields as (name, value) bytes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The header list: (name, value) tuples of str; and whether it has a Content-Length.
/// Errors: TypeError, ValueError.
fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<(Fields, bool)> {
    let list = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the headers must be a list of (name, value) tuples: {headers}"
        ))
    })?;
    let mut fields = Vec::with_capacity(list.len());
    let mut has_length = false;
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(format!("a header must be a (name, value) tuple: {item}"))
            })?;
        let name = latin1_bytes(&pair.get_item(0)?, "a header name")?;
        let value = latin1_bytes(&pair.get_item(1)?, "a header value")?;
        has_length |= name.eq_ignore_ascii_case(b"content-length");
        fields.push((name, value));
    }
    Ok((fields, has_length))
}

impl StartResponse {
    /// Sends the head (if not sent yet) and `data`, flushing when `flush`, without the GIL.
    /// Errors: no start_response yet (AssertionError), the client went away
    /// (ClientDisconnected), the request is over (ValueError).
    fn send(&mut self, py: Python<'_>, data: &[u8], flush: bool) -> PyResult<()> {
        let head = if self.sent {
            None
        } else {
            let head = self.head.take().ok_or_else(|| {
                PyAssertionError::new_err(
                    "the application wrote the body before calling start_response",
                )
            })?;
            self.sent = true;
            Some(head)
        };
        if let Some(expected) = self.expected.as_mut() {
            *expected = expected.saturating_sub(data.len() as u64);
        }
        let serial = self.serial;
        let done = py.detach(|| {
            current::with(serial, |ex| -> std::io::Result<()> {
                if let Some(head) = &head {
                    start(ex.res, head)?;
                }
                if !data.is_empty() {
                    ex.res.write(data)?;
                }
                if flush {
                    ex.res.flush()?;
                }
                Ok(())
            })
        });
        match done {
            Ok(result) => result.map_err(io_error),
            Err(current::Gone) => Err(gone("write")),
        }
    }

    /// Keeps the head and `body`, the whole response, to be sent once the GIL is released
    /// (the response is complete: no block is held back). False (nothing done) when the head
    /// was sent already or `body` is larger than [`DEFER_LIMIT`].
    fn defer(&mut self, body: &[&[u8]]) -> bool {
        let length: usize = body.iter().map(|b| b.len()).sum();
        if self.sent || length > DEFER_LIMIT {
            return false;
        }
        let Some(head) = self.head.take() else {
            return false;
        };
        self.sent = true;
        self.deferred = Some(Deferred {
            head,
            body: body.concat(),
        });
        true
    }

    /// Adds Content-Length: `length` unless the app gave one.
    fn set_length(&mut self, length: usize) {
        if let Some(head) = self.head.as_mut().filter(|h| !h.has_length) {
            head.fields
                .push((b"Content-Length".to_vec(), length.to_string().into_bytes()));
            head.has_length = true;
        }
    }
}

/// Hands `head` to the server.
fn start(res: &mut Response<'_>, head: &Head) -> std::io::Result<()> {
    let fields = head
        .fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()));
    res.start_raw(head.status, &head.reason, fields)
}

#[pymethods]
impl StartResponse {
    /// start_response(status, response_headers, exc_info=None) -> write
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let mut this = slf.try_borrow_mut()?;
            match exc_info {
                Some(info) if this.sent => {
                    // PEP 3333: the head is out; re-raise the app's exception.
                    return Err(PyErr::from_value(info.get_item(1)?));
                }
                None if this.called => {
                    return Err(PyAssertionError::new_err(
                        "start_response called a second time without exc_info",
                    ));
                }
                _ => {}
            }
            let (status, reason) = parse_status(status)?;
            let (fields, has_length) = parse_headers(headers)?;
            this.expected = fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok());
            this.head = Some(Head {
                status,
                reason,
                fields,
                has_length,
            });
            this.called = true;
        }
        slf.getattr("write")
    }

    /// The `write` callable start_response returns: sends `data` at once.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        self.send(py, bytes.as_bytes(), true)
    }
}

/// The type name of `value`, for messages.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A body item as bytes. Errors: TypeError naming the item's type.
fn body_item<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the response iterable must yield bytes, not {}: {:.60}",
            type_name(item),
            item.to_string()
        ))
    })
}

/// Sends the response iterable `result`. A list or tuple is sent whole (with a
/// Content-Length unless the app gave one); any other iterable item by item, each flushed
/// before the next is asked for (PEP 3333: no block is held back) unless it completes the
/// app's Content-Length. A small complete response is deferred: handed to the server after
/// the GIL is released.
fn send_body(
    py: Python<'_>,
    start: &Bound<'_, StartResponse>,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if send_file(py, start, &wrapper.borrow())? {
            return Ok(());
        }
    }
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(list) = result.cast::<PyList>() {
        Some(list.iter().collect())
    } else if let Ok(tuple) = result.cast::<PyTuple>() {
        Some(tuple.iter().collect())
    } else {
        None
    };
    if let Some(items) = items {
        let mut pieces = Vec::with_capacity(items.len());
        for item in &items {
            pieces.push(body_item(item)?.as_bytes());
        }
        let mut start = start.try_borrow_mut()?;
        if !start.sent {
            start.set_length(pieces.iter().map(|p| p.len()).sum());
            if start.defer(&pieces) {
                return Ok(());
            }
        }
        for bytes in pieces.into_iter().filter(|b| !b.is_empty()) {
            start.send(py, bytes, false)?;
        }
        return Ok(());
    }
    // The app's generator may call start_response (or write) between items: no borrow of
    // `start` is held while it runs.
    for item in result.try_iter()? {
        let item = item?;
        let bytes = body_item(&item)?.as_bytes();
        if bytes.is_empty() {
            continue;
        }
        let mut start = start.try_borrow_mut()?;
        let completes = start.expected == Some(bytes.len() as u64);
        if !(completes && start.defer(&[bytes])) {
            start.send(py, bytes, !completes)?;
        }
    }
    Ok(())
}

/// The size of regular file `fd`, if it is one.
fn regular_file_size(fd: i32) -> Option<u64> {
    // SAFETY: an all-zero stat is a valid value of the plain C struct; fstat only writes
    // into it, and a bad descriptor only makes it fail.
    let (done, stat) = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut stat), stat)
    };
    (done == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFREG)
        .then(|| u64::try_from(stat.st_size).unwrap_or(0))
}

/// Sends the file of a `wsgi.file_wrapper` from its current position to its end with the
/// server's sendfile(2), with a Content-Length unless the app gave one. False (nothing sent
/// but perhaps the head) when the object has no descriptor of a regular file or the server
/// cannot (TLS): the caller iterates over the wrapper instead.
fn send_file(
    py: Python<'_>,
    start: &Bound<'_, StartResponse>,
    wrapper: &FileWrapper,
) -> PyResult<bool> {
    let file = wrapper.filelike.bind(py);
    let Some(fd) = file
        .call_method0("fileno")
        .and_then(|f| f.extract::<i32>())
        .ok()
    else {
        return Ok(false);
    };
    let Some(size) = regular_file_size(fd) else {
        return Ok(false);
    };
    let offset: u64 = file
        .call_method0("tell")
        .and_then(|t| t.extract())
        .unwrap_or(0);
    let remaining = size.saturating_sub(offset);
    let mut start = start.try_borrow_mut()?;
    if !start.sent {
        start.set_length(usize::try_from(remaining).unwrap_or(usize::MAX));
    }
    start.send(py, b"", false)?;
    let serial = start.serial;
    let sent = py.detach(|| current::with(serial, |ex| ex.res.sendfile(fd, offset, remaining)));
    match sent {
        Ok(Ok(Some(n))) => {
            if let Some(expected) = start.expected.as_mut() {
                *expected = expected.saturating_sub(n);
            }
            Ok(true)
        }
        Ok(Ok(None)) => Ok(false),
        Ok(Err(e)) => Err(io_error(e)),
        Err(current::Gone) => Err(gone("wsgi.file_wrapper")),
    }
}

/// Calls `result.close()` if it has one; an exception there is logged.
fn close(py: Python<'_>, app: &Wsgi, serial: u64, result: &Bound<'_, PyAny>) {
    let closed = result
        .getattr_opt(pyo3::intern!(py, "close"))
        .and_then(|close| close.map(|c| c.call0()).transpose());
    if let Err(e) = closed {
        log_error(py, app, serial, "Error closing the response iterable", &e);
    }
}

/// Logs `e` with its traceback as one error-log entry headed by `title`.
fn log_error(py: Python<'_>, app: &Wsgi, serial: u64, title: &str, e: &PyErr) {
    let text = app
        .support
        .bind(py)
        .call_method1("format_error", (e.value(py), e.traceback(py)))
        .and_then(|t| t.extract::<String>())
        .unwrap_or_else(|_| e.to_string());
    let message = format!("{title}\n{text}");
    if current::with(serial, |ex| ex.res.log(Level::Error, &message)).is_err() {
        eprintln!("{message}");
    }
}

/// The request target of request `serial`, for an error message (made only then).
fn uri(serial: u64) -> String {
    current::with(serial, |ex| {
        String::from_utf8_lossy(ex.req.raw_uri()).into_owned()
    })
    .unwrap_or_default()
}

/// Runs the app for the current request and sends its response, or returns it to be sent
/// without the GIL when it is small and complete.
fn run(py: Python<'_>, app: &Wsgi, serial: u64) -> Result<Option<Deferred>, Error> {
    let input = Bound::new(py, Input::new(serial))?;
    let environ = current::with(serial, |ex| environ::build(py, &app.shared, ex.req, input))
        .map_err(|_| Logged)??;
    let start = Bound::new(
        py,
        StartResponse {
            serial,
            head: None,
            called: false,
            sent: false,
            expected: None,
            deferred: None,
        },
    )?;
    let outcome = app
        .app
        .bind(py)
        .call1((environ, &start))
        .and_then(|result| {
            let sent = send_body(py, &start, &result);
            close(py, app, serial, &result);
            sent
        })
        .and_then(|()| {
            let mut start = start.try_borrow_mut()?;
            if start.sent {
                return Ok(());
            }
            if !start.called {
                return Err(PyAssertionError::new_err(
                    "the application returned without calling start_response",
                ));
            }
            if !start.defer(&[]) {
                start.send(py, b"", false)?;
            }
            Ok(())
        });
    match outcome {
        Ok(()) => Ok(start
            .try_borrow_mut()
            .ok()
            .and_then(|mut s| s.deferred.take())),
        Err(e) if e.is_instance_of::<ClientDisconnected>(py) => {
            let message = format!("client went away during {}: {}", uri(serial), e.value(py));
            let _ = current::with(serial, |ex| ex.res.log(Level::Info, &message));
            Err(Logged.into())
        }
        Err(e) => {
            log_error(
                py,
                app,
                serial,
                &format!("Error handling request {}", uri(serial)),
                &e,
            );
            Err(Logged.into())
        }
    }
}

/// Serves one request with `app`: the GIL is held while Python runs and released while the
/// server reads or writes.
pub fn serve(app: &Wsgi, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
    let mut exchange = Exchange { req, res };
    current::enter(&mut exchange, |serial| {
        let deferred = Python::attach(|py| run(py, app, serial))?;
        let Some(response) = deferred else {
            return Ok(());
        };
        current::with(serial, |ex| -> std::io::Result<()> {
            start(ex.res, &response.head)?;
            if response.body.is_empty() {
                return Ok(());
            }
            ex.res.write(&response.body)
        })
        .map_err(|_| Logged)??;
        Ok(())
    })
}
