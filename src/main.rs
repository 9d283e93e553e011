//! The `coffer` binary: parse arguments, run the command, map the outcome to an exit code.
//! 0 success, 1 a check found problems, 2 a usage or operational error (one line on stderr).

fn main() {
    std::process::exit(coffer::cli::main());
}
