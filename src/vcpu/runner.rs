//! A vCPU's thread: run the guest, hand each exit to its handler, repeat; and the handle the
//! control loop keeps to kick, pause, resume and stop the threads.
//!
//! The exit policy is [`handle_exit`]: MMIO goes to the bus, hypercalls to the embedder's
//! handler (or rvvmm's answers), rare exits (power-off, reboot, failures) become stop requests.
//! Each handler answers a [`Flow`]: `Break` ends the thread before it re-enters the guest.
//!
//! Hot exits (hypercall, MMIO, an SBI call the vCPU answered) read no shared flag: a thread
//! learns of a stop or pause asked elsewhere when a kick (a signal, `KICK_SIGNAL`) makes
//! `KVM_RUN` return `Interrupted`, a cold exit after which [`VmControl::attention`] is read.
//! A kick can land just before `KVM_RUN` is entered and be lost, so kicks repeat until every
//! thread has done what was asked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::{ExitReason, Vcpu, VcpuError, SRST_REASON_SYSTEM_FAILURE};
use crate::control::{ExitRequest, Flow, GuestStop, VmControl, CONTINUE};
use crate::devices::Bus;
use crate::hypervisor::VcpuBackend;
use crate::sbi::hypercall;
use crate::startup::{process_start, startup_step};

/// How the embedder answers guest hypercalls: (nr, args) -> `Continue((SBI error, value))`,
/// or `Break(request)` to stop the VM before the calling vCPU runs another guest instruction.
pub type HypercallHandler = Arc<dyn Fn(u64, &[u64; 6]) -> hypercall::Answer + Send + Sync>;

/// How often the control loop re-kicks vCPU threads that have not yet done what it asked.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// How long a pause may take before it is given up (a vCPU stuck in the host kernel).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the control loop waits for the vCPUs to publish their counters.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// A vCPU's exits by kind, counted by its thread on its own stack: each hot kind in the arm of
/// [`handle_exit`] that handles it (one add in code the exit runs anyway: no branch, table or
/// page of its own), and SBI calls the vCPU answered as the rest of the total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExitCounts {
    /// Every exit that reached user space.
    pub total: u64,
    /// Hypercalls.
    pub hypercall: u64,
    /// MMIO loads.
    pub mmio_read: u64,
    /// MMIO stores.
    pub mmio_write: u64,
    /// `KVM_RUN` interrupted (kicks, signals).
    pub interrupted: u64,
    /// Power-off, reboot, suspend.
    pub system: u64,
    /// HSM: this hart started or stopped.
    pub hsm: u64,
    /// KVM could not run the guest, or back its memory.
    pub failure: u64,
}

impl ExitCounts {
    /// The counts under their `vm.counters` names.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        let counted = self.hypercall
            + self.mmio_read
            + self.mmio_write
            + self.interrupted
            + self.system
            + self.hsm
            + self.failure;
        [
            ("exits", self.total),
            ("exits_sbi", self.total.saturating_sub(counted)),
            ("exits_hypercall", self.hypercall),
            ("exits_mmio_read", self.mmio_read),
            ("exits_mmio_write", self.mmio_write),
            ("exits_interrupted", self.interrupted),
            ("exits_system", self.system),
            ("exits_hsm", self.hsm),
            ("exits_failure", self.failure),
        ]
    }
}

/// What a vCPU thread works with: moved into the thread, so that the exit path reads it from
/// the thread's own stack (no page of its own to touch).
pub struct VcpuContext {
    /// The MMIO bus.
    pub bus: Arc<Bus>,
    /// Stop, pause and counter requests.
    pub control: Arc<VmControl>,
    /// `None`: the built-in answers, called directly (no indirect call on the exit path).
    pub hypercall: Option<HypercallHandler>,
    /// Whether hypercalls are logged (debug level, read as the vCPU threads start).
    pub log_hypercalls: bool,
    /// Where this thread publishes its exit counts.
    pub stats: Arc<VcpuStats>,
}

impl VcpuContext {
    /// A context for one vCPU thread.
    pub fn new(
        bus: Arc<Bus>,
        control: Arc<VmControl>,
        hypercall: Option<HypercallHandler>,
    ) -> Self {
        VcpuContext {
            bus,
            control,
            hypercall,
            log_hypercalls: log::log_enabled!(log::Level::Debug),
            stats: Arc::default(),
        }
    }
}

