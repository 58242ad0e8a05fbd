//! The gateway: loading a plugin (dlopen via libloading), checking its ABI, and
//! calling its init / handle / shutdown.
//!
//! Errors are one line naming the plugin and, for ABI mismatches, the expected and found
//! values; for a missing entry point, the symbol.

use ferricorn_sdk::abi::{
    self, FcAppDescriptor, FcEntryFn, FcField, FcRequest, FcResponder, FcStr,
};
use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A loaded plugin whose descriptor passed the ABI checks.
pub struct Plugin {
    /// Keeps the shared object mapped while the descriptor is used.
    _library: Library,
    /// A copy of the plugin's descriptor (its function pointers point into the library).
    descriptor: FcAppDescriptor,
    /// The path it was loaded from.
    pub path: PathBuf,
    /// The app's name from its descriptor.
    pub name: String,
}

/// Loads the plugin at `path`: dlopen with RTLD_NOW (unresolved symbols fail here), find
/// `ferricorn_app`, check the descriptor's `abi_version` and `size`.
///
/// `path` is a file path: a relative one is taken from the working directory (after
/// `chdir`), never searched for in the dynamic loader's library path. Errors give the
/// loader's own reason (dlerror(3): "invalid ELF header", "undefined symbol: ...").
pub fn load(path: &Path) -> Result<Plugin, String> {
    let shown = path.display();
    if !path.is_file() {
        return Err(format!("plugin {shown}: no such file"));
    }
    // dlopen(3) searches the library path for a name without a slash: make it absolute.
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // SAFETY: loading a shared object runs its initialisers; loading the configured plugin is
    // this server's purpose, and the operator chose the file.
    let library = unsafe { Library::open(Some(&file), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        format!("plugin {shown}: cannot load: {reason}")
    })?;
    let symbol_name = abi::ENTRY_SYMBOL;
    // SAFETY: the entry symbol's type is fixed by the ABI (`FcEntryFn`).
    let entry: Symbol<FcEntryFn> =
        unsafe { library.get(symbol_name.as_bytes()) }.map_err(|_| {
            format!(
                "plugin {shown}: missing entry symbol `{symbol_name}` (not a ferricorn plugin?)"
            )
        })?;
    // SAFETY: calling the plugin's entry point as the ABI defines it; it returns a pointer to
    // static data (or NULL).
    let raw = unsafe { entry() };
    if raw.is_null() {
        return Err(format!("plugin {shown}: `{symbol_name}` returned NULL"));
    }
    // SAFETY: a non-null descriptor pointer refers to static data inside the library, which
    // stays mapped while `library` lives. Every ABI version starts with two u32s (abi_version,
    // size); only those are read before the size is checked.
    let [found_version, found_size] = unsafe { std::ptr::read(raw as *const [u32; 2]) };
    if found_version != abi::ABI_VERSION {
        return Err(format!(
            "plugin {shown}: ABI version mismatch: expected {}, found {found_version}",
            abi::ABI_VERSION
        ));
    }
    // A plugin built before ABI 1.4 has a smaller descriptor: its 1.0 fields are required.
    let expected = FcAppDescriptor::SIZE_BEFORE_ATTACH as usize;
    if (found_size as usize) < expected {
        return Err(format!(
            "plugin {shown}: descriptor too small: expected at least {expected} bytes, found {found_size}"
        ));
    }
    for (field, offset) in [
        ("init", std::mem::offset_of!(FcAppDescriptor, init)),
        ("handle", std::mem::offset_of!(FcAppDescriptor, handle)),
        ("shutdown", std::mem::offset_of!(FcAppDescriptor, shutdown)),
    ] {
        // SAFETY: `offset` lies inside the `expected` bytes the plugin declared (checked above);
        // the field is read as a plain address, before any Rust fn pointer is formed from it.
        let address = unsafe { std::ptr::read((raw as *const u8).add(offset) as *const usize) };
        if address == 0 {
            return Err(format!(
                "plugin {shown}: descriptor field `{field}` is NULL"
            ));
        }
    }
    let descriptor = copy_descriptor(raw, found_size as usize);
    let name = if descriptor.name.is_null() {
        String::from("?")
    } else {
        // SAFETY: the ABI requires `name` to be a static NUL-terminated string.
        unsafe { CStr::from_ptr(descriptor.name) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(Plugin {
        _library: library,
        descriptor,
        path: path.to_path_buf(),
        name,
    })
}

/// The plugin's descriptor as the server's own (current) layout: the `size` bytes the plugin
/// declared (at least the ABI 1.0 fields, whose functions were checked non-NULL), and the
/// fields appended since as NULL (`None`).
fn copy_descriptor(raw: *const FcAppDescriptor, size: usize) -> FcAppDescriptor {
    let mut copy = std::mem::MaybeUninit::<FcAppDescriptor>::zeroed();
    let size = size.min(std::mem::size_of::<FcAppDescriptor>());
    // SAFETY: the plugin's descriptor has at least `size` readable bytes (its own size, from
    // static data in the mapped library); `copy` has room for them and does not overlap it.
    // The bytes not copied stay zero: the later fields are Option<fn>, for which zero is None;
    // the 1.0 function fields are within `size` and non-NULL (checked by the caller).
    unsafe {
        std::ptr::copy_nonoverlapping(raw.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), size);
        copy.assume_init()
    }
}

/// An initialised app: the plugin plus the state its init returned.
pub struct App {
    plugin: Plugin,
    state: *mut c_void,
    /// Serialises `handle` for plugins that are not thread-safe.
    serial: Option<Mutex<()>>,
    /// Set once shutdown was called.
    shut_down: AtomicBool,
}

// SAFETY: the ABI lets the server call `handle` from any thread (serialised through `serial`
// when the plugin does not declare FC_APP_THREAD_SAFE); the state pointer is opaque to us.
unsafe impl Send for App {}
// SAFETY: as above; shared access only calls `handle`, which the plugin allows concurrently
// or which `serial` serialises.
unsafe impl Sync for App {}

const INIT_ERROR_CAPACITY: usize = 1024;

/// Calls the plugin's init with `config` (`app.config`). Errors carry the app's message.
pub fn init(plugin: Plugin, config: &[(String, String)]) -> Result<App, String> {
    let fields: Vec<FcField> = config
        .iter()
        .map(|(k, v)| FcField {
            name: FcStr::new(k.as_bytes()),
            value: FcStr::new(v.as_bytes()),
        })
        .collect();
    if let Some(attach) = plugin.descriptor.attach {
        // SAFETY: attach (ABI 1.4) takes the server's functions, a static that lives as long
        // as the process.
        unsafe { attach(&crate::http::ws::hub::SERVER) };
    }
    let mut state: *mut c_void = std::ptr::null_mut();
    let mut err = vec![0u8; INIT_ERROR_CAPACITY];
    // SAFETY: init is called once with valid config fields (alive for the call), a valid
    // out-pointer and an error buffer of the stated capacity, as the ABI requires.
    let status = unsafe {
        (plugin.descriptor.init)(
            fields.as_ptr(),
            fields.len(),
            &mut state,
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if status != abi::FC_OK {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        let message = String::from_utf8_lossy(&err[..end]);
        let message = if message.is_empty() {
            "no message".into()
        } else {
            message
        };
        return Err(format!(
            "app {} ({}): init failed (status {status}): {message}",
            plugin.name,
            plugin.path.display()
        ));
    }
    let serial = (plugin.descriptor.flags & abi::FC_APP_THREAD_SAFE == 0).then(|| Mutex::new(()));
    Ok(App {
        plugin,
        state,
        serial,
        shut_down: AtomicBool::new(false),
    })
}

impl App {
    /// The app's name.
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// Calls the plugin's handle for one request; returns its status.
    pub fn handle(&self, request: &FcRequest, responder: &FcResponder) -> i32 {
        let _guard = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        // SAFETY: state came from this plugin's init; request and responder are valid for the
        // call; concurrency follows the plugin's declared flags.
        unsafe { (self.plugin.descriptor.handle)(self.state, request, responder) }
    }

    /// Whether the app takes WebSocket connections (its descriptor has `ws_message`).
    pub fn takes_websocket(&self) -> bool {
        self.plugin.descriptor.ws_message.is_some()
    }

    /// Calls the plugin's `ws_message` with one whole message of WebSocket `conn`
    /// (`opcode`: FC_WS_TEXT or FC_WS_BINARY); returns its status (FC_OK when the app has no
    /// such callback).
    pub fn ws_message(&self, conn: u64, opcode: i32, data: &[u8]) -> i32 {
        let Some(callback) = self.plugin.descriptor.ws_message else {
            return abi::FC_OK;
        };
        let _guard = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        // SAFETY: state came from this plugin's init; `data` is valid for the call; the
        // server calls it one message at a time per connection, as ABI 1.4 says.
        unsafe { callback(self.state, conn, opcode, data.as_ptr(), data.len()) }
    }

    /// Calls the plugin's `ws_close` for WebSocket `conn`, ended with `code` and `reason`.
    pub fn ws_close(&self, conn: u64, code: u16, reason: &[u8]) {
        let Some(callback) = self.plugin.descriptor.ws_close else {
            return;
        };
        let _guard = self
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        // SAFETY: as for ws_message; `reason` is valid for the call.
        unsafe { callback(self.state, conn, i32::from(code), FcStr::new(reason)) }
    }

    /// Calls the plugin's shutdown; later calls do nothing. Call it only when no request is
    /// being handled.
    pub fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // SAFETY: called once (guarded above) with the state init returned; the worker calls it
        // only after its connections are finished, so no handle call is running.
        unsafe { (self.plugin.descriptor.shutdown)(self.state) }
    }
}

/// Loads, initialises and shuts down the app in this process: the trial load that
/// `--check-config` and reloads run in a child. Returns the app's name.
pub fn trial_load(path: &Path, config: &[(String, String)]) -> Result<String, String> {
    let app = init(load(path)?, config)?;
    let name = app.name().to_string();
    app.shutdown();
    Ok(name)
}
