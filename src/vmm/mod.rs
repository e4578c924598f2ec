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

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::device_manager::{virtio_plan, DeviceError};
use self::machine::Machine;
use crate::api::schema::{VmConfigJson, VmInfo, VmState, VmmPingResponse};
use crate::api::server::{ApiHandle, ApiServer};
use crate::api::{ApiMessage, ApiRequest, ApiResponse};
use crate::arch::riscv64::fdt::tree::Tree;
use crate::arch::riscv64::fdt::{patch, FdtError};
use crate::config::{parse_memory, VmConfig, DEFAULT_MEMORY, MAX_VIRTIO_DEVICES};
use crate::console::Console;
use crate::control::{ExitRequest, VmControl};
use crate::devices::virtio::block::{Block, DiskError};
use crate::devices::virtio::tap::{Tap, TapError};
use crate::hypervisor::{HypervisorError, VmBackend};
use crate::loader::{Initrd, Kernel, LoaderError};
use crate::memory::{guest_memory, MemoryError};
use crate::signals::{self, StopSignals};
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
    /// The --dtb file is missing or not a device tree.
    #[error("cannot use dtb {path}: {what}")]
    Dtb {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The --dtb's memory size is unusable.
    #[error("the dtb's /memory size is unusable: {0}; give --memory")]
    DtbMemory(String),
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
    /// The interrupt controller cannot be what was asked.
    #[error("{0}")]
    IrqChip(String),
    /// More virtio devices than slots.
    #[error("{0} virtio devices asked for; QEMU virt has {MAX_VIRTIO_DEVICES} virtio-mmio slots")]
    TooManyDevices(usize),
    /// The event loop could not be started.
    #[error("cannot start the event loop: {0}")]
    EventLoop(#[source] std::io::Error),
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

/// The VMM: configuration, what it loads, guest RAM and the host console.
pub struct Vmm {
    config: VmConfig,
    kernel: Kernel,
    initrd: Option<(Initrd, (u64, u64))>,
    user_dtb: Option<Tree>,
    ram_size: u64,
    memory: GuestMemoryMmap,
    console: Arc<dyn Console>,
    /// The embedder's hypercall handler; `None`: the `rvvmm` command's answers.
    hypercall: Option<HypercallHandler>,
    warned_dtb: AtomicBool,
    /// The `--net` taps, opened once: every boot's cards use them, so a tap rvvmm created
    /// (and its host-side address) lives as long as rvvmm.
    taps: Vec<Tap>,
    api: Option<Api>,
    signals: Option<StopSignals>,
}

impl Vmm {
    /// Reads the kernel, initrd and dtb, checks they fit, and maps guest RAM. Fails before any
    /// hypervisor call, so bad input is reported the same on every host.
    pub fn new(config: VmConfig, console: Arc<dyn Console>) -> Result<Self> {
        let user_dtb = match &config.dtb {
            Some(path) => Some(builder::read_dtb(path)?),
            None => None,
        };
        let ram_size = match (
            config.memory,
            user_dtb.as_ref().and_then(patch::memory_size),
        ) {
            (Some(size), _) => size,
            (None, Some(size)) => {
                parse_memory(&size.to_string()).map_err(|e| VmmError::DtbMemory(e.to_string()))?
            }
            (None, None) => DEFAULT_MEMORY,
        };
        let kernel = Kernel::read(&config.kernel)?;
        kernel.check_fits(ram_size)?;
        let devices = virtio_plan(&config).len();
        if devices > MAX_VIRTIO_DEVICES {
            return Err(VmmError::TooManyDevices(devices));
        }
        for disk in &config.disks {
            // Opened now to report a bad path before anything runs; each boot opens it anew.
            Block::open(&disk.path, disk.readonly)?;
        }
        let taps = config
            .nets
            .iter()
            .map(|n| Tap::open(&n.tap))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let initrd = match &config.initrd {
            Some(path) => {
                let initrd = Initrd::read(path)?;
                let range = initrd.place(&kernel, ram_size)?;
                Some((initrd, range))
            }
            None => None,
        };
        let memory = guest_memory(ram_size, config.hugepages)?;
        startup_step("files read, guest RAM mapped");
        Ok(Vmm {
            config,
            kernel,
            initrd,
            user_dtb,
            ram_size,
            memory,
            console,
            hypercall: None,
            warned_dtb: AtomicBool::new(false),
            taps,
            api: None,
            signals: None,
        })
    }

    /// Replaces the hypercall handler (the `rvvmm` command's answers by default).
    pub fn with_hypercall_handler(mut self, handler: HypercallHandler) -> Self {
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

    /// Stops the VM cleanly on the stop signals ([`StopSignals`]).
    pub fn with_stop_signals(mut self, signals: StopSignals) -> Self {
        self.signals = Some(signals);
        self
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Bytes of guest RAM.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Boots the guest on VMs made by `make_vm` (one per boot) and runs the control loop until
    /// the guest powers off, a signal or `vmm.shutdown` ends it. Returns the exit status rvvmm
    /// should end with.
    pub fn run<V, F>(&self, make_vm: F) -> Result<i32>
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

    fn control_loop<V, F>(&self, mut make_vm: F) -> Result<i32>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let control = Arc::new(VmControl::new().map_err(VmmError::Control)?);
        let epoll = self.control_epoll(&control).map_err(VmmError::Control)?;
        let mut boots = 1;
        let mut machine = Some(self.boot(&mut make_vm, &control, boots)?);
        let mut events = [EpollEvent::default(); 4];
        loop {
            let n = match epoll.wait(-1, &mut events) {
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
                        stop(&mut machine, &control);
                        match request {
                            ExitRequest::Shutdown => return Ok(0),
                            ExitRequest::Exit(code) => return Ok(code),
                            ExitRequest::SystemFailure => return Err(VmmError::GuestFailure),
                            ExitRequest::VcpuFailed(e) => return Err(VmmError::VcpuFailed(e)),
                            ExitRequest::NoThread(e) => return Err(SpawnError(e).into()),
                            ExitRequest::Reboot => {
                                boots += 1;
                                log::info!("guest rebooted; boot {boots}");
                                machine = Some(self.boot(&mut make_vm, &control, boots)?);
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
                        while let Ok((request, reply)) = api.requests.try_recv() {
                            let (response, exit) = self.api_request(
                                request,
                                &mut machine,
                                &control,
                                &mut make_vm,
                                &mut boots,
                            )?;
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
        let vm = Arc::new(make_vm()?);
        startup_step("VM created");
        self.build(vm, control, boots)
    }

    /// Answers one API request. Returns the answer and whether rvvmm then ends.
    fn api_request<V, F>(
        &self,
        request: ApiRequest,
        machine: &mut Option<Machine<V>>,
        control: &Arc<VmControl>,
        make_vm: &mut F,
        boots: &mut u64,
    ) -> Result<(ApiResponse, bool)>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let state = match machine {
            None => VmState::Shutdown,
            Some(m) if m.is_paused() => VmState::Paused,
            Some(_) => VmState::Running,
        };
        let not = |what: &str| {
            ApiResponse::error(
                405,
                format!("the VM is {}: cannot {what}", state_name(state)),
            )
        };
        let done = ApiResponse::no_content();
        let response = match (request, machine.as_mut()) {
            (ApiRequest::VmmPing, _) => json(&VmmPingResponse::here()),
            (ApiRequest::VmmShutdown, _) => {
                stop(machine, control);
                return Ok((done, true));
            }
            (ApiRequest::VmInfo, _) => json(&VmInfo {
                config: VmConfigJson::new(&self.config, self.ram_size),
                state,
                memory_actual_size: self.ram_size,
            }),
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
            (ApiRequest::VmResume, _) => not("resume"),
            (ApiRequest::VmShutdown, Some(_)) => {
                stop(machine, control);
                done
            }
            (ApiRequest::VmShutdown, None) => not("shut down"),
            (ApiRequest::VmReboot, Some(_)) => {
                stop(machine, control);
                *boots += 1;
                log::info!("rebooting on request; boot {boots}");
                *machine = Some(self.boot(make_vm, control, *boots)?);
                done
            }
            (ApiRequest::VmReboot, None) => not("reboot"),
            (ApiRequest::VmBoot, None) => {
                *boots += 1;
                log::info!("booting on request; boot {boots}");
                *machine = Some(self.boot(make_vm, control, *boots)?);
                done
            }
            (ApiRequest::VmBoot, Some(_)) => not("boot"),
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
        let (vcpus, irq_mode) = self.create_vcpus(vm)?;
        let blob = self.device_tree(vcpus[0].isa(), 1, irq_mode)?;
        std::fs::write(path, &blob).map_err(|source| VmmError::DumpDtb {
            path: path.to_owned(),
            source,
        })
    }
}

/// Stops the machine, if one runs, and readies `control` for the next boot.
fn stop<V>(machine: &mut Option<Machine<V>>, control: &VmControl) {
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
