//! The `ferricorn` binary: see the README and `ferricorn --help`.

fn main() {
    std::process::exit(ferricorn::cli::main());
}
