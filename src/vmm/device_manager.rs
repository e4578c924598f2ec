//! Config -> devices: the wired devices (finisher, UART, the PLIC or KVM's AIA, the test
//! device) and the virtio devices in their virtio-mmio slots, on the bus, with their queue
//! notifications (KVM ioeventfds), their interrupts, and what the event loop watches.
//!
//! The virtio slot order (disks, nets, rng, console, vsock, fs) exists here only ([`virtio_plan`]): the
//! device tree's slot list and the devices both come from it.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::riscv64::layout::{
    virtio_slot, FINISHER_BASE, FINISHER_SIZE, PLIC_BASE, PLIC_SIZE, TESTDEV_BASE, TESTDEV_SIZE,
    UART_BASE, UART_IRQ, UART_SIZE, VIRTIO_SIZE,
};
use crate::config::{ConsoleKind, VmConfig};
use crate::console::Console;
use crate::devices::finisher::Finisher;
use crate::devices::plic::Plic;
use crate::devices::testdev::TestDev;
use crate::devices::uart::Uart;
use crate::devices::virtio::block::{Block, DiskError};
use crate::devices::virtio::console::VirtioConsole;
use crate::devices::virtio::fs::{FsBackend, VirtioFs};
use crate::devices::virtio::mmio::{MmioTransport, SharedTransport, QUEUE_NOTIFY};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::Tap;
use crate::devices::virtio::vsock::{Vsock, VsockListener};
use crate::devices::virtio::VirtioDevice;
use crate::devices::{Bus, BusError, Counted};
use crate::event_loop::Subscriber;
use crate::hypervisor::{InterruptLine, VmBackend};
use crate::interrupts::{ChipInterrupt, Interrupt, IrqChip, IrqMode, KvmIrqChip};

/// Errors building the devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Devices could not be placed on the bus.
    #[error("cannot build the MMIO bus: {0}")]
    Bus(#[from] BusError),
    /// A disk could not be opened.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A device's host resource (eventfd, tap clone) could not be set up.
    #[error("cannot set up virtio-{device}: {source}")]
    Host {
        /// The device.
        device: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A device's interrupt is beyond what the in-kernel APLIC has.
    #[error("the in-kernel APLIC has {sources} interrupt sources, and a device needs source {irq} (use fewer devices, or --irqchip plic)")]
    IrqBeyondAplic {
        /// The sources KVM's APLIC has.
        sources: u32,
        /// The device's source.
        irq: u32,
    },
}

/// One kind of virtio device, with its index among its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioKind {
    /// `--disk` number `n`.
    Block(usize),
    /// `--net` number `n`.
    Net(usize),
    /// `--rng`.
    Rng,
    /// `--console virtio`.
    Console,
    /// `--vsock`.
    Vsock,
    /// `--fs` number `n`.
    Fs(usize),
}

/// A virtio device's place: its kind, slot base and interrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioSlot {
    /// What sits there.
    pub kind: VirtioKind,
    /// The device's ID in `vm.counters` and `vm.info`: the config's, else Cloud Hypervisor's
    /// style (`_disk0`, `_net0`, `_rng`, `_console`).
    pub id: String,
    /// MMIO base.
    pub base: u64,
    /// Interrupt source.
    pub irq: u32,
}

/// The virtio devices `config` asks for, in slot order: disks, nets, rng, console, vsock, fs.
pub fn virtio_plan(config: &VmConfig) -> Vec<VirtioSlot> {
    let kinds = (0..config.disks.len())
        .map(VirtioKind::Block)
        .chain((0..config.nets.len()).map(VirtioKind::Net))
        .chain(config.rng.then_some(VirtioKind::Rng))
        .chain((config.console == ConsoleKind::Virtio).then_some(VirtioKind::Console))
        .chain(config.vsock.is_some().then_some(VirtioKind::Vsock))
        .chain((0..config.fs.len()).map(VirtioKind::Fs));
    kinds
        .enumerate()
        .map(|(slot, kind)| {
            let (base, irq) = virtio_slot(slot);
            let id = match kind {
                VirtioKind::Block(n) => config.disks[n].id.clone().unwrap_or(format!("_disk{n}")),
                VirtioKind::Net(n) => config.nets[n].id.clone().unwrap_or(format!("_net{n}")),
                VirtioKind::Rng => "_rng".into(),
                VirtioKind::Console => "_console".into(),
                VirtioKind::Vsock => "_vsock".into(),
                VirtioKind::Fs(n) => format!("_fs{n}"),
            };
            VirtioSlot {
                kind,
                id,
                base,
                irq,
            }
        })
        .collect()
}

