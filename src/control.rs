//! How the running VM is steered between its threads: stop requests (the first one wins),
//! pauses, and the flag vCPU threads read after their cold exits.
//!
//! The control loop ([`crate::vmm`]) owns the machine and waits on [`VmControl::stop_fd`] (with
//! the API's and the signals' fds); vCPU threads, the console and devices only *ask*. A vCPU
//! whose own exit asks to stop answers [`Flow::Break`] and leaves at once; the others learn it
//! from [`VmControl::attention`] after a kick has taken them out of `KVM_RUN`.

use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vcpu::state::VcpuState;
use crate::vcpu::VcpuError;

/// What handling one guest exit (a device's store, an SBI call, a hypercall) asks of the vCPU
/// that made it: `Continue(())` runs the guest on; `Break(stop)` stops the VM, and that vCPU
/// never re-enters the guest (its thread records the request and leaves its loop; the others
/// are kicked). A stop that a guest asks for takes effect before its next instruction, as on
/// real hardware (and in QEMU, where a finisher write ends the machine at once).
///
/// Small and `Copy` (no drop glue, returned in registers): it is the answer of every exit on
/// the hot path, where each extra page of code touched costs in the nested lab.
pub type Flow = ControlFlow<GuestStop>;

/// A stop the guest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStop {
    /// Power off.
    Shutdown,
    /// Reboot.
    Reboot,
    /// Exit rvvmm with this status.
    Exit(i32),
    /// The guest reported a system failure (SBI SRST shutdown, reason 1).
    SystemFailure,
}

impl From<GuestStop> for ExitRequest {
    fn from(stop: GuestStop) -> Self {
        match stop {
            GuestStop::Shutdown => ExitRequest::Shutdown,
            GuestStop::Reboot => ExitRequest::Reboot,
            GuestStop::Exit(code) => ExitRequest::Exit(code),
            GuestStop::SystemFailure => ExitRequest::SystemFailure,
        }
    }
}

/// Go on running the guest.
pub const CONTINUE: Flow = ControlFlow::Continue(());

/// Why the VM stops.
#[derive(Debug, Clone)]
pub enum ExitRequest {
    /// Power off; rvvmm exits 0.
    Shutdown,
    /// Restart the guest from its entry.
    Reboot,
    /// Exit rvvmm with this status (sifive,test0 FAIL, Ctrl-A x).
    Exit(i32),
    /// The guest reported a system failure (SBI SRST shutdown, reason 1): rvvmm exits 1.
    SystemFailure,
    /// A vCPU failed (KVM refused to run it, a register it cannot set...): rvvmm exits 1.
    VcpuFailed(Arc<VcpuError>),
    /// A vCPU thread could not be started.
    NoThread(Arc<std::io::Error>),
}

