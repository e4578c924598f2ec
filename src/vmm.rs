//! Builds the VM and owns the exit policy.
//!
//! One linear recipe per boot (`Vmm::boot`): map RAM, load the kernel, build the bus, create
//! and set up the vCPUs, write the device tree, start one thread per vCPU. The main thread then
//! waits for the first stop request ([`VmControl`]), kicks every vCPU thread out of `KVM_RUN`
//! with a signal, and joins them. A reboot runs the recipe again on the same RAM (as QEMU keeps
//! RAM across a reset); the kernel and device tree are written anew.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::arch::riscv64::fdt::tree::{Tree, MAX_BLOB};
use crate::arch::riscv64::fdt::{check_size, create_fdt, patch, FdtConfig, FdtError, FdtIrqChip};
use crate::arch::riscv64::layout::{
    fdt_addr, virtio_slot, APLIC_BASE, FINISHER_BASE, FINISHER_SIZE, IMSIC_BASE, IMSIC_STRIDE,
    PLIC_BASE, PLIC_NDEV, PLIC_SIZE, RAM_BASE, TESTDEV_BASE, TESTDEV_SIZE, UART_BASE, UART_IRQ,
    UART_SIZE, VIRTIO_SIZE,
};
use crate::arch::riscv64::regs::VcpuIsa;
use crate::config::{
    parse_memory, ConsoleKind, IrqChipKind, VmConfig, DEFAULT_MEMORY, MAX_VIRTIO_DEVICES,
};
use crate::console::{Console, ConsoleEvent};
use crate::control::{ExitRequest, Flow, VmControl, CONTINUE};
use crate::devices::finisher::Finisher;
use crate::devices::plic::Plic;
use crate::devices::testdev::TestDev;
use crate::devices::uart::Uart;
use crate::devices::virtio::block::{Block, DiskError};
use crate::devices::virtio::console::VirtioConsole;
use crate::devices::virtio::mmio::{MmioTransport, SharedTransport, QUEUE_NOTIFY};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::{Tap, TapError};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::{Bus, BusError, IrqChip};
use crate::event_loop::{EventLoop, Subscriber};
use crate::hypervisor::{AiaConfig, HypervisorError, InterruptLine, VcpuBackend, VmBackend};
use crate::loader::{Initrd, Kernel, LoaderError};
use crate::sbi::{hypercall, Sbi, SbiContext};
use crate::vcpu::{ExitReason, Vcpu, VcpuConfig, VcpuError, SRST_REASON_SYSTEM_FAILURE};

