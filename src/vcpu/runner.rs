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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The exit kinds counted per vCPU (`vm.counters`), in `exit_kind`'s order.
pub const EXIT_KINDS: [&str; 8] = [
    "exits_sbi",
    "exits_hypercall",
    "exits_mmio_read",
    "exits_mmio_write",
    "exits_interrupted",
    "exits_system",
    "exits_hsm",
    "exits_failure",
];

/// The index in [`EXIT_KINDS`] of an exit.
#[inline]
fn exit_kind(exit: &ExitReason) -> usize {
    match exit {
        ExitReason::Nothing => 0,
        ExitReason::Hypercall { .. } => 1,
        ExitReason::MmioRead { .. } => 2,
        ExitReason::MmioWrite { .. } => 3,
        ExitReason::ExternalInterrupt => 4,
        ExitReason::SystemDown { .. } | ExitReason::SystemReset { .. } | ExitReason::Halt => 5,
        ExitReason::CpuUp { .. } | ExitReason::CpuDown => 6,
        ExitReason::NestedPageFault { .. } | ExitReason::FailEntry { .. } => 7,
    }
}

/// What a vCPU thread shares with the rest of the VM; the control loop keeps it too, to read
/// the counters.
pub struct VcpuContext {
    /// The MMIO bus.
    pub bus: Arc<Bus>,
    /// Stop and pause requests.
    pub control: Arc<VmControl>,
    /// `None`: the built-in answers, called directly (no indirect call on the exit path).
    pub hypercall: Option<HypercallHandler>,
    /// Whether hypercalls are logged (debug level, read as the vCPU threads start).
    pub log_hypercalls: bool,
    /// Exits by kind ([`EXIT_KINDS`]); written only by this vCPU's thread.
    exits: [AtomicU64; EXIT_KINDS.len()],
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
            exits: Default::default(),
        }
    }

    /// This vCPU's exits by kind so far.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        EXIT_KINDS
            .iter()
            .zip(&self.exits)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// All exits so far.
    pub fn total_exits(&self) -> u64 {
        self.exits.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

/// The vCPU threads of one boot.
pub struct VcpuThreads {
    threads: Vec<JoinHandle<()>>,
    contexts: Vec<Arc<VcpuContext>>,
    control: Arc<VmControl>,
}

/// A vCPU thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start a vCPU thread: {0}")]
pub struct SpawnError(#[source] pub Arc<std::io::Error>);

impl VcpuThreads {
    /// Starts one thread per vCPU. On failure the threads already started are stopped.
    pub fn spawn<B: VcpuBackend + 'static>(
        vcpus: Vec<Vcpu<B>>,
        bus: &Arc<Bus>,
        control: &Arc<VmControl>,
        hypercall: &Option<HypercallHandler>,
    ) -> Result<Self, SpawnError> {
        install_kick_handler();
        let mut set = VcpuThreads {
            threads: Vec::with_capacity(vcpus.len()),
            contexts: Vec::with_capacity(vcpus.len()),
            control: control.clone(),
        };
        for vcpu in vcpus {
            let ctx = Arc::new(VcpuContext::new(
                bus.clone(),
                control.clone(),
                hypercall.clone(),
            ));
            let thread_ctx = ctx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || {
                    vcpu_loop(vcpu, &thread_ctx);
                    thread_ctx.control.vcpu_ended();
                });
            match spawned {
                Ok(handle) => {
                    set.threads.push(handle);
                    set.contexts.push(ctx);
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

    /// Each vCPU's context (counters), in vCPU order.
    pub fn contexts(&self) -> &[Arc<VcpuContext>] {
        &self.contexts
    }

    /// Kicks every thread still running until `done` says so (checked on the control's
    /// condvar between kicks), or until `timeout`.
    fn kick_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let start = std::time::Instant::now();
        while !done() {
            if start.elapsed() > timeout {
                return false;
            }
            for thread in self.threads.iter().filter(|t| !t.is_finished()) {
                // The thread may finish between the check and the kill; ESRCH is harmless then.
                let _ = thread.kill(KICK_SIGNAL());
            }
            std::thread::sleep(Duration::from_micros(100));
            if done() {
                break;
            }
            std::thread::sleep(KICK_INTERVAL);
        }
        true
    }

    /// Parks every vCPU out of `KVM_RUN` (they burn no CPU until [`Self::resume`]).
    pub fn pause(&self) -> Result<(), String> {
        self.control.pause();
        let count = self.threads.len();
        let control = &self.control;
        if self.kick_until(PAUSE_TIMEOUT, || control.wait_parked(count, Duration::ZERO)) {
            Ok(())
        } else {
            self.control.resume();
            Err("the vCPUs did not pause within 5 s".into())
        }
    }

    /// Lets the parked vCPUs run on.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// Stops every thread (a stop must have been requested, or is requested now as a shutdown)
    /// and joins them. A thread that stops by itself (its exit asked for the stop) ends at once;
    /// the others are kicked out of `KVM_RUN`.
    pub fn stop(&mut self) {
        if self.control.stop_request().is_none() {
            self.control.request(ExitRequest::Shutdown);
        }
        let count = self.threads.len();
        let control = &self.control;
        self.kick_until(Duration::MAX, || {
            control.wait_vcpus_ended(count, Duration::ZERO)
                || self.threads.iter().all(|t| t.is_finished())
        });
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
    }
}

impl Drop for VcpuThreads {
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
/// leaves before re-entering the guest, so the guest runs no instruction after asking. A stop
/// or pause asked elsewhere (another vCPU, the console's Ctrl-A x, a signal, the API) is seen
/// after a cold exit, which the kicks provide.
pub fn vcpu_loop<B: VcpuBackend>(mut vcpu: Vcpu<B>, ctx: &VcpuContext) {
    if vcpu.id() == 0 {
        startup_step("vCPU 0 thread entering the guest");
    }
    if ctx.control.attention() && ctx.control.checkpoint() {
        return;
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
                    let n = &ctx.exits[exit_kind(&exit)];
                    if n.fetch_add(1, Ordering::Relaxed) == 0 {
                        first_exit(vcpu.id());
                    }
                }
                match handle_exit(&mut vcpu, exit, ctx) {
                    Ok(flow) => (flow, hot),
                    Err(e) => return vcpu_failed(ctx, e),
                }
            }
            Err(e) => return vcpu_failed(ctx, e),
        };
        if let Flow::Break(stop) = flow {
            ctx.control.request(stop.into());
            return;
        }
        if !hot && ctx.control.attention() && ctx.control.checkpoint() {
            return;
        }
    }
}

/// A vCPU error stops the VM with its message.
#[cold]
#[inline(never)]
fn vcpu_failed(ctx: &VcpuContext, e: VcpuError) {
    ctx.control.request(ExitRequest::VcpuFailed(Arc::new(e)));
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
) -> Result<Flow, VcpuError> {
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
                hypercall::Answer::Break(stop) => return Ok(Flow::Break(stop)),
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
        other => return handle_rare_exit(vcpu.id(), other),
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
fn handle_rare_exit(vcpu: u32, exit: ExitReason) -> Result<Flow, VcpuError> {
    Ok(Flow::Break(match exit {
        ExitReason::CpuUp { target_cpu, .. } => {
            log::info!("hart {target_cpu} started");
            return Ok(CONTINUE);
        }
        ExitReason::CpuDown => {
            log::info!("hart {vcpu} stopped");
            return Ok(CONTINUE);
        }
        ExitReason::Halt => {
            log::info!("hart {vcpu} suspended the system");
            return Ok(CONTINUE);
        }
        ExitReason::SystemDown { reason } if reason == SRST_REASON_SYSTEM_FAILURE => {
            GuestStop::SystemFailure
        }
        ExitReason::SystemDown { .. } => GuestStop::Shutdown,
        ExitReason::SystemReset { .. } => GuestStop::Reboot,
        ExitReason::NestedPageFault { addr, size } => {
            return Err(VcpuError::MemoryFault { vcpu, addr, size })
        }
        ExitReason::FailEntry { reason } => return Err(VcpuError::FailEntry { vcpu, reason }),
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

        let memory = crate::memory::guest_memory(16 << 20, false).unwrap();
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
