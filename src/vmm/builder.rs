//! The boot recipe, one linear function a boot ([`Vmm::build`]): give guest RAM to the VM,
//! load the kernel and initrd, choose the interrupt controller, create and set up the vCPUs,
//! build the devices, write the device tree, start the event loop and one thread per vCPU.
//! A reboot runs it again on the same RAM (as QEMU keeps RAM across a reset); the kernel,
//! initrd and device tree are written anew. A restore ([`Vm::restore`]) shares the middle of
//! the recipe (vCPUs, devices, threads) and replaces the loading with a snapshot's state.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use std::path::Path;

use super::device_manager::{self, DeviceContext, Devices};
use super::machine::{Kept, Machine};
use super::vm::Vm;
use super::{Result, VmmError};
use crate::arch::riscv64::fdt::{create_fdt, patch, with_room, FdtConfig, FdtError};
use crate::arch::riscv64::layout::{fdt_addr, APLIC_BASE, IMSIC_BASE, IMSIC_STRIDE, PLIC_NDEV};
use crate::arch::riscv64::regs::VcpuIsa;
use crate::config::IrqChipKind;
use crate::console::ConsoleEvent;
use crate::control::{ExitRequest, VmControl};
use crate::event_loop::EventLoop;
use crate::hypervisor::{AiaConfig, HypervisorError, VmBackend};
use crate::interrupts::IrqMode;
use crate::memory::vm_rss_kib;
use crate::sbi::{Sbi, SbiContext};
use crate::snapshot::{self, aia, IrqchipState, SavedMachine};
use crate::startup::startup_step;
use crate::vcpu::extensions::Toggles;
use crate::vcpu::runner::VcpuThreads;
use crate::vcpu::{Vcpu, VcpuConfig};

/// `--suspend-seconds` is for SBI SUSP: a host whose KVM lacks it (or a VM with it switched
/// off) is told so before the guest runs, on a boot and on a restore alike.
fn check_suspend_limit<B: crate::hypervisor::VcpuBackend>(
    control: &VmControl,
    vcpus: &[Vcpu<B>],
) -> Result<()> {
    if control.suspend_policy().limit.is_some() && !vcpus[0].has_system_suspend() {
        return Err(HypervisorError::MissingCapability(
            "SBI SUSP, which --suspend-seconds is for (Linux 6.14 or later forwards it; or it was switched off with --disable-sbi susp)",
        )
        .into());
    }
    Ok(())
}