impl PartialEq for ExitRequest {
    fn eq(&self, other: &Self) -> bool {
        use ExitRequest::*;
        match (self, other) {
            (Exit(a), Exit(b)) => a == b,
            (VcpuFailed(a), VcpuFailed(b)) => Arc::ptr_eq(a, b),
            (NoThread(a), NoThread(b)) => Arc::ptr_eq(a, b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    request: Option<ExitRequest>,
    /// The control loop wants the vCPUs parked.
    pause: bool,
    /// vCPU threads parked now.
    parked: usize,
    /// vCPU threads that have left their loop.
    ended: usize,
    /// Counter publication asked for: its number (0: none yet), and how many vCPUs did it.
    sync: u64,
    synced: usize,
    sync_pending: bool,
    /// Save requests to parked vCPUs: the generation, and the states saved for it so far.
    save: u64,
    saves: Vec<Result<VcpuState, String>>,
    /// The guest has suspended the system (SBI SUSP): a vCPU waits in [`VmControl::suspended`].
    suspended: bool,
    /// Wake-ups of a suspended system so far (console input, the API).
    wakes: u64,
    /// How long a system suspend lasts at most (`--suspend-seconds`), and what else wakes it.
    suspend: SuspendPolicy,
}

/// What ends a system suspend besides a stop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SuspendPolicy {
    /// The longest suspend (`--suspend-seconds`); `None`: until a wake-up event.
    pub limit: Option<Duration>,
    /// Whether the API can wake it (vm.resume).
    pub api: bool,
}

impl SuspendPolicy {
    /// What wakes the guest, for its log line.
    pub fn describe(&self) -> String {
        let mut wakers = vec!["console input".to_string()];
        if self.api {
            wakers.push("the API's vm.resume".into());
        }
        if let Some(limit) = self.limit {
            wakers.push(format!(
                "the timer ({} s, --suspend-seconds)",
                limit.as_secs_f64()
            ));
        }
        wakers.join(", ")
    }
}

/// How a system suspend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A wake-up event (console input, the API's vm.resume).
    Event,
    /// The `--suspend-seconds` limit passed.
    Timer,
    /// The VM is to stop.
    Stop,
}

/// The control state shared by the control loop, vCPU threads, devices and the console.
#[derive(Debug)]
pub struct VmControl {
    /// A stop or a pause is asked for: the one word vCPU threads read (after cold exits only).
    attention: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    /// Written once per stop request: wakes the control loop.
    stop_evt: EventFd,
}

impl VmControl {
    /// A control with nothing asked yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(VmControl {
            attention: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop_evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the VM to stop. Later requests are ignored once one is recorded.
    pub fn request(&self, request: ExitRequest) {
        let mut state = self.lock();
        if state.request.is_some() {
            return;
        }
        log::debug!("VM stop requested: {request:?}");
        state.request = Some(request);
        self.attention.store(true, Ordering::Release);
        self.changed.notify_all();
        drop(state);
        if let Err(e) = self.stop_evt.write(1) {
            log::error!("cannot wake the control loop: {e}");
        }
    }

    /// The stop request, if one was made (the control loop reads it when woken).
    pub fn stop_request(&self) -> Option<ExitRequest> {
        self.lock().request.clone()
    }

    /// The fd the control loop watches: readable once a stop was requested.
    pub fn stop_fd(&self) -> RawFd {
        self.stop_evt.as_raw_fd()
    }

    /// Whether a stop or a pause is asked for: one atomic load, read after cold exits.
    #[inline]
    pub fn attention(&self) -> bool {
        self.attention.load(Ordering::Acquire)
    }

    /// Whether a stop was requested.
    pub fn should_stop(&self) -> bool {
        self.attention() && self.lock().request.is_some()
    }

    /// Where a vCPU thread obeys, having published its counters: acknowledges a counter
    /// request (`seen_sync` is the last it acknowledged), parks while a pause is asked for
    /// (burning no CPU), and returns whether it must stop. Called when [`Self::attention`] is
    /// set.
    pub fn checkpoint(&self, seen_sync: &mut u64) -> bool {
        self.checkpoint_saving(seen_sync, &mut 0, &mut || Err("no vCPU here".into()))
    }