/// Errors of the VMM layer.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Guest RAM could not be mapped.
    #[error("cannot map {size} bytes of guest RAM: {source}")]
    Memory {
        /// Bytes asked for.
        size: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// The kernel could not be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The hypervisor failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// A vCPU failed while being built.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The device tree could not be built.
    #[error(transparent)]
    Fdt(#[from] FdtError),
    /// Devices could not be placed on the bus.
    #[error("cannot build the MMIO bus: {0}")]
    Bus(#[from] BusError),
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
    /// `--hugepages` cannot be honoured.
    #[error("cannot map {mib} MiB of guest RAM in 2 MiB huge pages: {why}")]
    HugePages {
        /// RAM size in MiB.
        mib: u64,
        /// Why not.
        why: String,
    },
    /// A `--net` tap cannot be used.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A device could not be set up.
    #[error("cannot set up a device: {0}")]
    Device(#[source] std::io::Error),
    /// The interrupt controller cannot be what was asked.
    #[error("{0}")]
    IrqChip(String),
    /// More virtio devices than slots.
    #[error("{0} virtio devices asked for; QEMU virt has {MAX_VIRTIO_DEVICES} virtio-mmio slots")]
    TooManyDevices(usize),
    /// A vCPU thread could not be started.
    #[error("cannot start a vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The VM stopped because of an error (a vCPU thread's, or the guest's failure report).
    #[error("{0}")]
    Stopped(String),
}

/// Result type of the VMM layer.
pub type Result<T> = std::result::Result<T, VmmError>;

/// How the embedder answers guest hypercalls: (nr, args) -> `Continue((SBI error, value))`,
/// or `Break(request)` to stop the VM before the calling vCPU runs another guest instruction.
pub type HypercallHandler = Arc<dyn Fn(u64, &[u64; 6]) -> hypercall::Answer + Send + Sync>;

/// How often the main thread re-kicks vCPU threads that have not yet left `KVM_RUN`.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

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
}

impl Vmm {
    /// Reads the kernel, initrd and dtb, checks they fit, and maps guest RAM. Fails before any
    /// hypervisor call, so bad input is reported the same on every host.
    pub fn new(config: VmConfig, console: Arc<dyn Console>) -> Result<Self> {
        let user_dtb = match &config.dtb {
            Some(path) => Some(read_dtb(path)?),
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
        let devices = config.virtio_device_count();
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
        })
    }

    /// Replaces the hypercall handler (the `rvvmm` command's answers by default).
    pub fn with_hypercall_handler(mut self, handler: HypercallHandler) -> Self {
        self.hypercall = Some(handler);
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

    /// Boots the guest on VMs made by `make_vm` (one per boot) until it powers off.
    /// Returns the exit status rvvmm should end with.
    pub fn run<V, F>(&self, mut make_vm: F) -> Result<i32>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
        F: FnMut() -> std::result::Result<V, HypervisorError>,
    {
        let mut boots = 0u64;
        loop {
            boots += 1;
            let vm = Arc::new(make_vm()?);
            startup_step("VM created");
            let request = self.boot(&vm, boots)?;
            // Every vCPU thread is joined; now the VM (and its vCPU fds) can go.
            drop(vm);
            match request {
                ExitRequest::Shutdown => return Ok(0),
                ExitRequest::Exit(code) => return Ok(code),
                ExitRequest::Error(msg) => return Err(VmmError::Stopped(msg)),
                ExitRequest::Reboot => log::info!("guest rebooted; boot {}", boots + 1),
            }
        }
    }

    /// Builds the device tree the guest would get and writes it to `path` (`--dump-dtb`).
    /// Needs the hypervisor: the cpus describe what its vCPUs really offer.
    pub fn dump_dtb<V: VmBackend>(&self, vm: &V, path: &Path) -> Result<()> {
        let aia = self.choose_aia(vm)?;
        let (vcpus, irqchip) = self.create_vcpus(vm, aia)?;
        let blob = self.device_tree(vcpus[0].isa(), 1, irqchip)?;
        std::fs::write(path, &blob).map_err(|source| VmmError::DumpDtb {
            path: path.to_owned(),
            source,
        })
    }

    fn create_vcpu<V: VmBackend>(&self, vm: &V, index: u32) -> Result<Vcpu<V::Vcpu>> {
        let config = VcpuConfig {
            hart_id: u64::from(index),
            dtb_addr: fdt_addr(self.ram_size),
        };
        let sbi = Sbi::new(SbiContext {
            memory: self.memory.clone(),
            console: self.console.clone(),
        });
        Ok(Vcpu::new(index, config, vm.create_vcpu(index)?, sbi)?)
    }

    /// Chooses the interrupt controller (`--irqchip`, the host, the --dtb): true for the AIA.
    fn choose_aia<V: VmBackend>(&self, vm: &V) -> Result<bool> {
        let host_aia = vm.has_in_kernel_aia();
        let dtb_aia = self.user_dtb.as_ref().map(patch::describes_aia);
        let aia = match (self.config.irqchip, dtb_aia) {
            (IrqChipKind::Plic, Some(true)) | (IrqChipKind::Aia, Some(false)) => {
                return Err(VmmError::IrqChip(format!(
                    "--irqchip {:?} does not match the dtb, which describes {}",
                    self.config.irqchip,
                    if dtb_aia == Some(true) {
                        "an AIA"
                    } else {
                        "a PLIC"
                    }
                )))
            }
            (IrqChipKind::Plic, _) => false,
            (IrqChipKind::Aia, _) | (IrqChipKind::Auto, Some(true)) => {
                if !host_aia {
                    return Err(VmmError::IrqChip(
                        "KVM on this host has no in-kernel AIA (does the CPU have Ssaia?); use --irqchip plic, with a dtb that describes a PLIC".into(),
                    ));
                }
                true
            }
            (IrqChipKind::Auto, Some(false)) => false,
            (IrqChipKind::Auto, None) => host_aia,
        };
        Ok(aia)
    }

    /// Creates the vCPUs (set up) and, when `aia`, the in-kernel AIA, which needs them all.
    fn create_vcpus<V: VmBackend>(
        &self,
        vm: &V,
        aia: bool,
    ) -> Result<(Vec<Vcpu<V::Vcpu>>, FdtIrqChip)> {
        let mut vcpus = Vec::with_capacity(self.config.cpus as usize);
        for index in 0..self.config.cpus {
            let mut vcpu = self.create_vcpu(vm, index)?;
            vcpu.setup()?;
            vcpus.push(vcpu);
        }
        if !aia {
            return Ok((vcpus, FdtIrqChip::Plic));
        }
        let config = AiaConfig {
            num_sources: PLIC_NDEV,
            aplic_addr: APLIC_BASE,
            imsic_addrs: (0..u64::from(self.config.cpus))
                .map(|h| IMSIC_BASE + h * IMSIC_STRIDE)
                .collect(),
        };
        let num_ids = vm.create_aia(&config)?;
        Ok((vcpus, FdtIrqChip::Aia { num_ids }))
    }

    /// The device tree for vCPUs offering `isa`: the user's, patched, or a generated one.
    fn device_tree(&self, isa: &VcpuIsa, boot_count: u64, irqchip: FdtIrqChip) -> Result<Vec<u8>> {
        let config = FdtConfig {
            irqchip,
            num_cpus: self.config.cpus,
            isa: isa.clone(),
            ram_size: self.ram_size,
            cmdline: self.config.cmdline.clone(),
            initrd: self.initrd.as_ref().map(|(_, range)| *range),
            testdev: self.config.testdev,
            virtio: self.virtio_slots(),
            boot_count: boot_count.min(u64::from(u32::MAX)) as u32,
        };
        let Some(user) = &self.user_dtb else {
            return Ok(create_fdt(&config)?);
        };
        let mut tree = user.clone();
        let disabled = patch::patch_fdt(&mut tree, &config)?;
        if !disabled.is_empty() && !self.warned_dtb.swap(true, Ordering::Relaxed) {
            log::warn!(
                "the dtb describes devices rvvmm does not emulate; disabled: {}",
                disabled.join(", ")
            );
        }
        let blob = tree.to_blob().map_err(FdtError::from)?;
        check_size(&blob)?;
        Ok(blob)
    }

    /// One boot: build everything, run until a stop request, join every vCPU thread.
    fn boot<V>(&self, vm: &Arc<V>, boot_count: u64) -> Result<ExitRequest>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
    {
        let vm_ref: &V = vm;
        vm_ref.map_memory(&self.memory)?;
        startup_step("guest RAM given to the VM");
        let entry = self.kernel.load(&self.memory)?;
        if let Some((initrd, (start, _))) = &self.initrd {
            initrd.load(&self.memory, *start)?;
        }
        let control = Arc::new(VmControl::default());

        startup_step("kernel and initrd loaded");
        let aia = self.choose_aia(vm_ref)?;
        let (mut vcpus, irqchip) = self.create_vcpus(vm_ref, aia)?;
        startup_step("vCPUs created and set up");
        let mut lines = Vec::with_capacity(vcpus.len());
        for vcpu in &mut vcpus {
            vcpu.set_entry(entry)?;
            lines.push(vcpu.interrupt_line()?);
        }
        let machine = self.build_machine(vm, lines, irqchip)?;
        let bus = Arc::new(machine.bus);
        let uart = machine.uart;
        let console_input = machine.console_input;
        let mut subscribers = machine.subscribers;
        subscribers.extend(self.console.clone().input_subscriber());
        // No devices and no input to watch (a bare-metal guest, stdin not a terminal or
        // pipe): no event loop thread either.
        let _event_loop = if subscribers.is_empty() {
            None
        } else {
            Some(EventLoop::start(subscribers).map_err(VmmError::Device)?)
        };
        startup_step("devices and event loop started");

        let fdt = self.device_tree(vcpus[0].isa(), boot_count, irqchip)?;
        let dtb_addr = fdt_addr(self.ram_size);
        self.memory
            .write_slice(&fdt, GuestAddress(dtb_addr))
            .map_err(VmmError::FdtWrite)?;
        startup_step("device tree written");
        log::info!(
            "booting {} at {entry:#x}: {} vCPU(s), {} MiB RAM, dtb at {dtb_addr:#x}",
            self.config.kernel.display(),
            self.config.cpus,
            self.ram_size >> 20
        );

        let listener_control = control.clone();
        self.console
            .set_listener(Some(Arc::new(move |event| match event {
                ConsoleEvent::Input => match &console_input {
                    Some(evt) => {
                        let _ = evt.write(1);
                    }
                    None => uart.pull_input(),
                },
                ConsoleEvent::Quit => listener_control.request(ExitRequest::Exit(0)),
            })));

        install_kick_handler();
        let mut threads = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let ctx = LoopContext {
                bus: bus.clone(),
                control: control.clone(),
                hypercall: self.hypercall.clone(),
                log_hypercalls: log::log_enabled!(log::Level::Debug),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || {
                    let exits = vcpu_loop(vcpu, &ctx);
                    ctx.control.vcpu_ended();
                    exits
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    control.request(ExitRequest::Error(format!(
                        "cannot start a vCPU thread: {e}"
                    )));
                    stop_threads(threads, &control);
                    self.console.set_listener(None);
                    return Err(VmmError::Thread(e));
                }
            }
        }
        startup_step("vCPU threads started");
        log::info!("VmRSS at start: {} KiB", vm_rss_kib());
        let request = control.wait();
        let exits = stop_threads(threads, &control);
        self.console.set_listener(None);
        log::info!(
            "VmRSS at exit: {} KiB after {} exits (per hart: {exits:?})",
            vm_rss_kib(),
            exits.iter().sum::<u64>()
        );
        if log::log_enabled!(log::Level::Info) {
            let (peak, guest) = (
                status_kib("VmHWM:"),
                guest_resident_kib(&self.memory, self.ram_size),
            );
            log::info!(
                "memory: peak RSS {peak} KiB, guest RAM resident {guest} KiB, rvvmm's own {} KiB",
                peak.saturating_sub(guest)
            );
        }
        Ok(request)
    }

    /// The devices of one boot: the bus, the UART, and what the event loop watches.
    fn build_machine<V: VmBackend + 'static>(
        &self,
        vm: &Arc<V>,
        lines: Vec<Arc<dyn InterruptLine>>,
        irqchip: FdtIrqChip,
    ) -> Result<Machine> {
        let mut bus = Bus::new();
        let aia = matches!(irqchip, FdtIrqChip::Aia { .. });
        let chip: Arc<dyn IrqChip> = if aia {
            Arc::new(KvmIrqChip(vm.clone()))
        } else {
            let plic = Arc::new(Plic::new(lines));
            bus.insert(PLIC_BASE, PLIC_SIZE, plic.clone())?;
            plic
        };
        let virtio_console = self.config.console == ConsoleKind::Virtio;
        let uart = Arc::new(Uart::new(
            self.console.clone(),
            chip.clone(),
            UART_IRQ,
            !virtio_console,
        ));
        bus.insert(FINISHER_BASE, FINISHER_SIZE, Arc::new(Finisher))?;
        bus.insert(UART_BASE, UART_SIZE, uart.clone())?;
        if self.config.testdev {
            bus.insert(TESTDEV_BASE, TESTDEV_SIZE, Arc::new(TestDev::default()))?;
        }

        let mut subscribers: Vec<Subscriber> = Vec::new();
        let mut console_input = None;
        for (slot, device) in self.virtio_devices()?.into_iter().enumerate() {
            let (base, irq) = virtio_slot(slot);
            if let VirtioKind::Console(c) = &device {
                console_input = Some(c.input_evt().map_err(VmmError::Device)?);
            }
            let (interrupt, how): (Arc<dyn Interrupt>, _) = if aia {
                irqfd_interrupt(vm, &chip, irq)?
            } else {
                let plic = ChipInterrupt {
                    chip: chip.clone(),
                    irq,
                };
                (Arc::new(plic), "user-space PLIC")
            };

            let transport = MmioTransport::new(device.into_box(), self.memory.clone(), interrupt)
                .map_err(VmmError::Device)?;
            log::info!(
                "virtio-{} at {base:#x}, interrupt {irq} ({how})",
                transport.name()
            );
            for (queue, evt) in transport.queue_evts().iter().enumerate() {
                if let Err(e) = vm.register_ioevent(evt, base + QUEUE_NOTIFY, queue as u32) {
                    // Still correct without it: the notify exits and the transport signals.
                    log::warn!(
                        "virtio-{}: no ioeventfd ({e}); notifies will exit",
                        transport.name()
                    );
                }
            }
            let shared = SharedTransport(Arc::new(Mutex::new(transport)));
            bus.insert(base, VIRTIO_SIZE, Arc::new(shared.clone()))?;
            subscribers.push(Box::new(shared));
        }
        Ok(Machine {
            bus,
            uart,
            subscribers,
            console_input,
        })
    }

    /// The virtio devices the configuration asks for, in slot order: disks, nets, rng, console.
    fn virtio_devices(&self) -> Result<Vec<VirtioKind>> {
        let mut devices = Vec::new();
        for disk in &self.config.disks {
            devices.push(VirtioKind::Block(Block::open(&disk.path, disk.readonly)?));
        }
        for (index, (spec, tap)) in self.config.nets.iter().zip(&self.taps).enumerate() {
            let backend = tap.try_clone().map_err(VmmError::Device)?;
            let mac = spec
                .mac
                .unwrap_or([0x52, 0x54, 0, 0x12, 0x34, 0x56 + index as u8]);
            devices.push(VirtioKind::Net(Net::new(Box::new(backend), mac)));
        }
        if self.config.rng {
            devices.push(VirtioKind::Rng(Rng::new()));
        }
        if self.config.console == ConsoleKind::Virtio {
            devices.push(VirtioKind::Console(
                VirtioConsole::new(self.console.clone()).map_err(VmmError::Device)?,
            ));
        }
        Ok(devices)
    }

    /// Base and interrupt of every virtio slot in use.
    fn virtio_slots(&self) -> Vec<(u64, u32)> {
        (0..self.config.virtio_device_count())
            .map(virtio_slot)
            .collect()
    }
}

