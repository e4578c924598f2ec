//! The KVM backend: the only code in rvvmm that issues KVM ioctls (riscv64 hosts only).
//!
//! kvm-ioctls makes the VM, vCPUs and memory slots; KVM_RUN and its exit decode are ours
//! (see [`KvmVcpu::run`]): kvm-ioctls 0.25 has no RISC-V SBI exit variant anyway, and an SBI
//! call is read from, and answered in, the `riscv_sbi` member of the `kvm_run` exit union.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use kvm_bindings::{
    kvm_interrupt, kvm_userspace_memory_region, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_EXIT_RISCV_SBI, KVM_EXIT_SYSTEM_EVENT,
    KVM_INTERRUPT_SET, KVM_INTERRUPT_UNSET, KVM_MP_STATE_STOPPED,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_ref};

use super::{
    HypervisorError, InterruptLine, MpState, RawExit, Result, SbiCall, VcpuBackend, VmBackend,
};

/// ioctl numbers kvm-ioctls lacks for RISC-V.
mod nr {
    #![allow(missing_docs)]
    use kvm_bindings::kvm_interrupt;
    vmm_sys_util::ioctl_iow_nr!(KVM_INTERRUPT, 0xAE, 0x86, kvm_interrupt);
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, 0xAE, 0x80);
    use kvm_bindings::kvm_reg_list;
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_REG_LIST, 0xAE, 0xb0, kvm_reg_list);
}
use nr::{KVM_GET_REG_LIST, KVM_INTERRUPT, KVM_RUN};

/// A vCPU's VS-level external interrupt, driven with KVM_INTERRUPT on a duplicate of the vCPU
/// fd. The kernel handles KVM_INTERRUPT as an asynchronous vCPU ioctl, so a user-space PLIC
/// can call it from any thread while the vCPU sits in KVM_RUN.
struct KvmInterruptLine {
    fd: OwnedFd,
}

impl InterruptLine for KvmInterruptLine {
    fn set_level(&self, level: bool) -> Result<()> {
        let irq = kvm_interrupt {
            irq: if level {
                KVM_INTERRUPT_SET
            } else {
                KVM_INTERRUPT_UNSET
            } as u32,
        };
        // SAFETY: `fd` is an open vCPU fd (a dup we own) and `irq` is a valid kvm_interrupt
        // that the kernel only reads.
        let ret = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
        if ret < 0 {
            return Err(HypervisorError::Ioctl {
                op: "KVM_INTERRUPT",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

fn ioctl_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |e| HypervisorError::Ioctl {
        op,
        source: io::Error::from_raw_os_error(e.errno()),
    }
}

/// A KVM VM (`KVM_CREATE_VM`).
pub struct KvmVm {
    // The AIA device goes first, then the VM, then `_kvm`; the guest memory outlives all of
    // them (the VMM owns it and drops the VM first).
    aia: std::sync::Mutex<Option<kvm_ioctls::DeviceFd>>,
    vm: VmFd,
    _kvm: Kvm,
}

/// `KVM_CREATE_DEVICE_TEST`: ask whether the device could be created.
const KVM_CREATE_DEVICE_TEST: u32 = 1;

fn aia_device(
    vm: &VmFd,
    flags: u32,
) -> std::result::Result<kvm_ioctls::DeviceFd, kvm_ioctls::Error> {
    let mut dev = kvm_bindings::kvm_create_device {
        type_: kvm_bindings::kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
        fd: 0,
        flags,
    };
    vm.create_device(&mut dev)
}

/// Sets a device attribute to `value`, whose type has the size KVM expects for it (u32 for
/// AIA config attributes, u64 for addresses and control).
fn set_attr<T>(dev: &kvm_ioctls::DeviceFd, group: u32, attr: u64, value: &T) -> Result<()> {
    let a = kvm_bindings::kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: value as *const T as u64,
    };
    dev.set_device_attr(&a)
        .map_err(ioctl_err("KVM_SET_DEVICE_ATTR (AIA)"))
}

/// Reads a device attribute into a `T` (u32 for AIA config and APLIC attributes, u64 for
/// IMSIC ones).
fn get_attr<T: Copy + Default>(dev: &kvm_ioctls::DeviceFd, group: u32, attr: u64) -> Result<T> {
    let mut value = T::default();
    let mut a = kvm_bindings::kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: &mut value as *mut T as u64,
    };
    // SAFETY: `addr` points at a live `T`, which the callers size as KVM writes the attribute.
    unsafe { dev.get_device_attr(&mut a) }.map_err(ioctl_err("KVM_GET_DEVICE_ATTR (AIA)"))?;
    Ok(value)
}

impl KvmVm {
    /// Opens /dev/kvm, checks what rvvmm needs, and creates a VM.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new()
            .map_err(|e| HypervisorError::OpenKvm(io::Error::from_raw_os_error(e.errno())))?;
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::OneReg, "KVM_CAP_ONE_REG"),
            (Cap::MpState, "KVM_CAP_MP_STATE"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(HypervisorError::MissingCapability(name));
            }
        }
        crate::startup::startup_step("/dev/kvm opened");
        let vm = kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        Ok(KvmVm {
            aia: std::sync::Mutex::new(None),
            vm,
            _kvm: kvm,
        })
    }
}