/// The devices of one boot.
pub struct Devices {
    /// The MMIO bus with every device on it.
    pub bus: Bus,
    /// The UART (the console listener feeds it input).
    pub uart: Arc<Uart>,
    /// What the event loop runs: the virtio transports.
    pub subscribers: Vec<Subscriber>,
    /// The virtio console's input eventfd, when it is the console.
    pub console_input: Option<EventFd>,
    /// Each device's ID and counters.
    pub counted: Vec<(String, Arc<dyn Counted>)>,
    /// The user-space PLIC, when it is the interrupt controller.
    pub plic: Option<Arc<Plic>>,
    /// Each virtio transport by device ID, in slot order.
    pub transports: Vec<(String, SharedTransport)>,
    /// The queue notifications registered with the VM as ioeventfds (eventfd, address,
    /// queue), for a reboot that keeps the VM to take back.
    pub ioevents: Vec<(EventFd, u64, u32)>,
}

/// What the device manager needs from the VMM.
pub struct DeviceContext<'a, V> {
    /// The configuration.
    pub config: &'a VmConfig,
    /// The VM (ioeventfds, the AIA's lines).
    pub vm: &'a Arc<V>,
    /// Guest RAM.
    pub memory: &'a GuestMemoryMmap,
    /// The host console.
    pub console: &'a Arc<dyn Console>,
    /// The `--net` taps, opened once for every boot.
    pub taps: &'a [Tap],
    /// The `--vsock` socket, bound once for every boot.
    pub vsock: Option<&'a VsockListener>,
    /// The `--fs` backends, connected once for every boot.
    pub fs: &'a [Arc<FsBackend>],
}

/// Builds every device of one boot. `lines` are the vCPUs' external interrupt lines (for the
/// PLIC).
pub fn build<V: VmBackend + 'static>(
    ctx: &DeviceContext<'_, V>,
    irq_mode: IrqMode,
    lines: Vec<Arc<dyn InterruptLine>>,
) -> Result<Devices, DeviceError> {
    if let IrqMode::Aia { num_sources, .. } = irq_mode {
        let plan = virtio_plan(ctx.config);
        let needed = plan.iter().map(|s| s.irq).chain([UART_IRQ]).max();
        if let Some(irq) = needed.filter(|&irq| irq > num_sources) {
            return Err(DeviceError::IrqBeyondAplic {
                sources: num_sources,
                irq,
            });
        }
    }
    let mut bus = Bus::new();
    let mut user_plic = None;
    let chip: Arc<dyn IrqChip> = match irq_mode {
        IrqMode::Aia { .. } => Arc::new(KvmIrqChip(ctx.vm.clone())),
        IrqMode::Plic => {
            let plic = Arc::new(Plic::new(lines));
            bus.insert(PLIC_BASE, PLIC_SIZE, plic.clone())?;
            user_plic = Some(plic.clone());
            plic
        }
    };
    let virtio_console = ctx.config.console == ConsoleKind::Virtio;
    let uart = Arc::new(Uart::new(
        ctx.console.clone(),
        chip.clone(),
        UART_IRQ,
        !virtio_console,
    ));
    bus.insert(FINISHER_BASE, FINISHER_SIZE, Arc::new(Finisher))?;
    bus.insert(UART_BASE, UART_SIZE, uart.clone())?;
    if ctx.config.testdev {
        bus.insert(TESTDEV_BASE, TESTDEV_SIZE, Arc::new(TestDev::default()))?;
    }
    let mut devices = Devices {
        bus,
        uart: uart.clone(),
        subscribers: Vec::new(),
        console_input: None,
        counted: vec![("_serial".into(), uart as Arc<dyn Counted>)],
        plic: user_plic,
        transports: Vec::new(),
        ioevents: Vec::new(),
    };
    for slot in virtio_plan(ctx.config) {
        let device = virtio_device(ctx, slot.kind, &mut devices.console_input)?;
        let name = device.name();
        let host = |source| DeviceError::Host {
            device: name,
            source,
        };
        // An edge either way: the PLIC latches it; on the AIA a pulse of the line.
        let interrupt: Arc<dyn Interrupt> = Arc::new(ChipInterrupt {
            chip: chip.clone(),
            irq: slot.irq,
        });
        let how = match irq_mode {
            IrqMode::Aia { .. } => "AIA, edge",
            IrqMode::Plic => "user-space PLIC",
        };
        let transport = MmioTransport::new(device, ctx.memory.clone(), interrupt).map_err(host)?;
        log::info!(
            "virtio-{name} at {:#x}, interrupt {} ({how})",
            slot.base,
            slot.irq
        );
        for (queue, evt) in transport.queue_evts().iter().enumerate() {
            let (addr, data) = (slot.base + QUEUE_NOTIFY, queue as u32);
            match ctx.vm.register_ioevent(evt, addr, data) {
                Ok(()) => match evt.try_clone() {
                    Ok(evt) => devices.ioevents.push((evt, addr, data)),
                    Err(e) => log::warn!("virtio-{name}: cannot keep its ioeventfd ({e}); after a reboot its notifies will exit"),
                },
                // Still correct without it: the notify exits and the transport signals.
                Err(e) => log::warn!("virtio-{name}: no ioeventfd ({e}); notifies will exit"),
            }
        }
        let shared = SharedTransport::new(transport);
        devices
            .bus
            .insert(slot.base, VIRTIO_SIZE, Arc::new(shared.clone()))?;
        devices.counted.push((
            slot.id.clone(),
            Arc::new(shared.clone()) as Arc<dyn Counted>,
        ));
        devices.transports.push((slot.id.clone(), shared.clone()));
        devices.subscribers.push(Box::new(shared));
    }
    Ok(devices)
}