/// A vCPU's [`ExitCounts`], as its thread last published them: after every cold exit, when it
/// stops, and when the control loop asks ([`VcpuThreads::sync_stats`]).
#[derive(Debug, Default)]
pub struct VcpuStats {
    counts: std::sync::Mutex<ExitCounts>,
}

impl VcpuStats {
    fn publish(&self, counts: &ExitCounts) {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = *counts;
    }

    /// The counts last published.
    pub fn get(&self) -> ExitCounts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exits by kind, under their `vm.counters` names.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.get().named().into_iter().collect()
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.get().total
    }
}

/// The vCPU threads of one boot. Each thread gives its vCPU back when it ends
/// ([`Self::stop_and_take`]), for a reboot that resets the vCPUs in place.
pub struct VcpuThreads<B: VcpuBackend> {
    threads: Vec<JoinHandle<Vcpu<B>>>,
    stats: Vec<Arc<VcpuStats>>,
    control: Arc<VmControl>,
}

/// A vCPU thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start a vCPU thread: {0}")]
pub struct SpawnError(#[source] pub Arc<std::io::Error>);

impl<B: VcpuBackend> VcpuThreads<B> {
    /// Starts one thread per vCPU. On failure the threads already started are stopped.
    pub fn spawn(
        vcpus: Vec<Vcpu<B>>,
        bus: &Arc<Bus>,
        control: &Arc<VmControl>,
        hypercall: &Option<HypercallHandler>,
    ) -> Result<Self, SpawnError> {
        install_kick_handler();
        let mut set = VcpuThreads {
            threads: Vec::with_capacity(vcpus.len()),
            stats: Vec::with_capacity(vcpus.len()),
            control: control.clone(),
        };
        for vcpu in vcpus {
            let ctx = VcpuContext::new(bus.clone(), control.clone(), hypercall.clone());
            let stats = ctx.stats.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || {
                    let mut vcpu = vcpu;
                    crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Vcpu);
                    vcpu_loop(&mut vcpu, &ctx);
                    ctx.control.vcpu_ended();
                    vcpu
                });
            match spawned {
                Ok(handle) => {
                    set.threads.push(handle);
                    set.stats.push(stats);
                }
                Err(e) => {
                    let e = Arc::new(e);
                    control.request(ExitRequest::NoThread(e.clone()));
                    set.stop();
                    return Err(SpawnError(e));
                }
            }
        }
        Ok(set)
    }

    /// Each vCPU's published exit counts, in vCPU order.
    pub fn stats(&self) -> &[Arc<VcpuStats>] {
        &self.stats
    }

    /// Has every running vCPU publish its exit counts now (a kick: one cold exit each).
    pub fn sync_stats(&self) {
        self.control.request_sync();
        let count = self.threads.len();
        let control = &self.control;
        if !self.kick_until(SYNC_TIMEOUT, |wait| control.wait_synced(count, wait)) {
            log::warn!("not every vCPU published its counters within 1 s");
        }
        self.control.end_sync();
    }

    /// Kicks every thread still running until `done` says so, or until `timeout`. `done(wait)`
    /// waits up to `wait` on the control's condvar, so it returns as soon as the last thread
    /// has done what was asked, not at the next kick.
    fn kick_until(&self, timeout: Duration, done: impl Fn(Duration) -> bool) -> bool {
        let start = std::time::Instant::now();
        while !done(Duration::ZERO) {
            if start.elapsed() > timeout {
                return false;
            }
            for thread in self.threads.iter().filter(|t| !t.is_finished()) {
                // The thread may finish between the check and the kill; ESRCH is harmless then.
                let _ = thread.kill(KICK_SIGNAL());
            }
            done(KICK_INTERVAL);
        }
        true
    }

    /// Parks every vCPU out of `KVM_RUN` (they burn no CPU until [`Self::resume`]).
    pub fn pause(&self) -> Result<(), String> {
        self.control.pause();
        let count = self.threads.len();
        let control = &self.control;
        if self.kick_until(PAUSE_TIMEOUT, |wait| control.wait_parked(count, wait)) {
            Ok(())
        } else {
            self.control.resume();
            Err("the vCPUs did not pause within 5 s".into())
        }
    }

    /// Has every parked vCPU save its state (a snapshot; the VM must be paused).
    pub fn save_states(&self) -> Result<Vec<crate::vcpu::state::VcpuState>, String> {
        self.control.save_parked(self.threads.len(), PAUSE_TIMEOUT)
    }

    /// Lets the parked vCPUs run on.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// Stops every thread (a stop must have been requested, or is requested now as a shutdown)
    /// and joins them. A thread that stops by itself (its exit asked for the stop) ends at once;
    /// the others are kicked out of `KVM_RUN`.
    pub fn stop(&mut self) {
        self.stop_and_take();
    }

    /// [`Self::stop`], and the vCPUs back, in vCPU order; `None` if a thread panicked.
    pub fn stop_and_take(&mut self) -> Option<Vec<Vcpu<B>>> {
        if self.control.stop_request().is_none() {
            self.control.request(ExitRequest::Shutdown);
        }
        let count = self.threads.len();
        let control = &self.control;
        self.kick_until(Duration::MAX, |wait| {
            control.wait_vcpus_ended(count, wait) || self.threads.iter().all(|t| t.is_finished())
        });
        let mut vcpus = Vec::with_capacity(count);
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(vcpu) => vcpus.push(vcpu),
                Err(_) => {
                    log::error!("a vCPU thread panicked");
                    panicked = true;
                }
            }
        }
        (!panicked).then_some(vcpus)
    }
}

