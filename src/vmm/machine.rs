//! A booted machine: its vCPU threads, its event loop and its devices, owned by the control
//! loop, which pauses, resumes, inspects and stops it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use vm_memory::GuestMemoryMmap;

use crate::config::json::VmConfigJson;
use crate::console::Console;
use crate::devices::plic::Plic;
use crate::devices::uart::Uart;
use crate::devices::virtio::mmio::SharedTransport;
use crate::devices::Counted;
use crate::event_loop::EventLoop;
use crate::hypervisor::VmBackend;
use crate::interrupts::IrqMode;
use crate::memory::{guest_resident_kib, status_kib, vm_rss_kib};
use crate::snapshot::{self, aia, IrqchipState, SavedMachine, Sections};
use crate::vcpu::runner::VcpuThreads;

/// Counters by device or vCPU ID, then by name (Cloud Hypervisor's `VmCounters`).
pub type Counters = BTreeMap<String, BTreeMap<&'static str, u64>>;

/// A running (or paused) machine. Dropping it stops it.
pub struct Machine<V: VmBackend> {
    /// Declared first: dropped (stopped and joined) before the VM and its vCPU fds go.
    pub(super) vcpus: VcpuThreads<V::Vcpu>,
    pub(super) event_loop: Option<EventLoop>,
    pub(super) counted: Vec<(String, Arc<dyn Counted>)>,
    pub(super) console: Arc<dyn Console>,
    pub(super) memory: GuestMemoryMmap,
    pub(super) ram_size: u64,
    pub(super) paused: bool,
    pub(super) uart: Arc<Uart>,
    pub(super) plic: Option<Arc<Plic>>,
    pub(super) transports: Vec<(String, SharedTransport)>,
    pub(super) irq_mode: IrqMode,
    pub(super) cpus: u32,
    pub(super) vm: Arc<V>,
    /// The queue notifications registered with `vm` (see [`Devices::ioevents`]).
    ///
    /// [`Devices::ioevents`]: super::device_manager::Devices::ioevents
    pub(super) ioevents: Vec<(vmm_sys_util::eventfd::EventFd, u64, u32)>,
    /// `vm` resets vCPUs in place: a reboot keeps the VM ([`Self::stop_for_reboot`]).
    pub(super) resettable: bool,
}

/// What a reboot keeps of a machine whose hypervisor resets vCPUs in place: the VM with its
/// memory map and interrupt controller, and the vCPUs with the ISA and SBI extensions they
/// were set up with.
pub struct Kept<V: VmBackend> {
    pub(super) vm: Arc<V>,
    pub(super) vcpus: Vec<crate::vcpu::Vcpu<V::Vcpu>>,
    pub(super) irq_mode: IrqMode,
}

