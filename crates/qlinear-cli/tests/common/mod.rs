//! What the CLI test files share: starting the `qlinear` binary (behind an emulator
//! when `QLINEAR_CLI_RUNNER` is set) and scratch directories.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The command that runs the `qlinear` binary: the binary itself, or, when the tests
/// are cross-run under an emulator, the runner named by `QLINEAR_CLI_RUNNER` (e.g.
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max`, set by `.ci/arm.sh`) followed by it.
pub fn qlinear_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_qlinear");
    match std::env::var("QLINEAR_CLI_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().expect("non-empty runner"));
            cmd.args(words).arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

/// Runs `qlinear args...` to completion (no `QLINEAR_BACKEND`, no stdin).
pub fn run_qlinear(args: &[&str]) -> Output {
    qlinear_command()
        .args(args)
        .env_remove("QLINEAR_BACKEND")
        .stdin(Stdio::null())
        .output()
        .expect("run qlinear")
}

/// A run's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name holds the process id, the time and `tag`.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "qlinear-cli-test-{}-{nanos}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("utf-8 path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