/// A virtio device before it goes into its transport.
enum VirtioKind {
    Block(Block),
    Net(Net),
    Rng(Rng),
    Console(VirtioConsole),
}

impl VirtioKind {
    fn into_box(self) -> Box<dyn VirtioDevice> {
        match self {
            VirtioKind::Block(d) => Box::new(d),
            VirtioKind::Net(d) => Box::new(d),
            VirtioKind::Rng(d) => Box::new(d),
            VirtioKind::Console(d) => Box::new(d),
        }
    }
}

/// The devices of one boot.
struct Machine {
    bus: Bus,
    uart: Arc<Uart>,
    subscribers: Vec<Subscriber>,
    console_input: Option<EventFd>,
}

/// A virtio device's interrupt through an [`IrqChip`] source.
struct ChipInterrupt {
    chip: Arc<dyn IrqChip>,
    irq: u32,
}

impl Interrupt for ChipInterrupt {
    fn trigger(&self) {
        self.chip.trigger(self.irq);
    }
}

/// A virtio device's level-sensitive line on KVM's AIA, raised through an irqfd: the event
/// loop's write to the eventfd makes KVM raise the line itself, so signalling the guest runs
/// no user-space irqchip code. KVM's RISC-V irqfd only ever raises a line (its in-atomic
/// injection sets level 1 and the level-0 half of a pulse never runs), so the line is lowered
/// here, with KVM_IRQ_LINE, when the driver acknowledges the last InterruptStatus bit. Raise
/// and lower both happen under the transport's lock, so they cannot cross: a condition that
/// arrives before the acknowledgement keeps the line high (Linux's APLIC driver re-pends a
/// still-high level source at EOI), one that arrives after it raises the line again.
struct IrqfdInterrupt {
    evt: EventFd,
    chip: Arc<dyn IrqChip>,
    irq: u32,
}

