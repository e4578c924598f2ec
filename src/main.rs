//! The `rvvmm` command: flags → [`VmConfig`] → [`Vmm::run`]; every error becomes one line on
//! stderr and a non-zero exit status (2 for usage errors, from clap).

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use rvvmm::config::Args;
use rvvmm::console::terminal::{stdin_is_tty, RawTerminal};
use rvvmm::console::StdioConsole;
use rvvmm::hypervisor::HypervisorError;
use rvvmm::{VmConfig, Vmm};

fn main() -> ExitCode {
    rvvmm::vmm::process_start();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    let config = VmConfig::from(Args::parse());
    rvvmm::vmm::startup_step("flags parsed");
    match run(config) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("rvvmm: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(config: VmConfig) -> Result<i32, Box<dyn Error>> {
    let interactive = stdin_is_tty();
    let console = StdioConsole::new(interactive);
    let dump = config.dump_dtb.clone();
    let vmm = Vmm::new(config, console.clone())?;
    if let Some(path) = dump {
        vmm.dump_dtb(&make_vm()?, &path)?;
        return Ok(0);
    }
    // Restored when this returns, on every path (and by signal and panic hooks).
    let _raw = RawTerminal::enter();
    if interactive {
        eprint!("rvvmm: console on this terminal; Ctrl-A x quits\r\n");
    }
    console.start_input();
    Ok(vmm.run(make_vm)?)
}

#[cfg(target_arch = "riscv64")]
fn make_vm() -> Result<rvvmm::hypervisor::kvm::KvmVm, HypervisorError> {
    rvvmm::hypervisor::kvm::KvmVm::new()
}

#[cfg(not(target_arch = "riscv64"))]
fn make_vm() -> Result<rvvmm::hypervisor::scripted::ScriptedVm, HypervisorError> {
    Err(HypervisorError::Unsupported(std::env::consts::ARCH))
}

/// "outer: inner: innermost", skipping a cause whose text the outer message already has.
fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
