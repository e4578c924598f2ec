//! A scripted hypervisor: each vCPU replays a fixed list of exits and records what rvvmm
//! answered. It stands in for KVM in the x86_64 unit and integration tests, the way
//! Firecracker's `test_handle_kvm_exit` feeds made-up exits to its dispatcher.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::{HypervisorError, InterruptLine, MpState, RawExit, Result, VcpuBackend, VmBackend};

/// One step of a script: an exit to return from `run`, or a change of mp_state before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `run` returns this exit.
    Exit(RawExit),
    /// The vCPU's mp_state becomes this (as when another hart calls HSM hart_start).
    SetMpState(MpState),
    /// `run` sleeps this many milliseconds, then goes on with the next step.
    SleepMs(u64),
    /// `run` idles like a guest in WFI: sleeps 1 ms and returns `Interrupted`, forever.
    Idle,
    /// `run` returns this exit forever, each after 50 us of "guest time"; a signal landing in
    /// that time makes it return `Interrupted` instead, as KVM_RUN does, and a signal landing
    /// outside it (while the VMM handles the exit) is lost, as it is with KVM.
    Busy(RawExit),
}

/// What rvvmm did to a scripted vCPU, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `set_reg(id, value)`.
    SetReg(u64, u64),
    /// `set_sbi_return(index, value)`.
    SbiReturn(usize, u64),
    /// `set_mmio_read_data(data)`.
    MmioData(Vec<u8>),
    /// `run()` was called.
    Run,
    /// `reset()` was called.
    Reset,
}

/// The shared record of one scripted vCPU.
#[derive(Debug, Default)]
pub struct Record {
    /// Every call, in order.
    pub events: Vec<Event>,
    /// Register values as last written (or preset).
    pub regs: BTreeMap<u64, u64>,
    /// Registers whose writes fail, as KVM refuses to switch off some extensions.
    pub fixed: Vec<u64>,
}

/// A VM whose vCPUs replay scripts.
#[derive(Debug, Default)]
pub struct ScriptedVm {
    scripts: Mutex<BTreeMap<u32, (MpState, Vec<Step>)>>,
    records: Mutex<BTreeMap<u32, Arc<Mutex<Record>>>>,
    lines: Mutex<BTreeMap<u32, Arc<RecordedLine>>>,
    regs: BTreeMap<u64, u64>,
    fixed: Vec<u64>,
    /// Guest memory ranges mapped with `map_memory`: (start, len).
    pub mapped: Mutex<Vec<(u64, u64)>>,
    /// ioeventfds registered: (address, data); shared like `irq_lines`.
    pub ioevents: Arc<Mutex<Vec<(u64, u32)>>>,
    /// Whether this VM offers an in-kernel AIA.
    pub aia: bool,
    /// The APLIC sources its AIA reports (default: as many as asked).
    pub aia_sources: Option<u32>,
    /// Whether its vCPUs can be reset in place (KVM's MP_STATE_RESET).
    pub vcpu_reset: bool,
    /// The AIA created, if any.
    pub aia_config: Mutex<Option<super::AiaConfig>>,
    /// KVM_IRQ_LINE calls: (irq, level); shared, so a test keeps a handle after the VM goes.
    pub irq_lines: Arc<Mutex<Vec<(u32, bool)>>>,
    /// The in-kernel AIA's registers by (group, attribute), as written; shared like
    /// `irq_lines`.
    pub aia_attrs: Arc<Mutex<BTreeMap<(u32, u64), u64>>>,
}

impl ScriptedVm {
    /// A VM with no scripts yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers an in-kernel AIA.
    pub fn with_aia(mut self) -> Self {
        self.aia = true;
        self
    }

    /// Lets its vCPUs be reset in place, as KVM 6.16 and later can.
    pub fn with_vcpu_reset(mut self) -> Self {
        self.vcpu_reset = true;
        self
    }

    /// Presets a register that every vCPU reports (e.g. the ISA config register).
    pub fn with_reg(mut self, id: u64, value: u64) -> Self {
        self.regs.insert(id, value);
        self
    }

    /// Makes writes to register `id` fail on every vCPU (as KVM refuses to switch off an
    /// extension it has no means to hide).
    pub fn with_fixed_reg(mut self, id: u64) -> Self {
        self.fixed.push(id);
        self
    }

    /// Gives vCPU `index` a script and its initial mp_state.
    pub fn script(self, index: u32, initial: MpState, steps: Vec<Step>) -> Self {
        self.scripts.lock().unwrap().insert(index, (initial, steps));
        self
    }

    /// The record of vCPU `index`, once created.
    pub fn record(&self, index: u32) -> Option<Arc<Mutex<Record>>> {
        self.records.lock().unwrap().get(&index).cloned()
    }
}