impl Interrupt for IrqfdInterrupt {
    fn trigger(&self) {
        if let Err(e) = self.evt.write(1) {
            log::warn!(
                "cannot signal interrupt {} through its irqfd: {e}",
                self.irq
            );
        }
    }

    fn acknowledged(&self, pending: bool) {
        if !pending {
            self.chip.set_level(self.irq, false);
        }
    }
}

/// A virtio device's level-sensitive line on KVM's AIA driven with KVM_IRQ_LINE both ways:
/// the fallback where KVM takes no irqfd.
struct LevelInterrupt {
    chip: Arc<dyn IrqChip>,
    irq: u32,
}

impl Interrupt for LevelInterrupt {
    fn trigger(&self) {
        self.chip.set_level(self.irq, true);
    }

    fn acknowledged(&self, pending: bool) {
        self.chip.set_level(self.irq, pending);
    }
}

/// The interrupt of a virtio device on interrupt `irq` of KVM's AIA: an irqfd when KVM takes
/// one, else a line driven with KVM_IRQ_LINE.
fn irqfd_interrupt<V: VmBackend>(
    vm: &Arc<V>,
    chip: &Arc<dyn IrqChip>,
    irq: u32,
) -> Result<(Arc<dyn Interrupt>, &'static str)> {
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::Device)?;
    let chip = chip.clone();
    match vm.register_irqfd(&evt, irq) {
        Ok(()) => Ok((Arc::new(IrqfdInterrupt { evt, chip, irq }), "AIA, irqfd")),
        Err(e) => {
            log::warn!("no irqfd for interrupt {irq} ({e}); driving it with KVM_IRQ_LINE");
            Ok((Arc::new(LevelInterrupt { chip, irq }), "AIA, KVM_IRQ_LINE"))
        }
    }
}

