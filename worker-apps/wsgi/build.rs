//! Records where the Python this plugin is built against lives: an rpath to its shared
//! library (so the plugin loads without LD_LIBRARY_PATH) and its executable (the default
//! interpreter when no virtualenv is configured or active).

fn main() {
    let config = pyo3_build_config::get();
    if let Some(dir) = &config.lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let executable = config.executable.clone().unwrap_or_default();
    println!("cargo:rustc-env=FERRICORN_WSGI_PYTHON={executable}");
    let version = config.version;
    println!(
        "cargo:rustc-env=FERRICORN_WSGI_PYTHON_VERSION={}.{}",
        version.major, version.minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
