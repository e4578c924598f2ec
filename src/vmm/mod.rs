//! The VMM: what a VM is made of (configuration, files, guest RAM, taps), and the control loop
//! that owns the running machine.
//!
//! [`Vmm::run`] boots the guest (`builder.rs`: one recipe a boot) and then waits, on the main
//! thread, for what may change the machine: a stop request from a vCPU, a device or the
//! console ([`VmControl`]), a stop signal ([`StopSignals`]), or an API request
//! ([`crate::api`]). Each is handled here, one at a time: power-off, reboot (the recipe again,
//! on the same RAM), pause, resume, counters, shutdown.

mod builder;
pub mod device_manager;
pub mod machine;
mod vm;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::device_manager::DeviceError;
use self::machine::Machine;
pub use self::vm::Vm;
use crate::api::schema::{VmInfo, VmState, VmmPingResponse};
use crate::api::server::{ApiHandle, ApiServer};
use crate::api::{ApiMessage, ApiRequest, ApiResponse};
use crate::arch::riscv64::fdt::FdtError;
use crate::config::json;
use crate::config::{ConfigError, Source, VmConfig};
use crate::console::Console;
use crate::control::{ExitRequest, SuspendPolicy, VmControl};
use crate::devices::virtio::block::DiskError;
use crate::devices::virtio::tap::TapError;
use crate::devices::virtio::vsock::VsockError;
use crate::hypervisor::{HypervisorError, VmBackend};
use crate::loader::LoaderError;
use crate::memory::MemoryError;
use crate::signals::{self, StopSignals};
use crate::snapshot::{SavedMachine, Sections};
use crate::startup::startup_step;
use crate::vcpu::runner::{HypercallHandler, SpawnError};
use crate::vcpu::VcpuError;