/// KVM's in-kernel AIA as an [`IrqChip`]: wired sources driven with KVM_IRQ_LINE.
struct KvmIrqChip<V>(Arc<V>);

impl<V: VmBackend> IrqChip for KvmIrqChip<V> {
    fn trigger(&self, irq: u32) {
        self.set_level(irq, true);
        self.set_level(irq, false);
    }

    fn level_sensitive(&self) -> bool {
        true
    }

    fn set_level(&self, irq: u32, level: bool) {
        if let Err(e) = self.0.set_irq_line(irq, level) {
            log::warn!("cannot set interrupt {irq} to {level}: {e}");
        }
    }
}

/// Size of a huge page for `--hugepages`.
const HUGE_PAGE: u64 = 2 << 20;

/// Maps guest RAM: anonymous memory with transparent huge pages advised, or (`hugepages`)
/// hugetlb 2 MiB pages, reserved at once so that a shortage is an error now, not a SIGBUS in
/// the middle of a guest's run.
fn guest_memory(ram_size: u64, hugepages: bool) -> Result<GuestMemoryMmap> {
    if !hugepages {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), ram_size as usize)])
            .map_err(|source| VmmError::Memory {
            size: ram_size,
            source,
        })?;
        advise_huge_pages(&memory, ram_size);
        return Ok(memory);
    }
    let huge_err = |why: String| VmmError::HugePages {
        mib: ram_size >> 20,
        why,
    };
    if !ram_size.is_multiple_of(HUGE_PAGE) {
        return Err(huge_err("--memory is not a multiple of 2 MiB".into()));
    }
    let region = vm_memory::MmapRegion::<()>::build(
        None,
        ram_size as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
    )
    .map_err(|e| {
        huge_err(format!(
            "{e}; reserve {} of them with `echo {} > /proc/sys/vm/nr_hugepages` (as root)",
            ram_size / HUGE_PAGE,
            ram_size / HUGE_PAGE
        ))
    })?;
    let region = vm_memory::GuestRegionMmap::new(region, GuestAddress(RAM_BASE))
        .ok_or_else(|| huge_err("the RAM range overflows".into()))?;
    GuestMemoryMmap::from_regions(vec![region]).map_err(|e| huge_err(e.to_string()))
}

/// Asks for transparent huge pages on guest RAM (as Cloud Hypervisor's `thp=on`): a guest
/// touching fresh memory then takes one host fault per 2 MiB instead of per 4 KiB. But not for
/// the 2 MiB block that holds the dtb: rvvmm writes a few KiB there at every boot, and a huge
/// page would have the host clear 2 MiB for them first (about 1 ms of startup in the lab).
/// Only hints: without THP, nothing changes.
fn advise_huge_pages(memory: &GuestMemoryMmap, ram_size: u64) {
    advise(memory, RAM_BASE, ram_size, libc::MADV_HUGEPAGE);
    let dtb_block = fdt_addr(ram_size) & !(HUGE_PAGE - 1);
    advise(memory, dtb_block, HUGE_PAGE, libc::MADV_NOHUGEPAGE);
}

