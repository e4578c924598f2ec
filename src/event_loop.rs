//! The event loop: one thread running rust-vmm's event-manager over the device backends'
//! fds (queue notifications, console input, taps). vCPU threads only run guest code; what a
//! notification asks of a device happens here.
//!
//! Pausing the loop parks its thread inside a handler of its own (`Gate`): no device runs,
//! and notifications, taps and stdin wait in their fds (an eventfd adds up, nothing is lost)
//! until it resumes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A subscriber the loop owns.
pub type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// Adds `events` to the loop or removes them so that they are watched exactly when `want`;
/// `watched` is the current state, updated on success. For a subscriber whose fd must not be
/// watched while it has nowhere to put what the fd brings (a readable fd would spin the loop).
pub fn set_watched(
    ops: &mut EventOps,
    events: Events,
    watched: &mut bool,
    want: bool,
) -> Result<(), event_manager::Error> {
    if want != *watched {
        if want {
            ops.add(events)?;
        } else {
            ops.remove(events)?;
        }
        *watched = want;
    }
    Ok(())
}

/// The running loop.
pub struct EventLoop {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stop_evt: EventFd,
    gate: Arc<GateState>,
    gate_evt: EventFd,
}

/// Whether the loop should park, and whether it has.
#[derive(Default)]
struct GateState {
    /// (pause asked, parked now).
    flags: Mutex<(bool, bool)>,
    changed: Condvar,
}

/// Parks the loop's thread while a pause is asked for.
struct Gate {
    evt: EventFd,
    state: Arc<GateState>,
}

/// Watches the loop's own eventfd `evt` (`what` names it in the error).
fn watch_own(ops: &mut EventOps, evt: &EventFd, what: &str) {
    if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
        log::error!("event loop: cannot watch its {what} event: {e:?}");
    }
}

impl MutEventSubscriber for Gate {
    fn init(&mut self, ops: &mut EventOps) {
        watch_own(ops, &self.evt, "pause");
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.evt.read();
        let mut flags = self.state.flags.lock().unwrap_or_else(|e| e.into_inner());
        if flags.0 {
            flags.1 = true;
            self.state.changed.notify_all();
            while flags.0 {
                flags = self
                    .state
                    .changed
                    .wait(flags)
                    .unwrap_or_else(|e| e.into_inner());
            }
            flags.1 = false;
        }
    }
}

/// How long `pause` waits for the loop to finish what it is doing.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Ends the loop when its eventfd is written: the loop waits with no time-out, so an idle VM
/// costs no wakeups at all.
struct Stopper {
    evt: EventFd,
    stop: Arc<AtomicBool>,
}

impl MutEventSubscriber for Stopper {
    fn init(&mut self, ops: &mut EventOps) {
        watch_own(ops, &self.evt, "stop");
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.evt.read();
        self.stop.store(true, Ordering::Release);
    }
}

impl EventLoop {
    /// Starts the loop over `subscribers`.
    pub fn start(subscribers: Vec<Subscriber>) -> std::io::Result<Self> {
        let mut manager = EventManager::<Subscriber>::new()
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        for s in subscribers {
            manager.add_subscriber(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop_evt = EventFd::new(EFD_NONBLOCK)?;
        manager.add_subscriber(Box::new(Stopper {
            evt: stop_evt.try_clone()?,
            stop: stop.clone(),
        }));
        let gate = Arc::new(GateState::default());
        let gate_evt = EventFd::new(EFD_NONBLOCK)?;
        manager.add_subscriber(Box::new(Gate {
            evt: gate_evt.try_clone()?,
            state: gate.clone(),
        }));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::EventLoop);
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = manager.run() {
                        log::error!("event loop: {e:?}");
                        break;
                    }
                }
            })?;
        Ok(EventLoop {
            thread: Some(thread),
            stop,
            stop_evt,
            gate,
            gate_evt,
        })
    }

    /// Parks the loop: once this returns, no device handler runs until [`Self::resume`].
    /// Fails if the loop did not park within a few seconds (a handler stuck in the host).
    pub fn pause(&self) -> std::io::Result<()> {
        self.gate.flags.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        self.gate_evt.write(1)?;
        let flags = self.gate.flags.lock().unwrap_or_else(|e| e.into_inner());
        let (flags, _) = self
            .gate
            .changed
            .wait_timeout_while(flags, PAUSE_TIMEOUT, |f| !f.1)
            .unwrap_or_else(|e| e.into_inner());
        if flags.1 {
            Ok(())
        } else {
            drop(flags);
            self.resume();
            Err(std::io::Error::other(
                "the event loop did not pause within 5 s",
            ))
        }
    }

    /// Lets the loop run again.
    pub fn resume(&self) {
        self.gate.flags.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
        self.gate.changed.notify_all();
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.resume();
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.stop_evt.write(1) {
            log::error!("event loop: cannot stop it: {e}");
            return; // better a leaked thread than a hang
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Counter(EventFd, Arc<Mutex<u64>>);

    impl MutEventSubscriber for Counter {
        fn init(&mut self, ops: &mut EventOps) {
            ops.add(Events::new(&self.0, EventSet::IN)).unwrap();
        }
        fn process(&mut self, _: Events, _: &mut EventOps) {
            *self.1.lock().unwrap() += self.0.read().unwrap();
        }
    }

    /// A loop running one [`Counter`]: the loop, the counter's eventfd and its count.
    fn counting_loop() -> (EventLoop, EventFd, Arc<Mutex<u64>>) {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let count = Arc::new(Mutex::new(0));
        let el = EventLoop::start(vec![Box::new(Counter(
            evt.try_clone().unwrap(),
            count.clone(),
        ))])
        .unwrap();
        (el, evt, count)
    }

    fn wait_for_count(count: &Mutex<u64>, want: u64) -> u64 {
        // Generous: the lab runs these tests in a nested guest under QEMU's TCG.
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(30) {
            if *count.lock().unwrap() == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        *count.lock().unwrap()
    }

    #[test]
    fn subscribers_run_on_the_loop_thread_until_stopped() {
        let (el, evt, count) = counting_loop();
        evt.write(3).unwrap();
        assert_eq!(wait_for_count(&count, 3), 3);
        drop(el);
    }

    #[test]
    fn a_paused_loop_runs_nothing_and_loses_nothing() {
        let (el, evt, count) = counting_loop();
        evt.write(1).unwrap();
        assert_eq!(wait_for_count(&count, 1), 1);
        el.pause().unwrap();
        evt.write(2).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(*count.lock().unwrap(), 1, "nothing handled while paused");
        el.resume();
        assert_eq!(wait_for_count(&count, 3), 3, "the notifications waited");
        // Dropping a paused loop ends it too.
        el.pause().unwrap();
        drop(el);
    }
}
