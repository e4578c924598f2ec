//! `exec-timer CMD [ARGS...]`: runs CMD with stdout on a pipe (stdin and stderr on /dev/null)
//! and prints the microseconds from just before its exec to the first byte of its output and
//! to its exit:
//!
//! ```text
//! EXEC first_output_us=N exit_us=N rc=N
//! ```
//!
//! `cargo xtask bench` times VMM startup with it: its startup guest's first instruction writes
//! one byte to the console, so the first byte marks the guest running. A shell's clock (10 ms)
//! cannot resolve that; this one does, for any VMM.

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: exec-timer CMD [ARGS...]");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let child = Command::new(cmd)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("exec-timer: cannot run {cmd}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut first = None;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 4096];
        // Read everything (the child must never block on a full pipe); note the first byte.
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| start.elapsed());
        }
    }
    let rc = match child.wait() {
        Ok(status) => status.code().unwrap_or(-1),
        Err(_) => -1,
    };
    let exit = start.elapsed();
    let first = first.map_or(-1, |d| d.as_micros() as i64);
    println!(
        "EXEC first_output_us={first} exit_us={} rc={rc}",
        exit.as_micros()
    );
    ExitCode::SUCCESS
}
