//! The `ferricorn` binary: see the README and `ferricorn --help`.

fn main() {
    ferricorn::master::upgrade::save_args();
    std::process::exit(ferricorn::cli::main());
}
