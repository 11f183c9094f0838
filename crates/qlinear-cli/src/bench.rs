//! `qlinear bench` (see issue: the benchmark harness).

use std::process::ExitCode;

/// Arguments of `qlinear bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// `all|auto|NAME[,NAME]`.
    #[arg(long, default_value = "all")]
    pub backend: String,
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> ExitCode {
    eprintln!("bench not implemented yet ({args:?})");
    ExitCode::FAILURE
}
