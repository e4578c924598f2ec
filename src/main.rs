//! The `rvvmm` command: flags (over a `--config` file) → [`VmConfig`] → [`Vmm::run`]; every
//! error becomes one line on stderr and a non-zero exit status (2 for usage and configuration
//! errors). `rvvmm remote` drives a running rvvmm through its API instead.

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use rvvmm::api::client;
use rvvmm::api::server::ApiServer;
use rvvmm::config::cli::{Args, Command, RemoteArgs};
use rvvmm::config::json::VmConfigJson;
use rvvmm::config::{ConfigError, Source, Sources};
use rvvmm::console::terminal::{stdin_is_tty, RawTerminal};
use rvvmm::console::StdioConsole;
use rvvmm::hypervisor::HypervisorError;
use rvvmm::seccomp;
use rvvmm::signals::StopSignals;
use rvvmm::startup::{process_start, startup_step};
use rvvmm::vmm::VmmError;
use rvvmm::{error_chain, VmConfig, Vmm};

fn main() -> ExitCode {
    process_start();
    // virtio-queue logs a malformed ring at error level each time, unthrottled, and a guest
    // can make one per reset of its device: off unless RUST_LOG asks (rvvmm's own line about
    // the same ring, through guest_warn!, is rate-limited).
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,virtio_queue=off"),
    )
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
            eprintln!("rvvmm: {}", error_chain(e.as_ref()));
            // A configuration error is a usage error, as clap's are.
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    e.downcast_ref::<VmmError>(),
                    Some(VmmError::Config(_) | VmmError::Fs(_))
                );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(args: Args) -> Result<i32, Box<dyn Error>> {
    // Before any thread starts, so that every thread has them blocked.
    seccomp::enable(args.seccomp)?;
    startup_step("seccomp on (filters are built as threads start)");
    let signals = StopSignals::block()
        .map_err(|e| log::warn!("stop signals will end rvvmm without a clean stop: {e}"))
        .ok();
    if args.list_extensions {
        return list_extensions();
    }
    let described = args.vm_config()?;
    if args.print_config {
        let Some((config, sources)) = described else {
            return Err(
                ConfigError::Format("--print-config needs --kernel or --config".into()).into(),
            );
        };
        print_config(&config, &sources)?;
        return Ok(0);
    }
    let interactive = stdin_is_tty();
    let console = match &args.serial_log {
        Some(log) => {
            let file = open_serial_log(&log.path).map_err(|e| ConfigError::Field {
                field: "--serial-log".into(),
                message: format!("{}: {e}", log.path.display()),
            })?;
            StdioConsole::with_log(interactive, file, !log.only)
        }
        None => StdioConsole::new(interactive),
    };
    let mut vmm = match (described, &args.restore) {
        (_, Some((dir, resume))) => Vmm::from_snapshot(dir, *resume, console.clone())?,
        (Some((config, sources)), None) => {
            Vmm::new(config, console.clone()).map_err(|e| match e {
                VmmError::Config(e) => as_given(e, &sources),
                e => e.into(),
            })?
        }
        (None, None) => Vmm::without_vm(console.clone()),
    };
    if let Some(path) = &args.dump_dtb {
        vmm.dump_dtb(&make_vm()?, path)?;
        return Ok(0);
    }
    if let Some(path) = &args.api_socket {
        vmm = vmm.with_api(ApiServer::bind(path)?)?;
    }
    if let Some(signals) = signals {
        vmm = vmm.with_stop_signals(signals);
    }
    if let Some(timeout) = args.timeout {
        vmm = vmm.with_timeout(timeout);
    }
    if let Some(limit) = args.suspend_seconds {
        vmm = vmm.with_suspend_limit(limit);
    }
    // Restored when this returns, on every path (and by signal and panic hooks).
    let _raw = RawTerminal::enter();
    if interactive {
        eprint!("rvvmm: console on this terminal; Ctrl-A x quits\r\n");
    }
    // The input thread installs its own filter; the main thread's is installed by the control
    // loop once the first boot's threads run (see `Vmm::run`).
    console.start_input();
    Ok(vmm.run(make_vm)?)
}