/// Errors of the VMM layer.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Guest RAM could not be mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The hypervisor failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// A vCPU failed while being built.
    #[error(transparent)]
    Vcpu(#[from] Box<VcpuError>),
    /// The device tree could not be built.
    #[error(transparent)]
    Fdt(#[from] FdtError),
    /// The devices could not be built.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// Writing the device tree into guest RAM failed.
    #[error("cannot write the device tree into guest RAM: {0}")]
    FdtWrite(#[source] vm_memory::GuestMemoryError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A snapshot could not be read or written.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// A snapshot could not be restored.
    #[error("cannot restore the snapshot: {0}")]
    Restore(String),
    /// No VM is created.
    #[error("no VM: give --kernel or --config, or create one with the API's vm.create")]
    NoVm,
    /// --dump-dtb could not write its file.
    #[error("cannot write {path}: {source}")]
    DumpDtb {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A disk could not be opened.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A `--net` tap cannot be used.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The vsock socket could not be made.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// A virtio-fs backend cannot be reached.
    #[error(transparent)]
    Fs(#[from] crate::devices::virtio::fs::FsError),
    /// The interrupt controller cannot be what was asked.
    #[error("{0}")]
    IrqChip(String),
    /// The event loop could not be started.
    #[error("cannot start the event loop: {0}")]
    EventLoop(#[source] std::io::Error),
    /// The main thread's seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The control loop's own fds could not be set up.
    #[error("cannot set up the control loop: {0}")]
    Control(#[source] std::io::Error),
    /// A vCPU thread could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A vCPU failed while the guest ran.
    #[error(transparent)]
    VcpuFailed(Arc<VcpuError>),
    /// The guest reported a system failure.
    #[error("the guest reported a system failure (SBI SRST shutdown, reason 1)")]
    GuestFailure,
}

/// Result type of the VMM layer.
pub type Result<T> = std::result::Result<T, VmmError>;

/// What the control loop waits on.
const TOKEN_STOP: u64 = 0;
const TOKEN_SIGNAL: u64 = 1;
const TOKEN_API: u64 = 2;

/// The API as the control loop holds it: requests, the fd that says some wait, the thread.
struct Api {
    requests: Receiver<ApiMessage>,
    wake: EventFd,
    handle: ApiHandle,
}

/// The VMM: the host console, the embedder's hypercall handler, the API and the signals, and
/// the VM, if one is created.
pub struct Vmm {
    console: Arc<dyn Console>,
    /// The embedder's hypercall handler; `None`: the `rvvmm` command's answers.
    hypercall: Option<HypercallHandler>,
    api: Option<Api>,
    signals: Option<StopSignals>,
    /// The VM; `None` until `vm.create` when rvvmm was started with only an API socket.
    vm: Option<Vm>,
    /// A snapshot to restore instead of booting (`--restore`), and whether to resume it.
    pending_restore: Option<(SavedMachine, PathBuf, bool)>,
    /// How long [`Self::run`] lets the guest run before it stops it (`--timeout`).
    timeout: Option<Duration>,
    /// The longest system suspend (SBI SUSP) before the guest is woken (`--suspend-seconds`).
    suspend_limit: Option<Duration>,
}

/// The exit status after `--timeout` stopped the guest: timeout(1)'s.
pub const TIMEOUT_STATUS: i32 = 124;

impl Vmm {
    /// A VMM with the VM `config` describes (see [`Vm::new`]).
    pub fn new(config: VmConfig, console: Arc<dyn Console>) -> Result<Self> {
        let vm = Vm::new(config, console.clone(), None)?;
        Ok(Vmm {
            console,
            hypercall: None,
            api: None,
            signals: None,
            vm: Some(vm),
            pending_restore: None,
            timeout: None,
            suspend_limit: None,
        })
    }

    /// A VMM whose VM is the snapshot in `dir` (`--restore source_url=file://DIR`): started
    /// paused by [`Self::run`], or running with `resume`. The snapshot is read and checked
    /// whole now, before anything is built.
    pub fn from_snapshot(dir: &Path, resume: bool, console: Arc<dyn Console>) -> Result<Self> {
        let (config, saved) = read_snapshot(dir)?;
        let mut vmm = Vmm::new(config, console)?;
        vmm.pending_restore = Some((saved, dir.to_owned(), resume));
        Ok(vmm)
    }

    /// A VMM with no VM yet: it waits for the API's `vm.create` and `vm.boot`.
    pub fn without_vm(console: Arc<dyn Console>) -> Self {
        Vmm {
            console,
            hypercall: None,
            api: None,
            signals: None,
            vm: None,
            pending_restore: None,
            timeout: None,
            suspend_limit: None,
        }
    }

    /// Replaces the hypercall handler (the `rvvmm` command's answers by default).
    pub fn with_hypercall_handler(mut self, handler: HypercallHandler) -> Self {
        if let Some(vm) = &mut self.vm {
            vm.hypercall = Some(handler.clone());
        }
        self.hypercall = Some(handler);
        self
    }

    /// Serves the REST API on `server` (its thread starts now; requests wait for [`Self::run`]).
    pub fn with_api(mut self, server: ApiServer) -> Result<Self> {
        let (tx, requests) = mpsc::channel();
        let wake = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Control)?;
        let handle = server
            .start(tx, wake.try_clone().map_err(VmmError::Control)?)
            .map_err(VmmError::Control)?;
        self.api = Some(Api {
            requests,
            wake,
            handle,
        });
        Ok(self)
    }

    /// Stops the guest when it has run this long, and ends [`Self::run`] with
    /// [`TIMEOUT_STATUS`] (`--timeout`); counted from the start of `run`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Wakes a guest that suspended the system (SBI SUSP) after `limit` at the latest
    /// (`--suspend-seconds`); console input and the API's vm.resume wake it earlier.
    pub fn with_suspend_limit(mut self, limit: Duration) -> Self {
        self.suspend_limit = Some(limit);
        self
    }

    /// Stops the VM cleanly on the stop signals ([`StopSignals`]).
    pub fn with_stop_signals(mut self, signals: StopSignals) -> Self {
        self.signals = Some(signals);
        self
    }

    /// The VM, if one is created.
    pub fn vm(&self) -> Option<&Vm> {
        self.vm.as_ref()
    }

    /// Boots the VM, if there is one, on VMs made by `make_vm` (one per boot) and runs the
    /// control loop until the guest powers off, a signal or `vmm.shutdown` ends it. Without a
    /// VM, the API must create and boot one. Returns the exit status rvvmm should end with.
    pub fn run<V, F>(&mut self, make_vm: F) -> Result<i32>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let result = self.control_loop(make_vm);
        // Whatever ended it, no client may reach an API that no longer answers.
        if let Some(api) = &self.api {
            api.handle.close();
        }
        result
    }

    fn control_loop<V, F>(&mut self, mut make_vm: F) -> Result<i32>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        if self.vm.is_none() && self.api.is_none() {
            return Err(VmmError::NoVm);
        }
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        let control = Arc::new(VmControl::new().map_err(VmmError::Control)?);
        control.set_suspend_policy(SuspendPolicy {
            limit: self.suspend_limit,
            api: self.api.is_some(),
        });
        let epoll = self.control_epoll(&control).map_err(VmmError::Control)?;
        startup_step("control loop set up");
        let mut boots = 0;
        let mut machine = None;
        if let Some((saved, dir, resume)) = self.pending_restore.take() {
            boots = 1;
            machine = Some(self.restore(&mut make_vm, &control, &saved, &dir, resume)?);
        } else if self.vm.is_some() {
            boots = 1;
            machine = Some(self.boot(&mut make_vm, &control, boots)?);
        }
        // The main thread's own filter, once the first boot's threads have started (as
        // Firecracker orders it): they run under their own filters alone, and the guest's
        // first instructions need not wait for this one (2 ms to install in the nested lab).
        // Nothing the guest asks of the main thread is read before it is in place: requests
        // wait in `control` for the loop below. Threads it starts later (a reboot's, an API
        // boot's) keep it beside their own.
        crate::seccomp::apply(crate::seccomp::ThreadKind::Main)?;
        startup_step("main thread filtered");
        let mut events = [EpollEvent::default(); 4];
        loop {
            let wait_ms = match deadline {
                Some((at, after)) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        // Rounded up, so the wait never ends a little early and spins.
                        i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                    }
                    _ => {
                        log::warn!("stopping the guest: --timeout {after:?} has passed");
                        stop(&mut machine, &control);
                        return Ok(TIMEOUT_STATUS);
                    }
                },
                None => -1,
            };
            let n = match epoll.wait(wait_ms, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VmmError::Control(e)),
            };
            for event in &events[..n] {
                match event.data() {
                    TOKEN_STOP => {
                        let Some(request) = control.stop_request() else {
                            continue;
                        };
                        if !matches!(request, ExitRequest::Reboot) {
                            stop(&mut machine, &control);
                        }
                        match request {
                            ExitRequest::Shutdown => return Ok(0),
                            ExitRequest::Exit(code) => return Ok(code),
                            ExitRequest::SystemFailure => return Err(VmmError::GuestFailure),
                            ExitRequest::VcpuFailed(e) => return Err(VmmError::VcpuFailed(e)),
                            ExitRequest::NoThread(e) => return Err(SpawnError(e).into()),
                            ExitRequest::Reboot => {
                                boots += 1;
                                machine = Some(self.reboot(
                                    &mut machine,
                                    &mut make_vm,
                                    &control,
                                    boots,
                                    "guest rebooted",
                                )?);
                            }
                        }
                    }
                    TOKEN_SIGNAL => {
                        if let Some(sig) = self.signals.as_ref().and_then(StopSignals::read) {
                            log::warn!("stopping the VM on {}", signals::name(sig));
                            stop(&mut machine, &control);
                            return Ok(0);
                        }
                    }
                    TOKEN_API => {
                        let Some(api) = &self.api else { continue };
                        let _ = api.wake.read();
                        let requests: Vec<ApiMessage> = api.requests.try_iter().collect();
                        for (request, body, reply) in requests {
                            let mut state = ControlState {
                                machine: &mut machine,
                                control: &control,
                                boots: &mut boots,
                            };
                            let (response, exit) =
                                self.api_request(request, &body, &mut state, &mut make_vm)?;
                            let _ = reply.send(response);
                            if exit {
                                return Ok(0);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The control loop's epoll: the stop requests, and the signals and the API if there are.
    fn control_epoll(&self, control: &VmControl) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let mut fds = vec![(control.stop_fd(), TOKEN_STOP)];
        fds.extend(self.signals.as_ref().map(|s| (s.fd(), TOKEN_SIGNAL)));
        fds.extend(
            self.api
                .as_ref()
                .map(|a| (std::os::fd::AsRawFd::as_raw_fd(&a.wake), TOKEN_API)),
        );
        for (fd, token) in fds {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(epoll)
    }

    /// A new VM from `make_vm`, booted.
    fn boot<V, F>(
        &self,
        make_vm: &mut F,
        control: &Arc<VmControl>,
        boots: u64,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let (config, vm) = self.new_vm(make_vm)?;
        config.build(vm, control, boots)
    }

    /// Stops `machine` and boots again (boot number `boots`, logged with `why` and what the last
    /// boot left open): on the same VM and vCPUs, reset in place, where the hypervisor can
    /// ([`Machine::stop_for_reboot`]); else on a new VM from `make_vm`.
    fn reboot<V, F>(
        &self,
        machine: &mut Option<Machine<V>>,
        make_vm: &mut F,
        control: &Arc<VmControl>,
        boots: u64,
        why: &str,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let kept = machine.take().and_then(Machine::stop_for_reboot);
        control.reset();
        if log::log_enabled!(log::Level::Info) {
            // What the last boot left, before the next one starts. Guest RAM lives across
            // reboots, and what of it is resident changes with the guest and with the host
            // (khugepaged may make a touched 2 MiB range one huge page): rvvmm's own memory is
            // the rest.
            let rss = crate::memory::vm_rss_kib();
            let guest = self.vm.as_ref().map_or(0, |vm| {
                crate::memory::guest_resident_kib(vm.memory(), vm.ram_size())
            });
            log::info!(
                "{why}; boot {boots} ({} open fds, {} threads, VmRSS {rss} KiB, own {} KiB, guest RAM resident {guest} KiB)",
                open_fds(),
                crate::memory::status_kib("Threads:"),
                rss.saturating_sub(guest)
            );
        }
        let Some(kept) = kept else {
            log::info!("a new VM for the reboot (resetting vCPUs in place needs KVM_CAP_RISCV_MP_STATE_RESET, Linux 6.16)");
            return self.boot(make_vm, control, boots);
        };
        match self
            .vm
            .as_ref()
            .ok_or(VmmError::NoVm)?
            .reboot(kept, control, boots)
        {
            Ok(machine) => Ok(machine),
            Err(e) => {
                log::warn!("cannot reboot on the same VM ({e}); making a new one");
                control.reset();
                self.boot(make_vm, control, boots)
            }
        }
    }

    /// The VM's resources and a new hypervisor VM for them.
    fn new_vm<V, F>(&self, make_vm: &mut F) -> Result<(&Vm, Arc<V>)>
    where
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let config = self.vm.as_ref().ok_or(VmmError::NoVm)?;
        let vm = Arc::new(make_vm()?);
        startup_step("VM created");
        Ok((config, vm))
    }

    /// The machine of a snapshot, on a VM from `make_vm`: paused, or running with `resume`.
    fn restore<V, F>(
        &self,
        make_vm: &mut F,
        control: &Arc<VmControl>,
        saved: &SavedMachine,
        dir: &Path,
        resume: bool,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let started = std::time::Instant::now();
        let (config, vm) = self.new_vm(make_vm)?;
        let mut machine = config.restore(vm, control, saved, dir)?;
        log::info!(
            "restored in {} ms, {}",
            started.elapsed().as_millis(),
            if resume {
                "resuming"
            } else {
                "paused (vm.resume runs it)"
            }
        );
        if resume {
            machine.resume();
        }
        Ok(machine)
    }

    /// Answers one API request. Returns the answer and whether rvvmm then ends.
    fn api_request<V, F>(
        &mut self,
        request: ApiRequest,
        body: &[u8],
        cs: &mut ControlState<'_, V>,
        make_vm: &mut F,
    ) -> Result<(ApiResponse, bool)>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let state = match (&self.vm, &*cs.machine) {
            (None, _) => None,
            (Some(_), None) if *cs.boots == 0 => Some(VmState::Created),
            (Some(_), None) => Some(VmState::Shutdown),
            (Some(_), Some(m)) if m.is_paused() => Some(VmState::Paused),
            (Some(_), Some(_)) => Some(VmState::Running),
        };
        let not = |what: &str| match state {
            None => ApiResponse::error(
                404,
                format!("no VM is created: cannot {what} (vm.create first)"),
            ),
            Some(state) => ApiResponse::error(
                405,
                format!("the VM is {}: cannot {what}", state_name(state)),
            ),
        };
        let done = ApiResponse::no_content();
        let response = match (request, cs.machine.as_mut()) {
            (ApiRequest::VmmPing, _) => json(&VmmPingResponse::here()),
            (ApiRequest::VmmShutdown, _) => {
                stop(cs.machine, cs.control);
                return Ok((done, true));
            }
            (ApiRequest::VmCreate, _) if self.vm.is_some() => not("create another"),
            (ApiRequest::VmCreate, _) => {
                let created = json::parse(body, Source::Api)
                    .map_err(VmmError::Config)
                    .and_then(|(config, _)| {
                        Vm::new(config, self.console.clone(), self.hypercall.clone())
                    });
                match created {
                    Ok(vm) => {
                        log::info!("VM created over the API");
                        self.vm = Some(vm);
                        *cs.boots = 0;
                        done
                    }
                    Err(e) => ApiResponse::error(400, crate::error_chain(&e)),
                }
            }
            (ApiRequest::VmDelete, _) => {
                stop(cs.machine, cs.control);
                if self.vm.take().is_some() {
                    log::info!("VM deleted over the API");
                }
                *cs.boots = 0;
                done
            }
            (ApiRequest::VmSnapshot, Some(m)) => {
                let vm = self.vm.as_ref().ok_or(VmmError::NoVm)?;
                match url_in(body, "destination_url") {
                    Err(e) => ApiResponse::error(400, e),
                    Ok((dir, _)) => match m.snapshot(&dir, &vm.config_json()) {
                        Ok(report) => {
                            log::info!("{report}");
                            done
                        }
                        Err(e) if !m.is_paused() => ApiResponse::error(405, e),
                        Err(e) => ApiResponse::error(500, format!("snapshot failed: {e}")),
                    },
                }
            }
            (ApiRequest::VmSnapshot, None) => not("snapshot"),
            (ApiRequest::VmRestore, _) if self.vm.is_some() => not("restore over it"),
            (ApiRequest::VmRestore, _) => {
                let restored = url_in(body, "source_url")
                    .map_err(|e| (400, e))
                    .and_then(|(dir, request)| {
                        let (config, saved) = read_snapshot(&dir).map_err(|e| (400, crate::error_chain(&e)))?;
                        let vm = Vm::new(config, self.console.clone(), self.hypercall.clone())
                            .map_err(|e| (400, crate::error_chain(&e)))?;
                        let resume = request.get("resume").and_then(|r| r.as_bool());
                        Ok((vm, saved, dir, resume.unwrap_or(false)))
                    });
                match restored {
                    Err((status, e)) => ApiResponse::error(status, e),
                    Ok((vm, saved, dir, resume)) => {
                        self.vm = Some(vm);
                        *cs.boots = 1;
                        match self.restore(make_vm, cs.control, &saved, &dir, resume) {
                            Ok(m) => {
                                *cs.machine = Some(m);
                                done
                            }
                            Err(e) => {
                                self.vm = None;
                                *cs.boots = 0;
                                cs.control.reset();
                                ApiResponse::error(400, crate::error_chain(&e))
                            }
                        }
                    }
                }
            }
            (ApiRequest::VmInfo, _) => match &self.vm {
                Some(vm) => json(&VmInfo {
                    config: vm.config_json(),
                    state: state.unwrap_or(VmState::Created),
                    memory_actual_size: vm.ram_size(),
                }),
                None => not("give its info"),
            },
            (ApiRequest::VmCounters, Some(m)) => json(&m.counters()),
            (ApiRequest::VmCounters, None) => not("give counters"),
            (ApiRequest::VmPause, Some(m)) if !m.is_paused() => match m.pause() {
                Ok(()) => done,
                Err(e) => ApiResponse::error(500, e),
            },
            (ApiRequest::VmPause, _) => not("pause"),
            (ApiRequest::VmResume, Some(m)) if m.is_paused() => {
                m.resume();
                done
            }
            // A guest that suspended itself (SBI SUSP) is woken as a paused one is resumed.
            (ApiRequest::VmResume, Some(_)) if cs.control.wake() => done,
            (ApiRequest::VmResume, _) => not("resume"),
            (ApiRequest::VmShutdown, Some(_)) => {
                stop(cs.machine, cs.control);
                done
            }
            (ApiRequest::VmShutdown, None) => not("shut down"),
            (ApiRequest::VmReboot, Some(_)) => {
                *cs.boots += 1;
                let why = "rebooted on request";
                *cs.machine = Some(self.reboot(cs.machine, make_vm, cs.control, *cs.boots, why)?);
                done
            }
            (ApiRequest::VmReboot, None) => not("reboot"),
            (ApiRequest::VmBoot, None) if self.vm.is_some() => {
                *cs.boots += 1;
                log::info!("booting on request; boot {}", cs.boots);
                match self.boot(make_vm, cs.control, *cs.boots) {
                    Ok(m) => {
                        *cs.machine = Some(m);
                        done
                    }
                    // What the host refuses for this config (no AIA, a bad dtb, an extension
                    // it cannot switch off) is the client's to fix; rvvmm serves on.
                    Err(e) => {
                        cs.control.reset();
                        ApiResponse::error(400, crate::error_chain(&e))
                    }
                }
            }
            (ApiRequest::VmBoot, _) => not("boot"),
            (ApiRequest::VmPowerButton, Some(_)) => ApiResponse::error(
                400,
                "RISC-V virt has no power button (no ACPI, no gpio-keys line): use vm.shutdown, or power off from inside the guest",
            ),
            (ApiRequest::VmPowerButton, None) => not("press its power button"),
        };
        Ok((response, false))
    }

    /// Builds the device tree the guest would get and writes it to `path` (`--dump-dtb`).
    /// Needs the hypervisor: the cpus describe what its vCPUs really offer.
    pub fn dump_dtb<V: VmBackend>(&self, vm: &V, path: &Path) -> Result<()> {
        let config = self.vm.as_ref().ok_or(VmmError::NoVm)?;
        let (vcpus, irq_mode) = config.create_vcpus(vm)?;
        let blob = config.device_tree(vcpus[0].isa(), 1, irq_mode)?;
        crate::files::write_replacing(path, &blob).map_err(|source| VmmError::DumpDtb {
            path: path.to_owned(),
            source,
        })
    }
}

/// Reads and checks the snapshot in `dir`: its config and its machine state.
pub fn read_snapshot(dir: &Path) -> Result<(VmConfig, SavedMachine)> {
    let sections = Sections::read(dir)?;
    let state_file = dir.join(crate::snapshot::STATE_FILE);
    let bad = |what: String| {
        VmmError::Snapshot(crate::snapshot::SnapshotError::Format {
            path: state_file.clone(),
            what,
        })
    };
    // The config section is what `vm.create` takes, read by the same parser.
    let (config, _) = json::parse(sections.bytes("config").map_err(&bad)?, Source::File)
        .map_err(|e| bad(format!("section config: {e}")))?;
    let saved = SavedMachine::get(&sections).map_err(bad)?;
    Ok((config, saved))
}

/// The directory a request body's `file:///dir` URL field names, and the body's JSON (for its
/// other fields).
fn url_in(body: &[u8], field: &str) -> std::result::Result<(PathBuf, serde_json::Value), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let url = value
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("the body needs {{\"{field}\": \"file:///path/to/dir\"}}"))?;
    let dir = crate::snapshot::dir_of_url(url).map_err(|e| e.to_string())?;
    Ok((dir, value))
}

/// What the control loop holds while it answers a request.
struct ControlState<'a, V: VmBackend> {
    machine: &'a mut Option<Machine<V>>,
    control: &'a Arc<VmControl>,
    boots: &'a mut u64,
}

/// Stops the machine, if one runs, and readies `control` for the next boot.
/// This process's open file descriptors (what a reboot must not leak), 0 if unreadable.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn stop<V: VmBackend>(machine: &mut Option<Machine<V>>, control: &VmControl) {
    if let Some(m) = machine.take() {
        m.stop();
    }
    control.reset();
}

fn state_name(state: VmState) -> &'static str {
    match state {
        VmState::Created => "created, not booted",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Shutdown => "shut down",
    }
}

fn json<T: serde::Serialize>(body: &T) -> ApiResponse {
    match serde_json::to_value(body) {
        Ok(value) => ApiResponse::ok(value),
        Err(e) => ApiResponse::error(500, format!("cannot encode the answer: {e}")),
    }
}
