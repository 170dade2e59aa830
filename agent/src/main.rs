//! `faultline`: the per-node agent. See README.md for what it does and how to run it;
//! everything lives in the `faultline_agent` library, this file only hands over to its CLI.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    faultline_agent::cli::main()
}