/// madvise(`advice`) on guest RAM `[gpa, gpa + len)` (ignored where it is not RAM).
fn advise(memory: &GuestMemoryMmap, gpa: u64, len: u64, advice: libc::c_int) {
    use vm_memory::GuestMemoryBackend;
    let Ok(slice) = memory.get_slice(GuestAddress(gpa), len as usize) else {
        return;
    };
    // SAFETY: the range lies inside guest RAM's mapping (get_slice checked it), which rvvmm
    // owns; these advices change no contents.
    let rc = unsafe { libc::madvise(slice.ptr_guard_mut().as_ptr().cast(), len as usize, advice) };
    if rc != 0 {
        log::debug!(
            "madvise({advice}) on guest RAM failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn read_dtb(path: &Path) -> Result<Tree> {
    let dtb_err = |what: String| VmmError::Dtb {
        path: path.to_owned(),
        what,
    };
    let meta = std::fs::metadata(path).map_err(|e| dtb_err(e.to_string()))?;
    if meta.len() > MAX_BLOB as u64 {
        return Err(dtb_err(format!(
            "{} bytes is too large for a device tree",
            meta.len()
        )));
    }
    let blob = std::fs::read(path).map_err(|e| dtb_err(e.to_string()))?;
    Tree::parse(&blob).map_err(|e| dtb_err(e.to_string()))
}

/// Whether the process's first guest exit was logged (once, not again after a reboot).
static FIRST_EXIT_LOGGED: AtomicBool = AtomicBool::new(false);

/// What a vCPU thread shares with the rest of the VM.
struct LoopContext {
    bus: Arc<Bus>,
    control: Arc<VmControl>,
    /// `None`: the built-in answers, called directly (no indirect call on the exit path).
    hypercall: Option<HypercallHandler>,
    /// Whether hypercalls are logged (debug level, read as the vCPU threads start).
    log_hypercalls: bool,
}

/// A vCPU thread: run, dispatch the exit, repeat until the VM stops. Returns how many exits
/// reached user space.
///
/// A stop this vCPU's own exit asks for (a finisher store, SRST, an embedder's hypercall
/// handler, an error) comes back from [`handle_exit`] as `Break`: the thread records it and
/// leaves before re-entering the guest, so the guest runs no instruction after asking. A stop
/// asked elsewhere (another vCPU, the console's Ctrl-A x, a signal) is followed by kicks until
/// every thread has left (see [`stop_threads`]); a kick makes KVM_RUN return `Interrupted`, a
/// cold exit after which the stop flag is read. So the hot exits (hypercall, MMIO, an SBI call
/// the vCPU answered) read no shared flag, only the bus.
fn vcpu_loop<B: VcpuBackend>(mut vcpu: Vcpu<B>, ctx: &LoopContext) -> u64 {
    let mut exits = 0u64;
    if vcpu.id() == 0 {
        startup_step("vCPU 0 thread entering the guest");
    }
    if ctx.control.should_stop() {
        return exits;
    }
    loop {
        let (flow, hot) = match vcpu.run() {
            Ok(exit) => {
                // A stopped vCPU's `Nothing` is its poll, not a guest exit.
                let guest_exit = exit != ExitReason::Nothing || !vcpu.is_stopped();
                let hot = guest_exit
                    && matches!(
                        exit,
                        ExitReason::Nothing
                            | ExitReason::Hypercall { .. }
                            | ExitReason::MmioRead { .. }
                            | ExitReason::MmioWrite { .. }
                    );
                if guest_exit {
                    exits += 1;
                    if exits == 1 {
                        first_exit(vcpu.id());
                    }
                }
                let flow = handle_exit(&mut vcpu, exit, ctx)
                    .unwrap_or_else(|e| Flow::Break(ExitRequest::Error(e.to_string())));
                (flow, hot)
            }
            Err(e) => (Flow::Break(ExitRequest::Error(e.to_string())), false),
        };
        if let Flow::Break(request) = flow {
            ctx.control.request(request);
            return exits;
        }
        if !hot && ctx.control.should_stop() {
            return exits;
        }
    }
}

/// Logs the process's first guest exit (once, not again after a reboot).
#[cold]
#[inline(never)]
fn first_exit(vcpu: u32) {
    if vcpu == 0 && !FIRST_EXIT_LOGGED.swap(true, Ordering::Relaxed) {
        log::info!(
            "first guest exit {} us after rvvmm started",
            process_start().elapsed().as_micros()
        );
    }
}

/// The exit policy: what the VMM does with each [`ExitReason`]. `Break` stops the VM: the
/// vCPU must not re-enter the guest.
#[inline]
fn handle_exit<B: VcpuBackend>(
    vcpu: &mut Vcpu<B>,
    exit: ExitReason,
    ctx: &LoopContext,
) -> std::result::Result<Flow, VcpuError> {
    match exit {
        ExitReason::Nothing | ExitReason::ExternalInterrupt => {}
        ExitReason::Hypercall { nr, args } => {
            if ctx.log_hypercalls {
                log_hypercall(nr, &args);
            }
            let answer = match &ctx.hypercall {
                Some(handler) => handler(nr, &args),
                None => hypercall::answer(nr, &args),
            };
            let (error, value) = match answer {
                hypercall::Answer::Continue(pair) => pair,
                hypercall::Answer::Break(request) => return Ok(Flow::Break(request)),
            };
            vcpu.set_gpr(0, error as u64)?;
            vcpu.set_gpr(1, value)?;
        }
        ExitReason::MmioRead { addr, width } => {
            let mut data = [0u8; 8];
            ctx.bus.read(addr, &mut data[..usize::from(width)]);
            vcpu.complete_mmio_read(u64::from_le_bytes(data));
        }
        ExitReason::MmioWrite { addr, width, data } => {
            return Ok(ctx
                .bus
                .write(addr, &data.to_le_bytes()[..usize::from(width)]));
        }
        other => return Ok(handle_rare_exit(vcpu.config().hart_id, other)),
    }
    Ok(CONTINUE)
}

#[cold]
#[inline(never)]
fn log_hypercall(nr: u64, args: &[u64; 6]) {
    log::debug!("hypercall nr={nr} args={args:x?}");
}

/// The exits a hart makes a few times in its life: out of the hot path's pages.
#[cold]
#[inline(never)]
fn handle_rare_exit(hart: u64, exit: ExitReason) -> Flow {
    let request = match exit {
        ExitReason::CpuUp { target_cpu, .. } => {
            log::info!("hart {target_cpu} started");
            return CONTINUE;
        }
        ExitReason::CpuDown => {
            log::info!("hart {hart} stopped");
            return CONTINUE;
        }
        ExitReason::Halt => {
            log::info!("hart {hart} suspended the system");
            return CONTINUE;
        }
        ExitReason::SystemDown { reason } if reason == SRST_REASON_SYSTEM_FAILURE => {
            ExitRequest::Error(
                "the guest reported a system failure (SBI SRST shutdown, reason 1)".into(),
            )
        }
        ExitReason::SystemDown { .. } => ExitRequest::Shutdown,
        ExitReason::SystemReset { .. } => ExitRequest::Reboot,
        ExitReason::NestedPageFault { addr, size } => ExitRequest::Error(format!(
            "hart {hart}: guest memory at {addr:#x} (+{size:#x}) could not be provided"
        )),
        ExitReason::FailEntry { reason } => ExitRequest::Error(format!(
            "hart {hart}: KVM could not run the guest (reason {reason:#x})"
        )),
        ExitReason::Nothing
        | ExitReason::ExternalInterrupt
        | ExitReason::Hypercall { .. }
        | ExitReason::MmioRead { .. }
        | ExitReason::MmioWrite { .. } => return CONTINUE,
    };
    Flow::Break(request)
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The kick signal only needs to interrupt `KVM_RUN` (which then returns `EINTR`); its handler
/// does nothing. Installed once per process.
fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(SIGRTMIN(), kick_handler) {
            log::warn!("cannot install the vCPU kick signal handler: {e}");
        }
    });
}