impl VmBackend for KvmVm {
    type Vcpu = KvmVcpu;

    fn map_memory(&self, memory: &GuestMemoryMmap) -> Result<()> {
        for (slot, region) in memory.iter().enumerate() {
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: `userspace_addr` is the start of a live mmap of `memory_size` bytes owned
            // by `memory`. The VMM keeps that GuestMemoryMmap alive for longer than this VM: it
            // drops the VM (and every vCPU) before the memory, so KVM never maps freed pages.
            unsafe { self.vm.set_user_memory_region(mem_region) }
                .map_err(ioctl_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    fn has_in_kernel_aia(&self) -> bool {
        match aia_device(&self.vm, KVM_CREATE_DEVICE_TEST) {
            Ok(not_a_device) => {
                // With KVM_CREATE_DEVICE_TEST the kernel creates no fd, but kvm-ioctls wraps
                // the untouched `fd` field (0) in a DeviceFd: dropping it would close stdin
                // (which the lab saw as console input dying after the first line). Leak it.
                std::mem::forget(not_a_device);
                true
            }
            Err(_) => false,
        }
    }

    fn create_aia(&self, config: &super::AiaConfig) -> Result<super::AiaGeometry> {
        use kvm_bindings::*;
        let dev = aia_device(&self.vm, 0).map_err(ioctl_err("KVM_CREATE_DEVICE (AIA)"))?;
        let config_attr = |attr: u32| u64::from(attr);
        let mode: u32 = get_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            config_attr(KVM_DEV_RISCV_AIA_CONFIG_MODE),
        )?;
        let ids: u32 = get_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            config_attr(KVM_DEV_RISCV_AIA_CONFIG_IDS),
        )?;
        log::info!("in-kernel AIA: mode {mode} (0 emulated, 1 hardware, 2 auto), {ids} IMSIC ids");
        let srcs = u32::min(config.num_sources, KVM_DEV_RISCV_AIA_SRCS_MAX);
        let harts = config.imsic_addrs.len() as u32;
        let hart_bits = u32::max(1, 32 - harts.saturating_sub(1).leading_zeros());
        // Config attributes are u32; address and control attributes are u64.
        set_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            config_attr(KVM_DEV_RISCV_AIA_CONFIG_SRCS),
            &srcs,
        )?;
        set_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            config_attr(KVM_DEV_RISCV_AIA_CONFIG_HART_BITS),
            &hart_bits,
        )?;
        set_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_ADDR,
            u64::from(KVM_DEV_RISCV_AIA_ADDR_APLIC),
            &config.aplic_addr,
        )?;
        for (hart, addr) in config.imsic_addrs.iter().enumerate() {
            set_attr(&dev, KVM_DEV_RISCV_AIA_GRP_ADDR, 1 + hart as u64, addr)?;
        }
        set_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_CTRL,
            u64::from(KVM_DEV_RISCV_AIA_CTRL_INIT),
            &0u64,
        )?;
        // What the guest is told is what KVM holds now, not what was asked.
        let sources: u32 = get_attr(
            &dev,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            config_attr(KVM_DEV_RISCV_AIA_CONFIG_SRCS),
        )?;
        *self.aia.lock().unwrap_or_else(|e| e.into_inner()) = Some(dev);
        Ok(super::AiaGeometry { ids, sources })
    }

    fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        self.vm
            .set_irq_line(irq, level)
            .map_err(ioctl_err("KVM_IRQ_LINE"))
    }

    fn register_ioevent(
        &self,
        evt: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        data: u32,
    ) -> Result<()> {
        self.vm
            .register_ioevent(evt, &kvm_ioctls::IoEventAddress::Mmio(addr), data)
            .map_err(ioctl_err("KVM_IOEVENTFD"))
    }

    fn unregister_ioevent(
        &self,
        evt: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        data: u32,
    ) -> Result<()> {
        self.vm
            .unregister_ioevent(evt, &kvm_ioctls::IoEventAddress::Mmio(addr), data)
            .map_err(ioctl_err("KVM_IOEVENTFD (deassign)"))
    }

    fn enable_vcpu_reset(&self) -> bool {
        use super::uapi::KVM_CAP_RISCV_MP_STATE_RESET as CAP;
        // Not asked with KVM_CHECK_EXTENSION: RISC-V KVM answers 0 for this capability even
        // where it has it (seen on 7.2; arch/riscv/kvm/vm.c lists it only in enable_cap). An
        // older KVM refuses the enable with EINVAL.
        let cap = kvm_bindings::kvm_enable_cap {
            cap: CAP,
            ..Default::default()
        };
        match self.vm.enable_cap(&cap) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("KVM_ENABLE_CAP(MP_STATE_RESET): {e}; reboots make a new VM");
                false
            }
        }
    }

    fn aia_attr(&self, group: u32, attr: u64) -> Result<u64> {
        let aia = self.aia.lock().unwrap_or_else(|e| e.into_inner());
        let dev = aia.as_ref().ok_or(HypervisorError::MissingCapability(
            "an in-kernel AIA in this VM",
        ))?;
        if group == kvm_bindings::KVM_DEV_RISCV_AIA_GRP_IMSIC {
            get_attr::<u64>(dev, group, attr)
        } else {
            get_attr::<u32>(dev, group, attr).map(u64::from)
        }
    }

    fn set_aia_attr(&self, group: u32, attr: u64, value: u64) -> Result<()> {
        let aia = self.aia.lock().unwrap_or_else(|e| e.into_inner());
        let dev = aia.as_ref().ok_or(HypervisorError::MissingCapability(
            "an in-kernel AIA in this VM",
        ))?;
        if group == kvm_bindings::KVM_DEV_RISCV_AIA_GRP_IMSIC {
            set_attr(dev, group, attr, &value)
        } else {
            set_attr(dev, group, attr, &(value as u32))
        }
    }

    fn create_vcpu(&self, index: u32) -> Result<KvmVcpu> {
        let fd = self
            .vm
            .create_vcpu(u64::from(index))
            .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        Ok(KvmVcpu {
            fd,
            #[cfg(feature = "exit-timing")]
            timing: ExitTiming::default(),
        })
    }
}

