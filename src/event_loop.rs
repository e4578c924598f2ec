//! The event loop: one thread running rust-vmm's event-manager over the device backends'
//! fds (queue notifications, console input, taps). vCPU threads only run guest code; what a
//! notification asks of a device happens here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

/// A subscriber the loop owns.
pub type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// How long one wait lasts before the loop checks whether to stop.
const TICK_MS: i32 = 50;

/// The running loop.
pub struct EventLoop {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
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
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = manager.run_with_timeout(TICK_MS) {
                        log::error!("event loop: {e:?}");
                        break;
                    }
                }
            })?;
        Ok(EventLoop {
            thread: Some(thread),
            stop,
        })
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_manager::{EventOps, EventSet, Events};
    use std::sync::Mutex;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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