/// Kicks every vCPU thread until it has left its loop, then joins it. A thread may be between
/// its stop check and `KVM_RUN` when a kick lands, so kicks repeat until it is out.
/// Returns each thread's exit count.
fn stop_threads(threads: Vec<JoinHandle<u64>>, control: &VmControl) -> Vec<u64> {
    // A thread that stops by itself (the exit that asked for the stop) ends at once: wait for
    // it on the condvar, and kick only the threads still in KVM_RUN, every KICK_INTERVAL.
    let count = threads.len();
    while !control.wait_vcpus_ended(count, Duration::ZERO)
        && threads.iter().any(|t| !t.is_finished())
    {
        for thread in threads.iter().filter(|t| !t.is_finished()) {
            // The thread may finish between the check and the kill; ESRCH is harmless then.
            let _ = thread.kill(SIGRTMIN());
        }
        control.wait_vcpus_ended(count, KICK_INTERVAL);
    }
    threads
        .into_iter()
        .map(|thread| {
            thread.join().unwrap_or_else(|_| {
                log::error!("a vCPU thread panicked");
                0
            })
        })
        .collect()
}

/// This process's resident set size, from /proc/self/status (0 if unreadable).
pub fn vm_rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A "Name:   N kB" field of /proc/self/status (0 if unreadable).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(kib)
        })
        .unwrap_or(0)
}

/// The number in a /proc "   1234 kB" value.
fn kib(value: &str) -> Option<u64> {
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Resident KiB of guest RAM (`ram_size` bytes from its host address), from /proc/self/smaps
/// (0 if not found).
fn guest_resident_kib(memory: &GuestMemoryMmap, ram_size: u64) -> u64 {
    use vm_memory::GuestMemoryBackend;
    let Ok(base) = memory.get_host_address(GuestAddress(RAM_BASE)) else {
        return 0;
    };
    let (start, end) = (base as u64, base as u64 + ram_size);
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    // Guest RAM may span several mappings (madvise splits it): add up those inside it.
    let mut in_guest = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    in_guest = a >= start && b <= end;
                    continue;
                }
            }
        }
        if in_guest {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += kib(v).unwrap_or(0);
            }
        }
    }
    total
}

/// Logs (at debug level) a step of starting up and when it ended, in microseconds since rvvmm
/// started: `RUST_LOG=rvvmm=debug` shows where startup time goes.
pub fn startup_step(what: &str) {
    // `log::debug!` evaluates its arguments (the clock read) only when debug is on.
    log::debug!(
        "startup: {what} (+{} us)",
        process_start().elapsed().as_micros()
    );
}

