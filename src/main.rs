//! The `rvvmm` command: flags → [`VmConfig`] → [`Vmm::run`]; every error becomes one line on
//! stderr and a non-zero exit status (2 for usage errors, from clap). `rvvmm remote` drives a
//! running rvvmm through its API instead.

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use rvvmm::api::client;
use rvvmm::api::server::ApiServer;
use rvvmm::config::{Args, Command, RemoteArgs};
use rvvmm::console::terminal::{stdin_is_tty, RawTerminal};
use rvvmm::console::StdioConsole;
use rvvmm::hypervisor::HypervisorError;
use rvvmm::signals::StopSignals;
use rvvmm::startup::{process_start, startup_step};
use rvvmm::{VmConfig, Vmm};

fn main() -> ExitCode {
    process_start();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    let mut args = Args::parse();
    if let Some(Command::Remote(remote)) = args.command.take() {
        return run_remote(&remote);
    }
    startup_step("flags parsed");
    match run(args) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("rvvmm: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<i32, Box<dyn Error>> {
    // Before any thread starts, so that every thread has them blocked.
    let signals = StopSignals::block()
        .map_err(|e| log::warn!("stop signals will end rvvmm without a clean stop: {e}"))
        .ok();
    let api_socket = args.api_socket.clone();
    let config = VmConfig::from(args);
    let interactive = stdin_is_tty();
    let console = StdioConsole::new(interactive);
    let dump = config.dump_dtb.clone();
    let mut vmm = Vmm::new(config, console.clone())?;
    if let Some(path) = dump {
        vmm.dump_dtb(&make_vm()?, &path)?;
        return Ok(0);
    }
    if let Some(path) = api_socket {
        vmm = vmm.with_api(ApiServer::bind(&path)?)?;
    }
    if let Some(signals) = signals {
        vmm = vmm.with_stop_signals(signals);
    }
    // Restored when this returns, on every path (and by signal and panic hooks).
    let _raw = RawTerminal::enter();
    if interactive {
        eprint!("rvvmm: console on this terminal; Ctrl-A x quits\r\n");
    }
    console.start_input();
    Ok(vmm.run(make_vm)?)
}

fn run_remote(args: &RemoteArgs) -> ExitCode {
    match client::remote(&args.api_socket, &args.command, args.json.as_deref()) {
        Ok(body) => {
            // The request succeeded; a reader that went away early (`| grep -q`) is no error
            // (println! would panic on the broken pipe).
            if !body.is_empty() {
                use std::io::Write;
                let _ = writeln!(std::io::stdout().lock(), "{body}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rvvmm remote: {e}");
            ExitCode::FAILURE
        }
    }
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