impl<B: VcpuBackend> Drop for VcpuThreads<B> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// Whether the process's first guest exit was logged (once, not again after a reboot).
static FIRST_EXIT_LOGGED: AtomicBool = AtomicBool::new(false);

/// A vCPU thread: run, dispatch the exit, repeat until the VM stops.
///
/// A stop this vCPU's own exit asks for (a finisher store, SRST, an embedder's hypercall
/// handler, an error) comes back from [`handle_exit`] as `Break`: the thread records it and
/// leaves before re-entering the guest, so the guest runs no instruction after asking. A stop,
/// pause or counter request made elsewhere (another vCPU, the console's Ctrl-A x, a signal,
/// the API) is seen after a cold exit, which the kicks provide.
///
/// On riscv64 the loop is its own function in a section that starts on a page boundary
/// ([`HOT_SECTION`]): under QEMU each code page an exit touches costs a software-TLB refill
/// after every `KVM_RUN`, and where the linker happens to put the loop decides whether its hot
/// path spans one page or two. Measured twice: +0.37 us a hypercall and an MMIO read when it
/// straddled a boundary (84f6841), and +0.31-0.33 us (1224 vs 912 ns user time a hypercall,
/// 1424 vs 1094 an MMIO read) after code elsewhere grew and moved the inlined loop across one.
#[inline(never)]
#[cfg_attr(target_arch = "riscv64", link_section = ".text.rvvmm_hot")]
pub fn vcpu_loop<B: VcpuBackend>(vcpu: &mut Vcpu<B>, ctx: &VcpuContext) {
    if vcpu.id() == 0 {
        startup_step("vCPU 0 thread entering the guest");
    }
    // Counted here on the stack, published at cold exits.
    let mut exits = ExitCounts::default();
    let mut seen = (0, 0);
    if ctx.control.attention() && checkpoint(vcpu, ctx, &mut seen) {
        return;
    }
    loop {
        let (flow, hot) = match vcpu.run() {
            Ok(exit) => {
                // A stopped hart's `Nothing` is a kick that ended its wait, not a guest exit.
                let guest_exit = !matches!(exit, ExitReason::Nothing) || !vcpu.is_stopped();
                let hot = guest_exit
                    && matches!(
                        exit,
                        ExitReason::Nothing
                            | ExitReason::Hypercall { .. }
                            | ExitReason::MmioRead { .. }
                            | ExitReason::MmioWrite { .. }
                    );
                if guest_exit {
                    exits.total += 1;
                    if exits.total == 1 {
                        first_exit(vcpu.id());
                    }
                }
                match handle_exit(vcpu, exit, ctx, &mut exits) {
                    Ok(flow) => (flow, hot),
                    Err(e) => return vcpu_failed(ctx, e, &exits),
                }
            }
            Err(e) => return vcpu_failed(ctx, e, &exits),
        };
        if let Flow::Break(stop) = flow {
            return vcpu_stops(ctx, stop, &exits);
        }
        if !hot && cold_exit(vcpu, ctx, &exits, &mut seen) {
            return;
        }
    }
}

/// The section of the vCPU loop: page-aligned by this directive (the assembler raises the
/// section's alignment to it, so the linker starts the section, and the loop, on a page).
#[cfg(target_arch = "riscv64")]
pub const HOT_SECTION: &str = ".text.rvvmm_hot";