/// When rvvmm started (the first call; `main` makes it early).
pub fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{MpState, RawExit};

    #[derive(Default)]
    struct Lines(Mutex<Vec<(u32, bool)>>);

    impl IrqChip for Lines {
        fn trigger(&self, irq: u32) {
            self.set_level(irq, true);
        }
        fn set_level(&self, irq: u32, level: bool) {
            self.0.lock().unwrap().push((irq, level));
        }
    }

    #[test]
    fn resident_guest_ram_is_counted_across_split_mappings() {
        let size = 16u64 << 20;
        let memory = guest_memory(size, false).unwrap();
        // advise_huge_pages split the mapping (the dtb block has its own advice).
        memory
            .write_slice(&vec![1u8; 1 << 20], GuestAddress(RAM_BASE))
            .unwrap();
        memory
            .write_slice(&[1u8; 4096], GuestAddress(fdt_addr(size)))
            .unwrap();
        let kib = guest_resident_kib(&memory, size);
        assert!((1028..=size >> 10).contains(&kib), "{kib} KiB");
    }

    #[test]
    fn an_irqfd_line_is_raised_by_the_eventfd_and_lowered_by_the_last_ack() {
        let chip = Arc::new(Lines::default());
        let interrupt = IrqfdInterrupt {
            evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            chip: chip.clone(),
            irq: 3,
        };
        interrupt.trigger();
        interrupt.trigger();
        assert_eq!(
            interrupt.evt.read().unwrap(),
            2,
            "raised through the eventfd"
        );
        assert!(
            chip.0.lock().unwrap().is_empty(),
            "no KVM_IRQ_LINE to raise"
        );
        interrupt.acknowledged(true);
        assert!(
            chip.0.lock().unwrap().is_empty(),
            "still pending: stays high"
        );
        interrupt.acknowledged(false);
        assert_eq!(*chip.0.lock().unwrap(), vec![(3, false)]);
    }

    /// Counts heap allocations made by the current thread, so a test can see that a code path
    /// allocates nothing (other test threads, running in parallel, are not counted).
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        struct Counting;

        thread_local! {
            static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        }

        // SAFETY: every call is passed to the system allocator unchanged; the thread-local
        // counter is a const-initialised Cell, which never allocates.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                ALLOCATIONS.with(|a| a.set(a.get() + 1));
                // SAFETY: the caller's layout contract is the system allocator's.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                ALLOCATIONS.with(|a| a.set(a.get() + 1));
                // SAFETY: as for `dealloc` and `alloc`.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Counting = Counting;

        /// Allocations by this thread so far.
        pub fn allocations() -> u64 {
            ALLOCATIONS.with(Cell::get)
        }
    }

    /// A vCPU that exits the same way every time, answering without recording anything.
    struct RepeatVcpu(RawExit);

    struct NoLine;

    impl InterruptLine for NoLine {
        fn set_level(&self, _: bool) -> crate::hypervisor::Result<()> {
            Ok(())
        }
    }

    impl VcpuBackend for RepeatVcpu {
        fn interrupt_line(&self) -> crate::hypervisor::Result<Arc<dyn InterruptLine>> {
            Ok(Arc::new(NoLine))
        }
        fn get_reg(&self, _: u64) -> crate::hypervisor::Result<u64> {
            Ok(0)
        }
        fn set_reg(&mut self, _: u64, _: u64) -> crate::hypervisor::Result<()> {
            Ok(())
        }
        fn run(&mut self) -> crate::hypervisor::Result<RawExit> {
            Ok(self.0)
        }
        fn set_sbi_return(&mut self, _: usize, _: u64) {}
        fn set_mmio_read_data(&mut self, _: [u8; 8], _: u8) {}
        fn mp_state(&mut self) -> crate::hypervisor::Result<MpState> {
            Ok(MpState::Runnable)
        }
    }

    /// A console that drops output (DBCN writes without a growing buffer).
    struct Sink;

    impl Console for Sink {
        fn write(&self, _: &[u8]) {}
        fn read(&self, _: &mut [u8]) -> usize {
            0
        }
        fn set_listener(&self, _: Option<crate::console::Listener>) {}
    }

    /// The hot-path rule, checked: from one `KVM_RUN` return to the next, rvvmm's
    /// loop (decode, SBI dispatch, MMIO bus, device, hypercall handler, answer) allocates
    /// nothing, for every exit kind the benchmark times.
    #[test]
    fn the_exit_path_allocates_nothing() {
        use crate::hypervisor::SbiCall;
        use crate::sbi::{dbcn, hypercall};

        let memory = guest_memory(16 << 20, false).unwrap();
        let sbi_call = |eid, fid, a0, a1| {
            RawExit::Sbi(SbiCall {
                eid,
                fid,
                args: [a0, a1, 0, 0, 0, 0],
            })
        };
        let kinds = [
            ("hypercall", sbi_call(hypercall::EID, 0, 7, 0)),
            (
                "dbcn write_byte",
                sbi_call(dbcn::EID, 2, u64::from(b'.'), 0),
            ),
            ("dbcn write", sbi_call(dbcn::EID, 0, 64, RAM_BASE)),
            ("unknown SBI extension", sbi_call(0x0900_0001, 0, 0, 0)),
            (
                "mmio read, testdev",
                RawExit::MmioRead {
                    addr: TESTDEV_BASE + 8,
                    len: 4,
                },
            ),
            (
                "mmio write, testdev",
                RawExit::MmioWrite {
                    addr: TESTDEV_BASE,
                    len: 8,
                    data: [1; 8],
                },
            ),
            (
                "mmio read, unclaimed",
                RawExit::MmioRead {
                    addr: 0x2000_0000,
                    len: 4,
                },
            ),
            (
                "mmio write, unclaimed",
                RawExit::MmioWrite {
                    addr: 0x2000_0000,
                    len: 4,
                    data: [2; 8],
                },
            ),
        ];
        for (name, exit) in kinds {
            let mut bus = Bus::new();
            bus.insert(TESTDEV_BASE, TESTDEV_SIZE, Arc::new(TestDev::default()))
                .unwrap();
            let ctx = LoopContext {
                bus: Arc::new(bus),
                control: Arc::new(VmControl::default()),
                hypercall: None,
                log_hypercalls: false,
            };
            let sbi = Sbi::new(SbiContext {
                memory: memory.clone(),
                console: Arc::new(Sink),
            });
            let config = VcpuConfig {
                hart_id: 0,
                dtb_addr: RAM_BASE,
            };
            let mut vcpu = Vcpu::new(0, config, RepeatVcpu(exit), sbi).unwrap();
            // The first exits may set up what is set up once (the "logged once" EID set).
            for _ in 0..16 {
                let exit = vcpu.run().unwrap();
                assert_eq!(handle_exit(&mut vcpu, exit, &ctx).unwrap(), CONTINUE);
            }
            let before = counting::allocations();
            for _ in 0..10_000 {
                let exit = vcpu.run().unwrap();
                assert_eq!(handle_exit(&mut vcpu, exit, &ctx).unwrap(), CONTINUE);
            }
            assert_eq!(
                counting::allocations() - before,
                0,
                "{name}: allocations in 10,000 exits"
            );
            assert!(!ctx.control.should_stop(), "{name}: the VM went on");
        }
    }
}