    /// [`Self::checkpoint`] for a vCPU thread that can save its vCPU: while parked, each save
    /// request ([`Self::save_parked`]) runs `save` once on this thread.
    pub fn checkpoint_saving(
        &self,
        seen_sync: &mut u64,
        seen_save: &mut u64,
        save: &mut dyn FnMut() -> Result<VcpuState, String>,
    ) -> bool {
        let mut state = self.lock();
        if state.sync_pending && *seen_sync != state.sync {
            *seen_sync = state.sync;
            state.synced += 1;
            self.changed.notify_all();
        }
        if state.pause && state.request.is_none() {
            state.parked += 1;
            self.changed.notify_all();
            while state.pause && state.request.is_none() {
                if *seen_save != state.save {
                    *seen_save = state.save;
                    drop(state);
                    let saved = save();
                    state = self.lock();
                    state.saves.push(saved);
                    self.changed.notify_all();
                    continue;
                }
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.parked -= 1;
        }
        state.request.is_some()
    }

    /// Has each of the `count` parked vCPUs save its state (on its own thread, which owns it)
    /// and returns the states in vCPU order. The VM must be paused.
    pub fn save_parked(&self, count: usize, timeout: Duration) -> Result<Vec<VcpuState>, String> {
        {
            let mut state = self.lock();
            if !state.pause || state.parked < count {
                return Err("the vCPUs are not all paused".into());
            }
            state.save += 1;
            state.saves.clear();
            self.changed.notify_all();
        }
        if !self.wait_for(timeout, |s| s.saves.len() >= count) {
            return Err(format!(
                "the vCPUs did not save their state within {timeout:?}"
            ));
        }
        let mut saves = std::mem::take(&mut self.lock().saves)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        saves.sort_by_key(|s| s.index);
        Ok(saves)
    }

    /// Asks every vCPU to park at its next checkpoint (the caller kicks them there; a vCPU
    /// waiting in a system suspend is woken here).
    pub fn pause(&self) {
        self.lock().pause = true;
        self.attention.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    /// Where the vCPU that suspended the system (SBI SUSP; every other hart is stopped) waits,
    /// burning no CPU, until a wake-up ([`Self::wake`]), `limit`, or a stop. Pause, counter and
    /// save requests made meanwhile are obeyed through `checkpoint` (the vCPU's own, which
    /// returns whether to stop), so the API works on a suspended VM as on a running one.
    pub fn suspended(
        &self,
        seen_sync: &mut u64,
        checkpoint: &mut dyn FnMut(&mut u64) -> bool,
    ) -> Wake {
        let mut state = self.lock();
        let deadline = state.suspend.limit.map(|l| std::time::Instant::now() + l);
        state.suspended = true;
        let wakes = state.wakes;
        let wake = loop {
            if state.request.is_some() {
                break Wake::Stop;
            }
            if state.wakes != wakes {
                break Wake::Event;
            }
            if state.pause || (state.sync_pending && *seen_sync != state.sync) {
                drop(state);
                let stop = checkpoint(seen_sync);
                state = self.lock();
                if stop {
                    break Wake::Stop;
                }
                continue;
            }
            state = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break Wake::Timer;
                    }
                    match self.changed.wait_timeout(state, left) {
                        Ok((s, _)) => s,
                        Err(e) => e.into_inner().0,
                    }
                }
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        };
        state.suspended = false;
        wake
    }

    /// Wakes a suspended system; returns whether it was suspended.
    pub fn wake(&self) -> bool {
        let mut state = self.lock();
        if !state.suspended {
            return false;
        }
        state.wakes += 1;
        self.changed.notify_all();
        true
    }

    /// Whether the guest has suspended the system and sleeps now.
    pub fn is_suspended(&self) -> bool {
        self.lock().suspended
    }

    /// Sets what ends a system suspend (kept across reboots).
    pub fn set_suspend_policy(&self, policy: SuspendPolicy) {
        self.lock().suspend = policy;
    }

    /// What ends a system suspend.
    pub fn suspend_policy(&self) -> SuspendPolicy {
        self.lock().suspend.clone()
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        let mut state = self.lock();
        state.pause = false;
        self.settle_attention(&state);
        self.changed.notify_all();
    }

    /// The attention flag stays up while anything is still asked of the vCPUs.
    fn settle_attention(&self, state: &State) {
        let wanted = state.request.is_some() || state.pause || state.sync_pending;
        self.attention.store(wanted, Ordering::Release);
    }

    /// Asks every vCPU to publish its counters at its next checkpoint (the caller kicks them).
    pub fn request_sync(&self) {
        let mut state = self.lock();
        state.sync += 1;
        state.synced = 0;
        state.sync_pending = true;
        self.attention.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    /// Waits up to `timeout` until `count` vCPUs have published their counters since
    /// [`Self::request_sync`] (parked and ended ones published when they stopped).
    pub fn wait_synced(&self, count: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.synced + s.parked + s.ended >= count)
    }

    /// Ends a counter request.
    pub fn end_sync(&self) {
        let mut state = self.lock();
        state.sync_pending = false;
        self.settle_attention(&state);
    }

    /// Waits up to `timeout` until `count` vCPU threads are parked or ended; returns whether
    /// they are.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.parked + s.ended >= count)
    }