fn run_remote(args: &RemoteArgs) -> ExitCode {
    // `snapshot file:///dir` and `restore source_url=file:///dir,resume=on`, as ch-remote;
    // `create vm.json`: a body that is not JSON text is a file holding it.
    let body = match (args.command.as_str(), args.json.as_deref()) {
        ("snapshot", Some(url)) if !url.trim_start().starts_with('{') => {
            Some(serde_json::json!({ "destination_url": url }).to_string())
        }
        ("restore", Some(arg)) if !arg.trim_start().starts_with('{') => {
            match rvvmm::snapshot::parse_restore(arg) {
                Ok((dir, resume)) => Some(
                    serde_json::json!({
                        "source_url": format!("file://{}", dir.display()),
                        "resume": resume
                    })
                    .to_string(),
                ),
                Err(e) => {
                    eprintln!("rvvmm remote: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (_, json) => match json {
            Some(text) if !text.trim_start().starts_with(['{', '[']) => {
                match read_body_file(std::path::Path::new(text)) {
                    Ok(body) => Some(body),
                    Err(e) => {
                        eprintln!("rvvmm remote: {text}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            other => other.map(str::to_string),
        },
    };
    match client::remote(&args.api_socket, &args.command, body.as_deref()) {
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

/// The `--serial-log` file: created, or truncated if it is a regular file (a FIFO or a
/// terminal is written as it is).
fn open_serial_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // Truncated below, only if it is a regular file (a FIFO or a terminal has no length).
        .truncate(false)
        .open(path)?;
    if file.metadata()?.is_file() {
        file.set_len(0)?;
    }
    Ok(file)
}

/// A request body from a file, bounded as config files are.
fn read_body_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(rvvmm::config::json::MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > rvvmm::config::json::MAX_CONFIG_BYTES {
        return Err(std::io::Error::other("too large for a request body"));
    }
    Ok(text)
}

#[cfg(target_arch = "riscv64")]
fn make_vm() -> Result<rvvmm::hypervisor::kvm::KvmVm, HypervisorError> {
    rvvmm::hypervisor::kvm::KvmVm::new()
}

#[cfg(not(target_arch = "riscv64"))]
fn make_vm() -> Result<rvvmm::hypervisor::scripted::ScriptedVm, HypervisorError> {
    Err(HypervisorError::Unsupported(std::env::consts::ARCH))
}

/// A config error about a value a flag gave names the flag rather than the JSON field.
fn as_given(e: ConfigError, sources: &Sources) -> Box<dyn Error> {
    match e {
        ConfigError::Field { field, message } => {
            let field = match sources.of(&field) {
                Some(Source::Flag(flag)) => flag.to_string(),
                _ => field,
            };
            ConfigError::Field { field, message }.into()
        }
        e => e.into(),
    }
}

/// `--print-config`: the effective config as JSON on stdout; where each value came from on
/// stderr.
fn print_config(config: &VmConfig, sources: &Sources) -> Result<(), Box<dyn Error>> {
    let resolved = config.resolve().map_err(|e| as_given(e, sources))?;
    let mut sources = sources.clone();
    if config.memory.is_none() && resolved.dtb.is_some() && config.dtb.is_some() {
        sources.set("memory.size", Source::Dtb);
    }
    if config.cpus.is_none() && resolved.dtb.is_some() {
        sources.set("cpus", Source::Dtb);
    }
    let effective = VmConfigJson::new(config, &resolved);
    let value = serde_json::to_value(&effective)?;
    let dtb = config.dtb.as_ref().map(|p| p.display().to_string());
    let mut leaves = Vec::new();
    leaf_paths(&value, String::new(), &mut leaves);
    for (path, shown) in leaves {
        let from = match sources.of(&path) {
            Some(Source::Flag(flag)) => flag.to_string(),
            Some(Source::File) => "config file".into(),
            Some(Source::Api) => "vm.create".into(),
            Some(Source::Dtb) => format!("dtb {}", dtb.as_deref().unwrap_or("")),
            None => "default".into(),
        };
        eprintln!("{path} = {shown}  ({from})");
    }
    use std::io::Write;
    let text = serde_json::to_string_pretty(&effective)?;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    Ok(())
}

fn leaf_paths(value: &serde_json::Value, at: String, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                leaf_paths(v, path, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaf_paths(v, format!("{at}[{i}]"), out);
            }
        }
        _ => out.push((at, value.to_string())),
    }
}

/// `--list-extensions`.
fn list_extensions() -> Result<i32, Box<dyn Error>> {
    let vm = make_vm()?;
    use std::io::Write;
    let _ = write!(
        std::io::stdout().lock(),
        "{}",
        rvvmm::vcpu::extensions::report(&vm)?
    );
    Ok(0)
}