impl<V: VmBackend> Machine<V> {
    /// Writes the paused machine to `dir` (see [`crate::snapshot`]): the state file last, so a
    /// snapshot cut short has none and cannot be restored half. `config` is the VM's config
    /// section. Returns what was written, for the log.
    pub fn snapshot(&self, dir: &Path, config: &VmConfigJson) -> Result<String, String> {
        if !self.paused {
            return Err("the VM must be paused first (vm.pause)".into());
        }
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        match std::fs::remove_file(dir.join(snapshot::STATE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", dir.join(snapshot::STATE_FILE).display()))
            }
            _ => {}
        }
        if let Some(why) = self
            .transports
            .iter()
            .find_map(|(_, t)| t.lock().snapshot_refusal())
        {
            return Err(why);
        }
        let vcpus = self.vcpus.save_states()?;
        let irqchip = match (&self.plic, self.irq_mode) {
            (Some(plic), _) => IrqchipState::Plic(plic.save()),
            (
                None,
                IrqMode::Aia {
                    num_ids,
                    num_sources,
                },
            ) => IrqchipState::Aia(
                aia::save(&*self.vm, num_sources, self.cpus, num_ids)
                    .map_err(|e| format!("cannot read the AIA: {e}"))?,
            ),
            (None, IrqMode::Plic) => return Err("the PLIC is missing".into()),
        };
        let virtio = self
            .transports
            .iter()
            .map(|(id, t)| (id.clone(), t.lock().save()))
            .collect();
        let memory = snapshot::write_memory(&self.memory, dir).map_err(|e| e.to_string())?;
        let saved = SavedMachine {
            vcpus,
            irqchip,
            uart: self.uart.save(),
            virtio,
            memory,
        };
        let mut sections = Sections::default();
        sections.put("config", config).map_err(|e| e.to_string())?;
        saved.put(&mut sections).map_err(|e| e.to_string())?;
        sections.write(dir).map_err(|e| e.to_string())?;
        let (regs, (sbi_state, fwft)) = saved
            .vcpus
            .first()
            .map_or((0, (0, 0)), |v| (v.regs.len(), v.sbi_state_regs()));
        Ok(format!(
            "snapshot of {} vCPU(s) ({regs} registers each, {sbi_state} of them SBI extension state, {fwft} of those FWFT's) and {} MiB RAM ({} MiB of data) written to {} in {} ms",
            saved.vcpus.len(),
            saved.memory.size >> 20,
            saved.memory.data_bytes >> 20,
            dir.display(),
            started.elapsed().as_millis()
        ))
    }
}

impl<V: VmBackend> Machine<V> {
    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Parks every vCPU out of `KVM_RUN` and then the event loop: no guest instruction runs
    /// and no device works until [`Self::resume`]; queue notifications and input wait in their
    /// fds.
    pub fn pause(&mut self) -> Result<(), String> {
        self.vcpus.pause()?;
        if let Some(event_loop) = &self.event_loop {
            if let Err(e) = event_loop.pause() {
                self.vcpus.resume();
                return Err(e.to_string());
            }
        }
        self.paused = true;
        Ok(())
    }

    /// Lets the devices, then the vCPUs, run on where they stopped.
    pub fn resume(&mut self) {
        if let Some(event_loop) = &self.event_loop {
            event_loop.resume();
        }
        self.vcpus.resume();
        self.paused = false;
    }

    /// Every device's and vCPU's counters.
    pub fn counters(&self) -> Counters {
        let mut all: Counters = self
            .counted
            .iter()
            .map(|(id, device)| (id.clone(), device.counters()))
            .collect();
        if !self.paused {
            self.vcpus.sync_stats();
        }
        for (i, stats) in self.vcpus.stats().iter().enumerate() {
            all.insert(format!("_vcpu{i}"), stats.counters());
        }
        all
    }

    /// Stops the vCPUs (kicking them out of `KVM_RUN`), then the devices, and logs what the
    /// boot cost.
    pub fn stop(mut self) {
        self.vcpus.stop();
        self.stop_devices();
    }

    /// [`Self::stop`] for a reboot: where the VM resets vCPUs in place, the VM and the vCPUs
    /// are kept (the devices' ioeventfds taken back from the VM, for the next boot's devices);
    /// elsewhere `None`, and the next boot makes a new VM.
    pub fn stop_for_reboot(mut self) -> Option<Kept<V>> {
        if !self.resettable {
            self.stop();
            return None;
        }
        let vcpus = self.vcpus.stop_and_take();
        self.stop_devices();
        for (evt, addr, data) in &self.ioevents {
            if let Err(e) = self.vm.unregister_ioevent(evt, *addr, *data) {
                log::debug!("ioeventfd at {addr:#x} queue {data}: {e}");
            }
        }
        Some(Kept {
            vm: self.vm.clone(),
            vcpus: vcpus?,
            irq_mode: self.irq_mode,
        })
    }

    fn stop_devices(&mut self) {
        self.console.set_listener(None);
        let exits: Vec<u64> = self.vcpus.stats().iter().map(|s| s.total()).collect();
        drop(self.event_loop.take());
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
    }
}
