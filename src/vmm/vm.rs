//! A VM as configured: its description, the files it boots, its guest RAM and taps. Every
//! boot of it (`builder.rs`) is built from these; a reboot reuses them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::Result;
use crate::arch::riscv64::fdt::tree::Tree;
use crate::config::json::VmConfigJson;
use crate::config::{Resolved, VmConfig};
use crate::console::Console;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::fs::FsBackend;
use crate::devices::virtio::tap::Tap;
use crate::devices::virtio::vsock::VsockListener;
use crate::loader::{Initrd, Kernel};
use crate::memory::guest_memory;
use crate::startup::startup_step;
use crate::vcpu::runner::HypercallHandler;

/// A VM: what it is made of, ready to boot.
pub struct Vm {
    pub(super) config: VmConfig,
    /// The vCPU count in effect (the config's, else the dtb's, else 1).
    pub(super) cpus: u32,
    pub(super) kernel: Kernel,
    pub(super) initrd: Option<(Initrd, (u64, u64))>,
    pub(super) user_dtb: Option<Tree>,
    pub(super) ram_size: u64,
    pub(super) memory: GuestMemoryMmap,
    pub(super) console: Arc<dyn Console>,
    /// The embedder's hypercall handler; `None`: the `rvvmm` command's answers.
    pub(super) hypercall: Option<HypercallHandler>,
    pub(super) warned_dtb: AtomicBool,
    /// The `--net` taps, opened once: every boot's cards use them, so a tap rvvmm created
    /// (and its host-side address) lives as long as the VM.
    pub(super) taps: Vec<Tap>,
    /// The `--vsock` socket, bound once: host programs keep one path across guest reboots.
    pub(super) vsock: Option<VsockListener>,
    /// Each `--fs` backend's connection, made once: virtiofsd serves one and exits when it
    /// closes, so a guest reboot goes on with it.
    pub(super) fs: Vec<Arc<FsBackend>>,
    /// Each disk image, held locked (`flock`: shared when read-only, else exclusive) for as
    /// long as the VM exists, so that no other rvvmm (or QEMU, which locks too) writes it.
    _disk_locks: Vec<std::fs::File>,
}

impl Vm {
    /// Checks `config` ([`VmConfig::resolve`]), reads the kernel, initrd and dtb, checks they
    /// fit, opens the disks and taps, and maps guest RAM. Fails before any hypervisor call, so
    /// bad input is reported the same on every host.
    pub fn new(
        config: VmConfig,
        console: Arc<dyn Console>,
        hypercall: Option<HypercallHandler>,
    ) -> Result<Self> {
        let Resolved {
            cpus,
            memory: ram_size,
            dtb: user_dtb,
        } = config.resolve()?;
        let kernel = match config.load_addr {
            Some(addr) => Kernel::read(&config.kernel)?.at(addr)?,
            None => Kernel::read(&config.kernel)?,
        };
        kernel.check_fits(ram_size)?;
        let mut disk_locks = Vec::with_capacity(config.disks.len());
        for disk in &config.disks {
            // Opened now to report a bad image before anything runs; each boot opens it anew.
            Block::open(&disk.path, disk.readonly)?;
            disk_locks.push(Block::lock(&disk.path, disk.readonly)?);
        }
        let taps = config
            .nets
            .iter()
            .map(|n| Tap::open(&n.tap))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let vsock = config
            .vsock
            .as_ref()
            .map(|v| VsockListener::bind(&v.socket))
            .transpose()?;
        let fs = config
            .fs
            .iter()
            .map(|f| FsBackend::connect(&f.tag, &f.socket, f.queue_size).map(Arc::new))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let initrd = match &config.initrd {
            Some(path) => {
                let initrd = Initrd::read(path)?;
                let range = initrd.place(&kernel, ram_size)?;
                Some((initrd, range))
            }
            None => None,
        };
        let memory = guest_memory(ram_size, config.hugepages, config.ram_shared())?;
        if config.ram_shared() {
            log::info!("guest RAM is a shared memfd (vhost-user backends map it)");
        }
        startup_step("files read, guest RAM mapped");
        Ok(Vm {
            config,
            cpus,
            kernel,
            initrd,
            user_dtb,
            ram_size,
            memory,
            console,
            hypercall,
            warned_dtb: AtomicBool::new(false),
            taps,
            vsock,
            fs,
            _disk_locks: disk_locks,
        })
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Bytes of guest RAM.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The configuration as JSON, with the values in effect.
    pub fn config_json(&self) -> VmConfigJson {
        VmConfigJson::new(
            &self.config,
            &Resolved {
                cpus: self.cpus,
                memory: self.ram_size,
                dtb: None,
            },
        )
    }
}