impl Vm {
    /// Boot number `boot_count` on `vm`: everything built and every vCPU thread started.
    pub(super) fn build<V>(
        &self,
        vm: Arc<V>,
        control: &Arc<VmControl>,
        boot_count: u64,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
    {
        vm.map_memory(&self.memory)?;
        startup_step("guest RAM given to the VM");
        let (vcpus, irq_mode) = self.create_vcpus(&*vm)?;
        check_suspend_limit(control, &vcpus)?;
        startup_step("vCPUs created and set up");
        self.boot_on(vm, vcpus, irq_mode, control, boot_count)
    }

    /// Boot number `boot_count` on what the last boot kept (a reboot where the hypervisor
    /// resets vCPUs in place): each vCPU reset, the AIA emptied, RAM and the memory map kept;
    /// the kernel, initrd, dtb and devices as on a first boot.
    pub(super) fn reboot<V>(
        &self,
        kept: Kept<V>,
        control: &Arc<VmControl>,
        boot_count: u64,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
    {
        let Kept {
            vm,
            mut vcpus,
            irq_mode,
        } = kept;
        for vcpu in &mut vcpus {
            vcpu.reset()?;
        }
        if let IrqMode::Aia {
            num_ids,
            num_sources,
        } = irq_mode
        {
            aia::reset(&*vm, num_sources, self.cpus, num_ids)?;
        }
        log::info!("vCPUs reset in place (KVM_CAP_RISCV_MP_STATE_RESET); the VM, its memory map and interrupt controller kept");
        self.boot_on(vm, vcpus, irq_mode, control, boot_count)
    }

    /// The rest of a boot on set-up vCPUs: kernel, initrd, entry, devices, dtb, threads.
    fn boot_on<V>(
        &self,
        vm: Arc<V>,
        mut vcpus: Vec<Vcpu<V::Vcpu>>,
        irq_mode: IrqMode,
        control: &Arc<VmControl>,
        boot_count: u64,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
    {
        let entry = self.kernel.load(&self.memory)?;
        if let Some((initrd, (start, _))) = &self.initrd {
            initrd.load(&self.memory, *start)?;
        }
        startup_step("kernel and initrd loaded");
        for vcpu in &mut vcpus {
            vcpu.set_entry(entry)?;
        }
        let devices = self.devices(&vm, irq_mode, &vcpus)?;
        let fdt = self.device_tree(vcpus[0].isa(), boot_count, irq_mode)?;
        let dtb_addr = fdt_addr(self.ram_size);
        self.memory
            .write_slice(&fdt, GuestAddress(dtb_addr))
            .map_err(VmmError::FdtWrite)?;
        startup_step("device tree written");
        log::info!(
            "booting {} at {entry:#x}: {} vCPU(s), {} MiB RAM, dtb at {dtb_addr:#x}",
            self.config.kernel.display(),
            self.cpus,
            self.ram_size >> 20
        );
        self.start(vm, control, vcpus, devices, irq_mode, false)
    }

    /// The machine a snapshot in `dir` holds, on `vm`, started paused: RAM read back, the
    /// vCPUs, the interrupt controller and every device set to their saved state.
    pub(super) fn restore<V>(
        &self,
        vm: Arc<V>,
        control: &Arc<VmControl>,
        saved: &SavedMachine,
        dir: &Path,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
    {
        let restore_err = |what: String| VmmError::Restore(what);
        vm.map_memory(&self.memory)?;
        let read = snapshot::read_memory(&self.memory, dir, &saved.memory)?;
        log::info!(
            "snapshot RAM: read {} MiB of data into {} MiB of guest RAM (holes left zero)",
            read >> 20,
            self.ram_size >> 20
        );
        let (mut vcpus, irq_mode) = self.create_vcpus(&*vm)?;
        check_suspend_limit(control, &vcpus)?;
        let saved_aia = matches!(saved.irqchip, IrqchipState::Aia(_));
        if saved_aia != matches!(irq_mode, IrqMode::Aia { .. }) {
            return Err(restore_err(format!(
                "the snapshot's VM had {}, this one would have {} (give the same --irqchip; an AIA needs a host with one)",
                if saved_aia { "KVM's AIA" } else { "a PLIC" },
                if saved_aia { "a PLIC" } else { "KVM's AIA" }
            )));
        }
        if vcpus.len() != saved.vcpus.len() {
            return Err(restore_err(format!(
                "the snapshot has {} vCPUs, its config {}",
                saved.vcpus.len(),
                vcpus.len()
            )));
        }
        for (vcpu, state) in vcpus.iter_mut().zip(&saved.vcpus) {
            vcpu.restore_state(state)?;
        }
        let devices = self.devices(&vm, irq_mode, &vcpus)?;
        // The interrupt controller first: a device's restore raises its line again (a pending
        // interrupt, virtio-vsock's transport-reset event), which the controller's saved
        // pending bits would otherwise overwrite, leaving the guest deaf to it until the
        // device's next interrupt.
        match (&saved.irqchip, &devices.plic) {
            (IrqchipState::Plic(state), Some(plic)) => plic.restore(state).map_err(restore_err)?,
            (IrqchipState::Aia(state), _) => aia::restore(&*vm, state)?,
            (IrqchipState::Plic(_), None) => {
                return Err(restore_err(
                    "the snapshot's PLIC has no PLIC to go to".into(),
                ))
            }
        }
        devices.uart.restore(&saved.uart).map_err(restore_err)?;
        if devices.transports.len() != saved.virtio.len() {
            return Err(restore_err(format!(
                "the snapshot has {} virtio devices, its config {}",
                saved.virtio.len(),
                devices.transports.len()
            )));
        }
        for ((id, transport), (saved_id, state)) in devices.transports.iter().zip(&saved.virtio) {
            if id != saved_id {
                return Err(restore_err(format!(
                    "the snapshot's device {saved_id} is {id} in its config"
                )));
            }
            transport.lock().restore(state).map_err(restore_err)?;
        }
        log::info!(
            "restored {} vCPU(s), {} MiB RAM, {} virtio device(s) from {}",
            self.cpus,
            self.ram_size >> 20,
            saved.virtio.len(),
            dir.display()
        );
        self.start(vm, control, vcpus, devices, irq_mode, true)
    }

    /// Builds the devices of a boot on the vCPUs' interrupt lines.
    fn devices<V>(&self, vm: &Arc<V>, irq_mode: IrqMode, vcpus: &[Vcpu<V::Vcpu>]) -> Result<Devices>
    where
        V: VmBackend + 'static,
    {
        let lines = vcpus
            .iter()
            .map(|v| v.interrupt_line())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ctx = DeviceContext {
            config: &self.config,
            vm,
            memory: &self.memory,
            console: &self.console,
            taps: &self.taps,
            vsock: self.vsock.as_ref(),
            fs: &self.fs,
        };
        Ok(device_manager::build(&ctx, irq_mode, lines)?)
    }

    /// Starts the event loop and the vCPU threads (`paused`: parked before their first
    /// instruction, the event loop parked too) and hands the machine to the control loop.
    fn start<V>(
        &self,
        vm: Arc<V>,
        control: &Arc<VmControl>,
        vcpus: Vec<Vcpu<V::Vcpu>>,
        devices: Devices,
        irq_mode: IrqMode,
        paused: bool,
    ) -> Result<Machine<V>>
    where
        V: VmBackend + 'static,
        V::Vcpu: 'static,
    {
        let bus = Arc::new(devices.bus);
        let mut subscribers = devices.subscribers;
        subscribers.extend(self.console.clone().input_subscriber());
        // No devices and no input to watch (a bare-metal guest, stdin not a terminal or
        // pipe): no event loop thread either.
        let event_loop = if subscribers.is_empty() {
            None
        } else {
            Some(EventLoop::start(subscribers).map_err(VmmError::EventLoop)?)
        };
        if paused {
            if let Some(event_loop) = &event_loop {
                event_loop.pause().map_err(VmmError::EventLoop)?;
            }
            control.pause();
        }
        startup_step("devices and event loop started");

        let (uart, console_input) = (devices.uart.clone(), devices.console_input);
        if let Some(evt) = &console_input {
            // As for the UART below: input that is already waiting.
            let _ = evt.write(1);
        }
        let listener_control = control.clone();
        self.console
            .set_listener(Some(Arc::new(move |event| match event {
                ConsoleEvent::Input => {
                    // A key wakes a guest that suspended the system, as on a board whose
                    // UART is a wake-up source; the guest reads the key once it runs.
                    if listener_control.wake() {
                        log::info!("console input wakes the suspended guest");
                    }
                    match &console_input {
                        Some(evt) => {
                            let _ = evt.write(1);
                        }
                        None => uart.pull_input(),
                    }
                }
                ConsoleEvent::Quit => listener_control.request(ExitRequest::Exit(0)),
            })));
        // Input that arrived before the listener (typed while a snapshot was being restored)
        // is delivered now rather than at the next key; an inactive UART takes none.
        devices.uart.pull_input();
        // Before any vCPU runs, as KVM wants; asked again on a reboot that kept the VM.
        let resettable = vm.enable_vcpu_reset();
        let threads = match VcpuThreads::spawn(vcpus, &bus, control, &self.hypercall) {
            Ok(threads) => threads,
            Err(e) => {
                self.console.set_listener(None);
                return Err(e.into());
            }
        };
        if paused {
            threads.pause().map_err(VmmError::Restore)?;
        }
        startup_step("vCPU threads started");
        log::info!("VmRSS at start: {} KiB", vm_rss_kib());
        Ok(Machine {
            vcpus: threads,
            event_loop,
            counted: devices.counted,
            console: self.console.clone(),
            memory: self.memory.clone(),
            ram_size: self.ram_size,
            paused,
            uart: devices.uart,
            plic: devices.plic,
            transports: devices.transports,
            irq_mode,
            cpus: self.cpus,
            vm,
            ioevents: devices.ioevents,
            resettable,
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

    /// Creates the vCPUs (set up) and, for the AIA, the in-kernel AIA, which needs them all.
    pub(super) fn create_vcpus<V: VmBackend>(
        &self,
        vm: &V,
    ) -> Result<(Vec<Vcpu<V::Vcpu>>, IrqMode)> {
        let aia = self.choose_aia(vm)?;
        let off = Toggles {
            isa: self.config.disable_isa.clone(),
            sbi: self.config.disable_sbi.clone(),
        };
        let mut vcpus = Vec::with_capacity(self.cpus as usize);
        for index in 0..self.cpus {
            let mut vcpu = self.create_vcpu(vm, index)?;
            vcpu.setup_with(&off)?;
            vcpus.push(vcpu);
        }
        startup_step("vCPUs set up (before the AIA)");
        if !aia {
            return Ok((vcpus, IrqMode::Plic));
        }
        let config = AiaConfig {
            num_sources: PLIC_NDEV,
            aplic_addr: APLIC_BASE,
            imsic_addrs: (0..u64::from(self.cpus))
                .map(|h| IMSIC_BASE + h * IMSIC_STRIDE)
                .collect(),
        };
        let aia = vm.create_aia(&config)?;
        Ok((
            vcpus,
            IrqMode::Aia {
                num_ids: aia.ids,
                num_sources: aia.sources,
            },
        ))
    }

    /// The device tree for vCPUs offering `isa`: the user's, patched, or a generated one.
    pub(super) fn device_tree(
        &self,
        isa: &VcpuIsa,
        boot_count: u64,
        irqchip: IrqMode,
    ) -> Result<Vec<u8>> {
        let config = FdtConfig {
            irqchip,
            num_cpus: self.cpus,
            isa: isa.clone(),
            ram_size: self.ram_size,
            cmdline: self.config.cmdline.clone(),
            initrd: self.initrd.as_ref().map(|(_, range)| *range),
            testdev: self.config.testdev,
            virtio: device_manager::virtio_plan(&self.config)
                .iter()
                .map(|slot| (slot.base, slot.irq))
                .collect(),
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
        Ok(with_room(blob)?)
    }
}
