//! The event loop: one thread running rust-vmm's event-manager over the device backends'
//! fds (queue notifications, console input, taps). vCPU threads only run guest code; what a
//! notification asks of a device happens here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

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
}

/// Ends the loop when its eventfd is written: the loop waits with no time-out, so an idle VM
/// costs no wakeups at all.
struct Stopper {
    evt: EventFd,
    stop: Arc<AtomicBool>,
}

impl MutEventSubscriber for Stopper {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            log::error!("event loop: cannot watch its stop event: {e:?}");
        }
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
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
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
        })
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
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

    #[test]
    fn subscribers_run_on_the_loop_thread_until_stopped() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let count = Arc::new(Mutex::new(0));
        let el = EventLoop::start(vec![Box::new(Counter(
            evt.try_clone().unwrap(),
            count.clone(),
        ))])
        .unwrap();
        evt.write(3).unwrap();
        for _ in 0..100 {
            if *count.lock().unwrap() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(*count.lock().unwrap(), 3);
        drop(el);
    }
}