/// A KVM vCPU (`KVM_CREATE_VCPU`).
pub struct KvmVcpu {
    fd: VcpuFd,
    #[cfg(feature = "exit-timing")]
    timing: ExitTiming,
}

/// `--features exit-timing` (a measuring build for `cargo xtask bench`, never the default):
/// time-CSR ticks the vCPU thread spends in user space between one KVM_RUN's return and the
/// next KVM_RUN, the VMM's whole share of an exit's cost. bare-kvm measures its own the same
/// way, so the two are compared without the guest's and KVM's share, which dwarfs them.
#[cfg(feature = "exit-timing")]
#[derive(Default)]
struct ExitTiming {
    /// The time CSR when KVM_RUN last returned (0: not yet).
    returned: u64,
    /// Ticks between returns and the next entries.
    user_ticks: u64,
    /// KVM_RUN returns counted in `user_ticks`.
    exits: u64,
}

#[cfg(feature = "exit-timing")]
impl ExitTiming {
    fn now() -> u64 {
        let t: u64;
        // SAFETY: rdtime reads the time CSR into a register; it touches no memory. Linux lets
        // user space read it (scounteren.TM).
        unsafe { std::arch::asm!("rdtime {0}", out(reg) t, options(nomem, nostack)) };
        t
    }

    fn entering(&mut self) {
        if self.returned != 0 {
            self.user_ticks += Self::now() - self.returned;
            self.exits += 1;
        }
    }