impl VmBackend for ScriptedVm {
    type Vcpu = ScriptedVcpu;

    fn map_memory(&self, memory: &GuestMemoryMmap) -> Result<()> {
        let mut mapped = self.mapped.lock().unwrap();
        for region in memory.iter() {
            mapped.push((region.start_addr().0, region.len()));
        }
        Ok(())
    }

    fn has_in_kernel_aia(&self) -> bool {
        self.aia
    }

    fn create_aia(&self, config: &super::AiaConfig) -> Result<super::AiaGeometry> {
        if !self.aia {
            return Err(HypervisorError::MissingCapability("an in-kernel AIA"));
        }
        *self.aia_config.lock().unwrap() = Some(config.clone());
        Ok(super::AiaGeometry {
            ids: 255,
            sources: self.aia_sources.unwrap_or(config.num_sources),
        })
    }

    fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        self.irq_lines.lock().unwrap().push((irq, level));
        Ok(())
    }

    fn register_ioevent(
        &self,
        _evt: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        data: u32,
    ) -> Result<()> {
        let mut ioevents = self.ioevents.lock().unwrap();
        if ioevents.contains(&(addr, data)) {
            // As KVM: one registration per address and datamatch.
            return Err(HypervisorError::Ioctl {
                op: "KVM_IOEVENTFD",
                source: std::io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        ioevents.push((addr, data));
        Ok(())
    }

    fn unregister_ioevent(
        &self,
        _evt: &vmm_sys_util::eventfd::EventFd,
        addr: u64,
        data: u32,
    ) -> Result<()> {
        let mut ioevents = self.ioevents.lock().unwrap();
        match ioevents.iter().position(|&e| e == (addr, data)) {
            Some(i) => {
                ioevents.remove(i);
                Ok(())
            }
            None => Err(HypervisorError::Ioctl {
                op: "KVM_IOEVENTFD (deassign)",
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            }),
        }
    }

    fn enable_vcpu_reset(&self) -> bool {
        self.vcpu_reset
    }

    fn aia_attr(&self, group: u32, attr: u64) -> Result<u64> {
        if self.aia_config.lock().unwrap().is_none() {
            return Err(HypervisorError::MissingCapability(
                "an in-kernel AIA in this VM",
            ));
        }
        Ok(self
            .aia_attrs
            .lock()
            .unwrap()
            .get(&(group, attr))
            .copied()
            .unwrap_or(0))
    }

    fn set_aia_attr(&self, group: u32, attr: u64, value: u64) -> Result<()> {
        if self.aia_config.lock().unwrap().is_none() {
            return Err(HypervisorError::MissingCapability(
                "an in-kernel AIA in this VM",
            ));
        }
        self.aia_attrs.lock().unwrap().insert((group, attr), value);
        Ok(())
    }

    fn create_vcpu(&self, index: u32) -> Result<ScriptedVcpu> {
        let (mp_state, steps) = self
            .scripts
            .lock()
            .unwrap()
            .remove(&index)
            .unwrap_or((MpState::Runnable, Vec::new()));
        let record = self.record_handle(index);
        Ok(ScriptedVcpu {
            index,
            mp_state,
            steps: steps.into(),
            record,
            resettable: self.vcpu_reset,
            line: self.line_handle(index),
        })
    }
}

/// A vCPU that replays its script.
#[derive(Debug)]
pub struct ScriptedVcpu {
    index: u32,
    mp_state: MpState,
    steps: VecDeque<Step>,
    record: Arc<Mutex<Record>>,
    /// Its VM lets vCPUs be reset in place.
    resettable: bool,
    /// The vCPU's interrupt line.
    pub line: Arc<RecordedLine>,
}

impl ScriptedVcpu {
    fn log(&self, event: Event) {
        self.record.lock().unwrap().events.push(event);
    }

    /// Applies leading mp_state steps, as a concurrent HSM call would.
    fn apply_state_steps(&mut self) {
        while let Some(Step::SetMpState(state)) = self.steps.front().copied() {
            self.mp_state = state;
            self.steps.pop_front();
        }
    }
}

impl ScriptedVcpu {
    /// A stopped hart with nothing scripted waits in `KVM_RUN` as with KVM: until a signal
    /// (a kick) interrupts it.
    fn sleep_stopped() -> RawExit {
        let forever = libc::timespec {
            tv_sec: 3600,
            tv_nsec: 0,
        };
        // SAFETY: nanosleep reads `forever` and, given a null remainder pointer, writes
        // nothing; a signal ends it early with EINTR.
        unsafe { libc::nanosleep(&forever, std::ptr::null_mut()) };
        RawExit::Interrupted
    }

    /// Sets the mp_state now, as another hart's SBI HSM call would.
    pub fn force_mp_state(&mut self, state: MpState) {
        self.mp_state = state;
    }
}

/// A scripted vCPU's interrupt line: records each level it is set to.
#[derive(Debug, Default)]
pub struct RecordedLine {
    /// Every level set, in order.
    pub levels: Mutex<Vec<bool>>,
}

impl InterruptLine for RecordedLine {
    fn set_level(&self, level: bool) -> Result<()> {
        self.levels.lock().unwrap().push(level);
        Ok(())
    }
}

impl VcpuBackend for ScriptedVcpu {
    fn interrupt_line(&self) -> Result<Arc<dyn InterruptLine>> {
        Ok(self.line.clone())
    }

    fn get_reg(&self, id: u64) -> Result<u64> {
        Ok(self
            .record
            .lock()
            .unwrap()
            .regs
            .get(&id)
            .copied()
            .unwrap_or(0))
    }

    fn set_reg(&mut self, id: u64, value: u64) -> Result<()> {
        let mut record = self.record.lock().unwrap();
        if record.fixed.contains(&id) {
            return Err(HypervisorError::Ioctl {
                op: "KVM_SET_ONE_REG",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        record.regs.insert(id, value);
        record.events.push(Event::SetReg(id, value));
        Ok(())
    }

    fn run(&mut self) -> Result<RawExit> {
        self.log(Event::Run);
        self.apply_state_steps();
        if self.mp_state == MpState::Stopped && self.steps.is_empty() {
            return Ok(Self::sleep_stopped());
        }
        loop {
            match self.steps.front().copied() {
                Some(Step::Exit(exit)) => {
                    self.steps.pop_front();
                    return Ok(exit);
                }
                Some(Step::SleepMs(ms)) => {
                    self.steps.pop_front();
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                    self.apply_state_steps();
                }
                Some(Step::Idle) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    return Ok(RawExit::Interrupted);
                }
                Some(Step::Busy(exit)) => {
                    let guest_time = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 50_000,
                    };
                    // SAFETY: nanosleep reads `guest_time` and, given a null remainder
                    // pointer, writes nothing.
                    let rc = unsafe { libc::nanosleep(&guest_time, std::ptr::null_mut()) };
                    return Ok(if rc == 0 { exit } else { RawExit::Interrupted });
                }
                Some(Step::SetMpState(_)) => self.apply_state_steps(),
                None => return Err(HypervisorError::ScriptEnded(self.index)),
            }
        }
    }

    fn set_sbi_return(&mut self, index: usize, value: u64) {
        self.log(Event::SbiReturn(index, value));
    }

    fn set_mmio_read_data(&mut self, data: [u8; 8], len: u8) {
        self.log(Event::MmioData(data[..usize::from(len).min(8)].to_vec()));
    }

    fn mp_state(&mut self) -> Result<MpState> {
        self.apply_state_steps();
        Ok(self.mp_state)
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<()> {
        self.mp_state = state;
        Ok(())
    }

    fn complete_pending(&mut self) -> Result<()> {
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        if !self.resettable {
            return Err(HypervisorError::MissingCapability(
                "KVM_CAP_RISCV_MP_STATE_RESET (Linux 6.16)",
            ));
        }
        self.log(Event::Reset);
        Ok(())
    }

    fn reg_list(&self) -> Result<Vec<u64>> {
        Ok(self.record.lock().unwrap().regs.keys().copied().collect())
    }

    fn get_reg_bytes(&self, id: u64) -> Result<Vec<u8>> {
        let value = self.get_reg(id)?;
        Ok(value.to_le_bytes()[..super::reg_size(id).min(8)].to_vec())
    }

    fn set_reg_bytes(&mut self, id: u64, bytes: &[u8]) -> Result<()> {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.set_reg(id, u64::from_le_bytes(word))
    }
}

impl ScriptedVm {
    /// A handle on vCPU `index`'s interrupt line, made before the vCPU exists.
    pub fn line_handle(&self, index: u32) -> Arc<RecordedLine> {
        self.lines.lock().unwrap().entry(index).or_default().clone()
    }

    /// A handle on vCPU `index`'s record, made before the vCPU exists (so a test can keep it
    /// after handing the VM to the VMM).
    pub fn record_handle(&self, index: u32) -> Arc<Mutex<Record>> {
        self.records
            .lock()
            .unwrap()
            .entry(index)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Record {
                    events: Vec::new(),
                    regs: self.regs.clone(),
                    fixed: self.fixed.clone(),
                }))
            })
            .clone()
    }
}