#[cfg(target_arch = "riscv64")]
core::arch::global_asm!(
    ".pushsection .text.rvvmm_hot,\"ax\",@progbits",
    ".balign 4096",
    ".popsection"
);

/// After a cold exit: publish the counters, obey a pending request (park while paused).
/// Returns whether the thread must stop.
#[cold]
#[inline(never)]
fn cold_exit<B: VcpuBackend>(
    vcpu: &mut Vcpu<B>,
    ctx: &VcpuContext,
    exits: &ExitCounts,
    seen: &mut (u64, u64),
) -> bool {
    ctx.stats.publish(exits);
    if vcpu.take_suspend() && suspend(vcpu, ctx, seen) {
        return true;
    }
    ctx.control.attention() && checkpoint(vcpu, ctx, seen)
}

/// The guest suspended the system (SBI SUSP, [`ExitReason::Halt`]; KVM has checked that every
/// other hart is stopped and queued this vCPU's reset to the resume address): sleep, burning
/// no CPU, until a wake-up, then run on, which resumes the guest. Returns whether to stop.
#[cold]
#[inline(never)]
fn suspend<B: VcpuBackend>(
    vcpu: &mut Vcpu<B>,
    ctx: &VcpuContext,
    (seen_sync, seen_save): &mut (u64, u64),
) -> bool {
    let policy = ctx.control.suspend_policy();
    log::info!(
        "hart {} suspended the system (SBI SUSP, suspend to RAM); it wakes on {}",
        vcpu.id(),
        policy.describe()
    );
    let slept = std::time::Instant::now();
    let wake = ctx.control.suspended(seen_sync, &mut |sync| {
        ctx.control.checkpoint_saving(sync, seen_save, &mut || {
            vcpu.save_state().map_err(|e| e.to_string())
        })
    });
    if wake == crate::control::Wake::Stop {
        return true;
    }
    log::info!(
        "the guest wakes from its system suspend after {:.1} s ({}); hart {} resumes",
        slept.elapsed().as_secs_f64(),
        match wake {
            crate::control::Wake::Timer => "the timer",
            _ => "a wake-up event",
        },
        vcpu.id()
    );
    false
}

/// Obeys the control's requests (counters, pause, a snapshot's save while paused); returns
/// whether the thread must stop.
#[cold]
#[inline(never)]
fn checkpoint<B: VcpuBackend>(
    vcpu: &mut Vcpu<B>,
    ctx: &VcpuContext,
    (seen_sync, seen_save): &mut (u64, u64),
) -> bool {
    ctx.control
        .checkpoint_saving(seen_sync, seen_save, &mut || {
            vcpu.save_state().map_err(|e| e.to_string())
        })
}

/// The vCPU's own exit asked to stop the VM.
#[cold]
#[inline(never)]
fn vcpu_stops(ctx: &VcpuContext, stop: GuestStop, exits: &ExitCounts) {
    ctx.stats.publish(exits);
    ctx.control.request(stop.into());
}