    fn returned(&mut self) {
        self.returned = Self::now();
    }
}

impl KvmVcpu {
    /// The exits a vCPU makes once in a VM's life, or never: out of the hot path's pages.
    #[cold]
    #[inline(never)]
    fn rare_exit(&mut self) -> RawExit {
        let run = self.fd.get_kvm_run();
        match run.exit_reason {
            KVM_EXIT_SYSTEM_EVENT => {
                // SAFETY: exit_reason says `system_event` is the live member of the exit
                // union; `data` is plain integers, read only when the kernel filled one.
                let event = unsafe { &run.__bindgen_anon_1.system_event };
                let data = if event.ndata > 0 {
                    // SAFETY: as above; data[0] is within the array whatever ndata says.
                    unsafe { event.__bindgen_anon_1.data[0] }
                } else {
                    0
                };
                RawExit::SystemEvent {
                    kind: event.type_,
                    data,
                }
            }
            KVM_EXIT_INTR => RawExit::Interrupted,
            KVM_EXIT_FAIL_ENTRY => {
                // SAFETY: exit_reason says `fail_entry` is the live member of the exit union.
                let reason = unsafe {
                    run.__bindgen_anon_1
                        .fail_entry
                        .hardware_entry_failure_reason
                };
                RawExit::FailEntry { reason }
            }
            KVM_EXIT_INTERNAL_ERROR => RawExit::InternalError,
            other => {
                log::debug!("unexpected KVM exit {other}");
                RawExit::Other(other)
            }
        }
    }

    /// KVM_RUN returned -1: a signal (the VMM's kick), or a memory fault the kernel reports
    /// with EFAULT/EHWPOISON and `KVM_EXIT_MEMORY_FAULT`, or a real error.
    #[cold]
    #[inline(never)]
    fn run_error(&mut self) -> Result<RawExit> {
        let err = io::Error::last_os_error();
        let errno = err.raw_os_error().unwrap_or(0);
        if errno == libc::EINTR || errno == libc::EAGAIN {
            return Ok(RawExit::Interrupted);
        }
        let run = self.fd.get_kvm_run();
        if (errno == libc::EFAULT || errno == libc::EHWPOISON)
            && run.exit_reason == KVM_EXIT_MEMORY_FAULT
        {
            // SAFETY: exit_reason says `memory_fault` is the live member of the exit union.
            let fault = unsafe { &run.__bindgen_anon_1.memory_fault };
            return Ok(RawExit::MemoryFault {
                gpa: fault.gpa,
                size: fault.size,
            });
        }
        Err(HypervisorError::Ioctl {
            op: "KVM_RUN",
            source: err,
        })
    }
}

#[cfg(feature = "exit-timing")]
impl Drop for KvmVcpu {
    fn drop(&mut self) {
        log::info!(
            "EXIT-TIMING exits={} user_ticks={}",
            self.timing.exits,
            self.timing.user_ticks
        );
    }
}