/// The device model of one slot.
fn virtio_device<V>(
    ctx: &DeviceContext<'_, V>,
    kind: VirtioKind,
    console_input: &mut Option<EventFd>,
) -> Result<Box<dyn VirtioDevice>, DeviceError> {
    let config = ctx.config;
    Ok(match kind {
        VirtioKind::Block(n) => {
            let disk = &config.disks[n];
            Box::new(Block::open(&disk.path, disk.readonly)?)
        }
        VirtioKind::Net(n) => {
            let backend = ctx.taps[n]
                .try_clone()
                .map_err(|source| DeviceError::Host {
                    device: "net",
                    source,
                })?;
            let mac = config.nets[n]
                .mac
                .unwrap_or([0x52, 0x54, 0, 0x12, 0x34, 0x56 + n as u8]);
            Box::new(Net::new(Box::new(backend), mac))
        }
        VirtioKind::Rng => Box::new(Rng::new()),
        VirtioKind::Console => {
            let host = |source| DeviceError::Host {
                device: "console",
                source,
            };
            let console = VirtioConsole::new(ctx.console.clone()).map_err(host)?;
            *console_input = Some(console.input_evt().map_err(host)?);
            Box::new(console)
        }
        VirtioKind::Vsock => {
            let host = |source| DeviceError::Host {
                device: "vsock",
                source,
            };
            let (Some(spec), Some(listener)) = (&config.vsock, ctx.vsock) else {
                return Err(host(std::io::Error::other("no vsock socket was bound")));
            };
            let device = Vsock::new(spec.cid, listener).map_err(host)?;
            Box::new(device)
        }
        VirtioKind::Fs(n) => {
            let backend = ctx.fs.get(n).cloned().ok_or_else(|| DeviceError::Host {
                device: "fs",
                source: std::io::Error::other("no backend was connected"),
            })?;
            Box::new(VirtioFs::new(backend).map_err(|source| DeviceError::Host {
                device: "fs",
                source,
            })?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiskSpec, NetSpec};

    #[test]
    fn slots_go_disks_nets_rng_console_vsock() {
        let config = VmConfig {
            disks: vec![
                DiskSpec {
                    path: "a".into(),
                    readonly: false,
                    id: None,
                },
                DiskSpec {
                    path: "b".into(),
                    readonly: true,
                    id: Some("root".into()),
                },
            ],
            nets: vec![NetSpec {
                tap: "tap0".into(),
                ..Default::default()
            }],
            rng: true,
            console: ConsoleKind::Virtio,
            vsock: Some(crate::config::VsockSpec {
                cid: 3,
                socket: "v.sock".into(),
            }),
            ..Default::default()
        };
        let plan = virtio_plan(&config);
        let kinds: Vec<_> = plan.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                VirtioKind::Block(0),
                VirtioKind::Block(1),
                VirtioKind::Net(0),
                VirtioKind::Rng,
                VirtioKind::Console,
                VirtioKind::Vsock
            ]
        );
        assert_eq!((plan[0].base, plan[0].irq), (0x1000_1000, 1));
        assert_eq!((plan[4].base, plan[4].irq), (0x1000_5000, 5));
        let ids: Vec<_> = plan.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["_disk0", "root", "_net0", "_rng", "_console", "_vsock"]
        );
        assert!(virtio_plan(&VmConfig::default()).is_empty());
    }
}
