//! How a VM is asked to stop: the first request wins, vCPU threads see a flag, and the VMM's
//! main thread waits for the request.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// What handling one guest exit (a device's store, an SBI call, a hypercall) asks of the vCPU
/// that made it: `Continue(())` runs the guest on; `Break(request)` stops the VM, and that vCPU
/// never re-enters the guest (its thread records the request and leaves its loop; the others
/// are kicked). A stop that a guest asks for takes effect before its next instruction, as on
/// real hardware (and in QEMU, where a finisher write ends the machine at once).
pub type Flow = ControlFlow<ExitRequest>;

/// Go on running the guest.
pub const CONTINUE: Flow = ControlFlow::Continue(());

/// Why the VM stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitRequest {
    /// Power off; rvvmm exits 0.
    Shutdown,
    /// Restart the guest from its entry.
    Reboot,
    /// Exit rvvmm with this status (sifive,test0 FAIL, or SRST with a system-failure reason).
    Exit(i32),
    /// rvvmm itself failed (a vCPU thread's error): exit 1 with this message.
    Error(String),
}

/// The stop signal shared by devices, vCPU threads and the VMM.
#[derive(Debug, Default)]
pub struct VmControl {
    stop: AtomicBool,
    request: Mutex<Option<ExitRequest>>,
    requested: Condvar,
    /// How many vCPU threads have left their loop, and its condvar.
    ended: Mutex<usize>,
    ended_cv: Condvar,
}

impl VmControl {
    /// Asks the VM to stop. Later requests are ignored once one is recorded.
    pub fn request(&self, request: ExitRequest) {
        let mut slot = self.request.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            log::debug!("VM stop requested: {request:?}");
            *slot = Some(request);
        }
        self.stop.store(true, Ordering::Release);
        self.requested.notify_all();
    }

    /// Whether a stop was requested (cheap: one atomic load, checked after every exit).
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Called by a vCPU thread as it leaves its loop.
    pub fn vcpu_ended(&self) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.ended_cv.notify_all();
    }

    /// Waits up to `timeout` for `count` vCPU threads to have ended; returns whether they have.
    pub fn wait_vcpus_ended(&self, count: usize, timeout: std::time::Duration) -> bool {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) = self
            .ended_cv
            .wait_timeout_while(ended, timeout, |n| *n < count)
            .unwrap_or_else(|e| e.into_inner());
        *ended >= count
    }

    /// Blocks until a stop is requested and returns the request.
    pub fn wait(&self) -> ExitRequest {
        let mut slot = self.request.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(request) = slot.clone() {
                return request;
            }
            slot = self.requested.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_request_wins_and_wakes_the_waiter() {
        let control = Arc::new(VmControl::default());
        let waiter = {
            let control = control.clone();
            std::thread::spawn(move || control.wait())
        };
        assert!(!control.should_stop());
        control.request(ExitRequest::Exit(3));
        control.request(ExitRequest::Shutdown);
        assert!(control.should_stop());
        assert_eq!(waiter.join().unwrap(), ExitRequest::Exit(3));
    }
}