    /// Called by a vCPU thread as it leaves its loop.
    pub fn vcpu_ended(&self) {
        self.lock().ended += 1;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for `count` vCPU threads to have ended; returns whether they have.
    pub fn wait_vcpus_ended(&self, count: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.ended >= count)
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| !done(s))
            .unwrap_or_else(|e| e.into_inner());
        done(&state)
    }

    /// Forgets the last boot's request, pause and thread counts (every vCPU thread of it has
    /// been joined), ready for the next boot.
    pub fn reset(&self) {
        let mut state = self.lock();
        let sync = state.sync;
        let suspend = std::mem::take(&mut state.suspend);
        *state = State {
            sync,
            suspend,
            ..State::default()
        };
        self.attention.store(false, Ordering::Release);
        let _ = self.stop_evt.read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_first_request_wins_and_wakes_the_control_loop() {
        let control = VmControl::new().unwrap();
        assert!(!control.attention() && !control.should_stop());
        control.request(ExitRequest::Exit(3));
        control.request(ExitRequest::Shutdown);
        assert!(control.should_stop());
        assert_eq!(control.stop_request(), Some(ExitRequest::Exit(3)));
        assert_eq!(control.stop_evt.read().unwrap(), 1, "written once");
        control.reset();
        assert!(!control.attention() && control.stop_request().is_none());
    }

    #[test]
    fn a_paused_vcpu_parks_until_resumed_or_stopped() {
        let control = Arc::new(VmControl::new().unwrap());
        control.pause();
        assert!(control.attention() && !control.should_stop());
        let vcpu = {
            let control = control.clone();
            std::thread::spawn(move || control.checkpoint(&mut 0))
        };
        assert!(control.wait_parked(1, Duration::from_secs(10)));
        control.resume();
        assert!(!vcpu.join().unwrap(), "resumed, not stopped");
        assert!(!control.attention());

        control.pause();
        let vcpu = {
            let control = control.clone();
            std::thread::spawn(move || control.checkpoint(&mut 0))
        };
        assert!(control.wait_parked(1, Duration::from_secs(10)));
        control.request(ExitRequest::Shutdown);
        assert!(vcpu.join().unwrap(), "a stop ends the pause");
    }

    #[test]
    fn a_suspended_system_wakes_on_an_event_the_timer_or_a_stop() {
        let control = Arc::new(VmControl::new().unwrap());
        let sleeper = |limit: Option<Duration>| {
            control.set_suspend_policy(SuspendPolicy { limit, api: false });
            let control = control.clone();
            std::thread::spawn(move || {
                let mut checkpoint = |seen: &mut u64| control.checkpoint(seen);
                control.suspended(&mut 0, &mut checkpoint)
            })
        };
        let wait_asleep = || {
            while !control.is_suspended() {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        assert!(!control.wake(), "nothing sleeps yet");
        let vcpu = sleeper(None);
        wait_asleep();
        assert!(control.wake());
        assert_eq!(vcpu.join().unwrap(), Wake::Event);
        assert!(!control.is_suspended());

        let start = std::time::Instant::now();
        let vcpu = sleeper(Some(Duration::from_millis(50)));
        assert_eq!(vcpu.join().unwrap(), Wake::Timer);
        assert!(start.elapsed() >= Duration::from_millis(50));

        // A pause while asleep parks the sleeper (the pause completes), and it sleeps on after
        // the resume; counters are published meanwhile.
        let vcpu = sleeper(None);
        wait_asleep();
        control.pause();
        assert!(control.wait_parked(1, Duration::from_secs(10)));
        control.resume();
        control.request_sync();
        assert!(control.wait_synced(1, Duration::from_secs(10)));
        control.end_sync();
        assert!(!vcpu.is_finished());
        control.request(ExitRequest::Shutdown);
        assert_eq!(vcpu.join().unwrap(), Wake::Stop);
    }

    #[test]
    fn a_counter_request_is_acknowledged_once_per_vcpu() {
        let control = VmControl::new().unwrap();
        let mut seen = 0;
        control.request_sync();
        assert!(control.attention());
        assert!(!control.wait_synced(1, Duration::ZERO));
        assert!(!control.checkpoint(&mut seen));
        assert!(
            !control.checkpoint(&mut seen),
            "a second checkpoint adds nothing"
        );
        assert!(control.wait_synced(1, Duration::ZERO));
        assert!(!control.wait_synced(2, Duration::ZERO));
        control.end_sync();
        assert!(!control.attention());
    }
}