/// A vCPU error stops the VM with its message.
#[cold]
#[inline(never)]
fn vcpu_failed(ctx: &VcpuContext, e: Box<VcpuError>, exits: &ExitCounts) {
    ctx.stats.publish(exits);
    ctx.control.request(ExitRequest::VcpuFailed(Arc::from(e)));
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
pub fn handle_exit<B: VcpuBackend>(
    vcpu: &mut Vcpu<B>,
    exit: ExitReason,
    ctx: &VcpuContext,
    counts: &mut ExitCounts,
) -> Result<Flow, Box<VcpuError>> {
    match exit {
        ExitReason::Nothing => {}
        ExitReason::Hypercall { nr, ref args } => {
            counts.hypercall += 1;
            if ctx.log_hypercalls {
                log_hypercall(nr, args);
            }
            let answer = match &ctx.hypercall {
                Some(handler) => handler(nr, args),
                None => hypercall::answer(nr, args),
            };
            let (error, value) = match answer {
                hypercall::Answer::Continue(pair) => pair,
                hypercall::Answer::Break(stop) => return Ok(Flow::Break(stop)),
            };
            vcpu.set_gpr(0, error as u64)?;
            vcpu.set_gpr(1, value)?;
        }
        ExitReason::MmioRead { addr, width } => {
            counts.mmio_read += 1;
            let mut data = [0u8; 8];
            ctx.bus.read(addr, &mut data[..usize::from(width)]);
            vcpu.complete_mmio_read(u64::from_le_bytes(data));
        }
        ExitReason::MmioWrite { addr, width, data } => {
            counts.mmio_write += 1;
            return Ok(ctx
                .bus
                .write(addr, &data.to_le_bytes()[..usize::from(width)]));
        }
        // By reference into the cold function: a by-value move of the 64-byte exit there had
        // LLVM copy it with a memcpy call on every exit (measured in the bench).
        _ => return handle_rare_exit(vcpu.id(), &exit, counts),
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
fn handle_rare_exit(
    vcpu: u32,
    exit: &ExitReason,
    counts: &mut ExitCounts,
) -> Result<Flow, Box<VcpuError>> {
    match *exit {
        ExitReason::ExternalInterrupt => counts.interrupted += 1,
        ExitReason::SystemDown { .. } | ExitReason::SystemReset { .. } | ExitReason::Halt => {
            counts.system += 1
        }
        ExitReason::CpuUp { .. } | ExitReason::CpuDown => counts.hsm += 1,
        ExitReason::NestedPageFault { .. } | ExitReason::FailEntry { .. } => counts.failure += 1,
        _ => {}
    }
    Ok(Flow::Break(match *exit {
        ExitReason::CpuUp { target_cpu, .. } => {
            log::info!("hart {target_cpu} started");
            return Ok(CONTINUE);
        }
        ExitReason::CpuDown => {
            log::info!("hart {vcpu} stopped");
            return Ok(CONTINUE);
        }
        // The suspend itself happens after the exit's bookkeeping ([`suspend`]).
        ExitReason::Halt => return Ok(CONTINUE),
        ExitReason::SystemDown { reason } if reason == SRST_REASON_SYSTEM_FAILURE => {
            GuestStop::SystemFailure
        }
        ExitReason::SystemDown { .. } => GuestStop::Shutdown,
        ExitReason::SystemReset { .. } => GuestStop::Reboot,
        ExitReason::NestedPageFault { addr, size } => {
            return Err(VcpuError::MemoryFault { vcpu, addr, size }.into())
        }
        ExitReason::FailEntry { reason } => {
            return Err(VcpuError::FailEntry { vcpu, reason }.into())
        }
        ExitReason::Nothing
        | ExitReason::ExternalInterrupt
        | ExitReason::Hypercall { .. }
        | ExitReason::MmioRead { .. }
        | ExitReason::MmioWrite { .. } => return Ok(CONTINUE),
    }))
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
#[allow(non_snake_case)]
fn KICK_SIGNAL() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The kick signal only needs to interrupt `KVM_RUN` (which then returns `EINTR`); its handler
/// does nothing. Installed once per process.
fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(KICK_SIGNAL(), kick_handler) {
            log::warn!("cannot install the vCPU kick signal handler: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::riscv64::layout::{RAM_BASE, TESTDEV_BASE, TESTDEV_SIZE};
    use crate::console::Console;
    use crate::devices::testdev::TestDev;
    use crate::hypervisor::{InterruptLine, MpState, RawExit};
    use crate::sbi::{Sbi, SbiContext};
    use crate::vcpu::VcpuConfig;
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

        let memory = crate::memory::guest_memory(16 << 20, false, false).unwrap();
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
            let mut ctx =
                VcpuContext::new(Arc::new(bus), Arc::new(VmControl::new().unwrap()), None);
            ctx.log_hypercalls = false;
            let sbi = Sbi::new(SbiContext {
                memory: memory.clone(),
                console: Arc::new(Sink),
            });
            let mut counts = ExitCounts::default();
            let config = VcpuConfig {
                hart_id: 0,
                dtb_addr: RAM_BASE,
            };
            let mut vcpu = Vcpu::new(0, config, RepeatVcpu(exit), sbi).unwrap();
            // The first exits may set up what is set up once (the "logged once" EID set).
            for _ in 0..16 {
                let exit = vcpu.run().unwrap();
                assert_eq!(
                    handle_exit(&mut vcpu, exit, &ctx, &mut counts).unwrap(),
                    CONTINUE
                );
            }
            let before = counting::allocations();
            for _ in 0..10_000 {
                let exit = vcpu.run().unwrap();
                assert_eq!(
                    handle_exit(&mut vcpu, exit, &ctx, &mut counts).unwrap(),
                    CONTINUE
                );
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
