//! Build script of the ferricorn package (it only serves the tests): sets
//! the `conformance_corpus` cfg when gunicorn's request corpus (`../shared/conformance`) is
//! beside the checkout, so that the conformance tests run then and are reported as ignored
//! (skipped, with the reason) otherwise, never counted as passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(conformance_corpus)");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/manifest.json");
    println!("cargo::rerun-if-changed={}", manifest.display());
    if manifest.is_file() {
        println!("cargo::rustc-cfg=conformance_corpus");
    }
}