impl VcpuBackend for KvmVcpu {
    fn interrupt_line(&self) -> Result<Arc<dyn InterruptLine>> {
        // SAFETY: dup of a valid open fd; the result is checked before use.
        let fd = unsafe { libc::dup(self.fd.as_raw_fd()) };
        if fd < 0 {
            return Err(HypervisorError::Ioctl {
                op: "dup of the vCPU fd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(KvmInterruptLine { fd }))
    }

    fn get_reg(&self, id: u64) -> Result<u64> {
        let mut bytes = [0u8; 8];
        self.fd
            .get_one_reg(id, &mut bytes)
            .map_err(ioctl_err("KVM_GET_ONE_REG"))?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn set_reg(&mut self, id: u64, value: u64) -> Result<()> {
        self.fd
            .set_one_reg(id, &value.to_le_bytes())
            .map_err(ioctl_err("KVM_SET_ONE_REG"))?;
        Ok(())
    }

    // Hand-written rather than kvm-ioctls' `VcpuFd::run`, measured: its decode is one large
    // match over every architecture's exits, behind a jump table, and returns borrowed slices
    // that the MMIO arms then copied again. Under the nested lab's QEMU every distinct page
    // and indirect jump on the exit path costs a software-TLB or jump-cache refill after each
    // KVM_RUN; the bench's user-space time per exit shows the difference. Only the exits a
    // RISC-V vCPU produces are decoded; the ioctl itself is the same one kvm-ioctls issues.
    #[inline(always)]
    fn run(&mut self) -> Result<RawExit> {
        #[cfg(feature = "exit-timing")]
        self.timing.entering();
        // SAFETY: `fd` is an open vCPU fd and KVM_RUN takes no argument; its shared `kvm_run`
        // page stays mapped for as long as `fd` lives.
        let ret = unsafe { ioctl(&self.fd, KVM_RUN()) };
        #[cfg(feature = "exit-timing")]
        self.timing.returned();
        if ret < 0 {
            return self.run_error();
        }
        let run = self.fd.get_kvm_run();
        // Each arm returns its own `Ok`: built as one value and wrapped after the match, the
        // 72-byte exit was copied with a memcpy call on every exit (seen in the riscv64 build).
        match run.exit_reason {
            KVM_EXIT_MMIO => {
                // SAFETY: exit_reason says `mmio` is the live member of the exit union.
                let mmio = unsafe { &run.__bindgen_anon_1.mmio };
                let len = mmio.len.min(8) as u8;
                if mmio.is_write != 0 {
                    Ok(RawExit::MmioWrite {
                        addr: mmio.phys_addr,
                        len,
                        data: mmio.data,
                    })
                } else {
                    Ok(RawExit::MmioRead {
                        addr: mmio.phys_addr,
                        len,
                    })
                }
            }
            KVM_EXIT_RISCV_SBI => {
                // SAFETY: exit_reason says `riscv_sbi` is the live member of the exit union;
                // it is plain integers.
                let sbi = unsafe { &run.__bindgen_anon_1.riscv_sbi };
                // Element by element: copied as one array, LLVM moved it with unaligned memcpy
                // calls (a byte loop in libc) on every SBI exit.
                let a = &sbi.args;
                Ok(RawExit::Sbi(SbiCall {
                    eid: sbi.extension_id,
                    fid: sbi.function_id,
                    args: [a[0], a[1], a[2], a[3], a[4], a[5]],
                }))
            }
            _ => Ok(self.rare_exit()),
        }
    }

    fn set_sbi_return(&mut self, index: usize, value: u64) {
        let run = self.fd.get_kvm_run();
        if run.exit_reason == KVM_EXIT_RISCV_SBI && index < 2 {
            // SAFETY: exit_reason says `riscv_sbi` is the live member of the exit union; the
            // kernel copies ret[0..2] into the guest's a0/a1 on the next KVM_RUN.
            unsafe { run.__bindgen_anon_1.riscv_sbi.ret[index] = value };
        }
    }

    fn set_mmio_read_data(&mut self, data: [u8; 8], _len: u8) {
        let run = self.fd.get_kvm_run();
        if run.exit_reason == KVM_EXIT_MMIO {
            // exit_reason says `mmio` is the live member of the exit union (writing a union
            // field is safe); the kernel reads `data[..len]` into the guest's destination
            // register on the next KVM_RUN.
            run.__bindgen_anon_1.mmio.data = data;
        }
    }

    fn mp_state(&mut self) -> Result<MpState> {
        let state = self
            .fd
            .get_mp_state()
            .map_err(ioctl_err("KVM_GET_MP_STATE"))?;
        Ok(if state.mp_state == KVM_MP_STATE_STOPPED {
            MpState::Stopped
        } else {
            MpState::Runnable
        })
    }

    fn complete_pending(&mut self) -> Result<()> {
        self.fd.get_kvm_run().immediate_exit = 1;
        // SAFETY: as in `run`: an open vCPU fd, no argument, the kvm_run page mapped.
        let ret = unsafe { ioctl(&self.fd, KVM_RUN()) };
        let err = io::Error::last_os_error();
        self.fd.get_kvm_run().immediate_exit = 0;
        match ret {
            // KVM processed the pending answer, then saw immediate_exit.
            _ if ret < 0 && err.raw_os_error() == Some(libc::EINTR) => Ok(()),
            _ if ret < 0 => Err(HypervisorError::Ioctl {
                op: "KVM_RUN (immediate_exit)",
                source: err,
            }),
            _ => Ok(()),
        }
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        let mp_state = match state {
            MpState::Stopped => KVM_MP_STATE_STOPPED,
            MpState::Runnable => kvm_bindings::KVM_MP_STATE_RUNNABLE,
        };
        self.fd
            .set_mp_state(kvm_bindings::kvm_mp_state { mp_state })
            .map_err(ioctl_err("KVM_SET_MP_STATE"))
    }

    fn reset(&mut self) -> Result<()> {
        self.fd
            .set_mp_state(kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_INIT_RECEIVED,
            })
            .map_err(ioctl_err("KVM_SET_MP_STATE (reset)"))
    }

    // By hand: kvm-bindings' RegList holds at most 200 IDs, fewer than a RISC-V vCPU with V
    // and the newer extensions lists. `struct kvm_reg_list` is `u64 n` then `n` IDs; KVM says
    // E2BIG, with the count it needs in `n`, when they do not fit.
    fn reg_list(&self) -> Result<Vec<u64>> {
        let mut capacity = 512usize;
        loop {
            let mut buf = vec![0u64; 1 + capacity];
            buf[0] = capacity as u64;
            // SAFETY: `buf` is a live `struct kvm_reg_list` with room for `buf[0]` IDs after
            // the count; KVM writes at most that many.
            let ret = unsafe {
                vmm_sys_util::ioctl::ioctl_with_mut_ptr(
                    &self.fd,
                    KVM_GET_REG_LIST(),
                    buf.as_mut_ptr(),
                )
            };
            if ret == 0 {
                let n = (buf[0] as usize).min(capacity);
                return Ok(buf[1..=n].to_vec());
            }
            let err = io::Error::last_os_error();
            let needed = buf[0] as usize;
            if err.raw_os_error() != Some(libc::E2BIG) || needed <= capacity || needed > 65536 {
                return Err(HypervisorError::Ioctl {
                    op: "KVM_GET_REG_LIST",
                    source: err,
                });
            }
            capacity = needed;
        }
    }

    fn get_reg_bytes(&self, id: u64) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; super::reg_size(id)];
        self.fd
            .get_one_reg(id, &mut bytes)
            .map_err(ioctl_err("KVM_GET_ONE_REG"))?;
        Ok(bytes)
    }

    fn set_reg_bytes(&mut self, id: u64, bytes: &[u8]) -> Result<()> {
        self.fd
            .set_one_reg(id, bytes)
            .map_err(ioctl_err("KVM_SET_ONE_REG"))?;
        Ok(())
    }
}
