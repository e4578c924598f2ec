//! virtio devices behind one virtio-mmio transport ([`mmio`]), queues through virtio-queue.
//!
//! A device implements [`VirtioDevice`]: its ID, features, config space, and what to do when
//! the driver notifies a queue. The transport owns everything the spec says is the transport's
//! (feature negotiation, status, queue setup, interrupt status) and hands the device its queues
//! when the driver sets DRIVER_OK. Notifications arrive on one eventfd per queue (registered
//! with KVM as an ioeventfd when the hypervisor can, so a notify costs no exit), and the
//! event loop ([`crate::event_loop`]) runs the device there: vCPU threads never process queues.

pub mod block;
pub mod console;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod tap;
pub mod vsock;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

/// `VIRTIO_F_VERSION_1`: the modern interface, the only one rvvmm offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device IDs (virtio 1.2, 5).
pub mod device_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device.
    pub const FS: u32 = 26;
}

/// What a device did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOutcome {
    /// Nothing for the guest to see.
    Idle,
    /// Buffers were used: interrupt the guest (if it wants one).
    Used,
    /// The driver broke the protocol (a malformed queue): the device needs a reset.
    Broken,
    /// Buffers were used and more wait past this pass's budget ([`PASS_BUDGET`]): interrupt
    /// the guest, and come back to the queue after the other devices' events.
    Yielded,
}

impl QueueOutcome {
    /// `Used` if buffers were used, else `Idle`.
    pub fn used_if(used: bool) -> Self {
        if used {
            QueueOutcome::Used
        } else {
            QueueOutcome::Idle
        }
    }
}

/// One virtio device model.
pub trait VirtioDevice: Send {
    /// The virtio device ID.
    fn device_type(&self) -> u32;
    /// Short name for messages.
    fn name(&self) -> &'static str;
    /// Features offered (the transport adds `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Maximum size of each queue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with `features` accepted: the queues are the device's now.
    fn activate(&mut self, memory: GuestMemoryMmap, queues: Vec<Queue>, features: u64);
    /// The driver notified queue `index`.
    fn process_queue(&mut self, index: usize) -> QueueOutcome;
    /// The device's own event fd, if it has one (tap, input): the event loop watches it and
    /// calls [`VirtioDevice::process_event`].
    fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The fd of [`VirtioDevice::event_fd`] is ready.
    fn process_event(&mut self) -> QueueOutcome {
        QueueOutcome::Idle
    }
    /// Whether the event loop should watch [`VirtioDevice::event_fd`] now (a device with
    /// nowhere to put what the fd has says no, until a queue notification gives it room).
    fn event_armed(&self) -> bool {
        true
    }
    /// The device was activated again from a snapshot (after [`VirtioDevice::activate`]): what
    /// it must tell the driver about state that did not survive (vsock's connections).
    fn restored(&mut self) -> QueueOutcome {
        QueueOutcome::Idle
    }
    /// Why the device's state cannot go into a snapshot, if it cannot (a vhost-user
    /// backend's is in another process).
    fn snapshot_refusal(&self) -> Option<String> {
        None
    }
    /// The driver reset the device: drop the queues.
    fn reset(&mut self);
    /// The queues the device runs, by index, as it has advanced them (for a snapshot).
    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)>;
    /// The device's own counters (bytes, requests), for `vm.counters`.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Reads a little-endian config space from `bytes` (out-of-range reads give zeros).
pub fn read_config_bytes(bytes: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let start = offset as usize;
    if let Some(src) = bytes.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Chains one pass of the event loop takes from a queue: a guest that keeps its queue full (or
/// refills it from another vCPU as fast as it drains) cannot hold the device thread, and with
/// it every other device and the console's input; the rest waits for the next pass.
pub const PASS_BUDGET: usize = 256;

/// Takes the available chains of `queue`, up to [`PASS_BUDGET`], and hands each to `handle`,
/// which returns how many bytes it wrote into the chain. Returns whether anything was used
/// (`Yielded` if more wait past the budget); `Broken` if the avail ring is malformed.
pub fn drain_queue<F>(queue: &mut Queue, memory: &GuestMemoryMmap, handle: F) -> QueueOutcome
where
    F: FnMut(virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    drain_queue_within(queue, memory, PASS_BUDGET, handle)
}

/// [`drain_queue`] with a budget of `budget` chains.
pub fn drain_queue_within<F>(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    budget: usize,
    mut handle: F,
) -> QueueOutcome
where
    F: FnMut(virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    drain_queue_costed(queue, memory, budget, u64::MAX, |chain| (handle(chain), 0))
}

/// [`drain_queue_within`] for a device whose chains differ in cost (a disk's bytes): `handle`
/// returns the bytes written into the chain and the chain's cost, and the pass ends once the
/// costs reach `cost_budget` (at least one chain is always served).
///
/// The driver is asked not to notify while the pass runs (`VRING_USED_F_NO_NOTIFY`; with
/// EVENT_IDX the avail event already stands behind the ring): what it adds meanwhile is taken
/// by this pass, without a notification (an exit of the vCPU) per request. Between passes
/// notifications are on: the pass turns them on before it ends and then looks at the ring once
/// more, so a chain the driver made available just before it saw them on is not left waiting
/// for a notification that will not come (virtio 1.2, 2.7.10 and 2.7.7.2).
pub fn drain_queue_costed<F>(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    budget: usize,
    cost_budget: u64,
    mut handle: F,
) -> QueueOutcome
where
    F: FnMut(virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> (u32, u64),
{
    let mut used = false;
    let (mut taken, mut cost) = (0usize, 0u64);
    if !runs(queue) {
        return QueueOutcome::Idle;
    }
    if disarm(queue, memory).is_err() {
        return QueueOutcome::Broken;
    }
    // Set when the ring, looked at once more, had chains: if it then gives none, it is
    // malformed (its index moved, its entries unreadable) and the pass must not spin on it.
    let mut more_said = false;
    loop {
        let at_budget = taken >= budget || cost >= cost_budget;
        let chain = if at_budget {
            None
        } else {
            match next_chain(queue, memory) {
                Ok(chain) => chain,
                Err(()) => return QueueOutcome::Broken,
            }
        };
        let Some(chain) = chain else {
            if more_said && !at_budget {
                crate::guest_warn!("virtio: the avail ring says it has chains and gives none");
                return QueueOutcome::Broken;
            }
            match rearm(queue, memory) {
                Ok(false) => break,
                // More wait past the budget: the rest at the next pass (notifications are on
                // meanwhile, as between any two passes).
                Ok(true) if at_budget => return QueueOutcome::Yielded,
                Ok(true) => {
                    if disarm(queue, memory).is_err() {
                        return QueueOutcome::Broken;
                    }
                    more_said = true;
                    continue;
                }
                Err(()) => return QueueOutcome::Broken,
            }
        };
        more_said = false;
        taken += 1;
        let head = chain.head_index();
        let (len, chain_cost) = handle(chain);
        cost = cost.saturating_add(chain_cost);
        if let Err(e) = queue.add_used(memory, head, len) {
            crate::guest_warn!("virtio: cannot return descriptor {head}: {e}");
            return QueueOutcome::Broken;
        }
        used = true;
    }
    used_outcome(queue, memory, used)
}

/// Whether the driver set the queue up (a notification of a queue it did not, or a frame for
/// a receive queue it left alone, finds nothing to do: the driver is not wrong to leave a
/// queue unused).
fn runs(queue: &Queue) -> bool {
    queue.ready() && queue.avail_ring() != 0
}

/// The next available chain, one at a time off the avail ring (the iterator moves next_avail
/// as it goes, so what a pass does not reach stays there); `Err` if the avail ring is
/// malformed (the device then needs a reset). None from a queue that is not set up.
pub(crate) fn next_chain<'a>(
    queue: &mut Queue,
    memory: &'a GuestMemoryMmap,
) -> Result<Option<virtio_queue::DescriptorChain<&'a GuestMemoryMmap>>, ()> {
    if !runs(queue) {
        return Ok(None);
    }
    match queue.iter(memory) {
        Ok(mut iter) => Ok(iter.next()),
        Err(e) => {
            crate::guest_warn!("virtio: malformed avail ring: {e}");
            Err(())
        }
    }
}

/// Asks the driver for notifications again (clears `VRING_USED_F_NO_NOTIFY`, or with EVENT_IDX
/// sets the avail event to the next chain the device will take) and says whether chains are
/// available after all: the driver may have added one before it saw the request.
pub(crate) fn rearm(queue: &mut Queue, memory: &GuestMemoryMmap) -> Result<bool, ()> {
    if !runs(queue) {
        return Ok(false);
    }
    queue.enable_notification(memory).map_err(|e| {
        crate::guest_warn!("virtio: cannot ask the driver for notifications: {e}");
    })
}

/// Asks the driver not to notify (`VRING_USED_F_NO_NOTIFY`; with EVENT_IDX nothing to write:
/// the avail event stays behind the ring until [`rearm`] moves it).
pub(crate) fn disarm(queue: &mut Queue, memory: &GuestMemoryMmap) -> Result<(), ()> {
    if !runs(queue) {
        return Ok(());
    }
    queue.disable_notification(memory).map_err(|e| {
        crate::guest_warn!("virtio: cannot write the used ring's flags: {e}");
    })
}

/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver polls the used ring and wants no interrupt.
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// `VIRTIO_RING_F_EVENT_IDX` (virtio 1.2, 6): the driver and the device say how far the other
/// may go before it notifies (the used and avail events) instead of flags. A device offers it
/// only if every path that takes chains off its queues ends with [`rearm`] or a drain (which
/// calls it), and decides its interrupts with [`used_outcome`]: a device that never writes the
/// avail event would stop hearing from the driver.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// `VIRTIO_RING_F_INDIRECT_DESC` (virtio 1.2, 2.7.5.3): a chain may sit in a table of its own,
/// one ring entry pointing to it, so a request of many segments takes one slot of the queue
/// instead of as many. virtio-queue's chain iterator follows the table (one level, a table
/// length a multiple of 16, at most 65535 entries); a device that offers it bounds how many
/// descriptors it takes from one chain itself.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;

/// `Used` if buffers were used and the driver wants to hear of it, else `Idle`. With EVENT_IDX,
/// whether the used ring passed the driver's used event since the last interrupt decision
/// (virtio-queue's `needs_notification`); without, whether the driver polls (Linux's NAPI, a
/// block driver draining completions set `VRING_AVAIL_F_NO_INTERRUPT` meanwhile, and an
/// interrupt then costs the guest an entry for nothing; virtio 1.2, 2.7.7). Read after the
/// used ring was written.
pub fn used_outcome(queue: &mut Queue, memory: &GuestMemoryMmap, used: bool) -> QueueOutcome {
    use vm_memory::{Bytes, GuestAddress};
    if !used {
        return QueueOutcome::Idle;
    }
    if queue.event_idx_enabled() {
        return match queue.needs_notification(memory) {
            Ok(false) => QueueOutcome::Idle,
            _ => QueueOutcome::Used,
        };
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    match memory.read_obj::<u16>(GuestAddress(queue.avail_ring())) {
        Ok(flags) if flags & VRING_AVAIL_F_NO_INTERRUPT != 0 => QueueOutcome::Idle,
        _ => QueueOutcome::Used,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built virtqueues in guest memory, for device tests (as Cloud Hypervisor's fuzzers
    //! and virtio-queue's own mock do).
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    pub const DESC: u64 = 0x8000_0000;
    pub const AVAIL: u64 = 0x8000_1000;
    pub const USED: u64 = 0x8000_2000;
    pub const DATA: u64 = 0x8001_0000;
    pub const SIZE: u16 = 16;

    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000_0000), 1 << 20)]).unwrap()
    }

    pub fn queue() -> Queue {
        let mut q = Queue::new(SIZE).unwrap();
        q.set_size(SIZE);
        q.set_desc_table_address(Some(DESC as u32), Some((DESC >> 32) as u32));
        q.set_avail_ring_address(Some(AVAIL as u32), Some((AVAIL >> 32) as u32));
        q.set_used_ring_address(Some(USED as u32), Some((USED >> 32) as u32));
        q.set_ready(true);
        q
    }

    /// Writes descriptors `(addr, len, flags, next)` at table index 0.. and makes the chain
    /// starting at `head` available as avail entry number `avail_idx`.
    pub fn publish(mem: &GuestMemoryMmap, descs: &[(u64, u32, u16, u16)], heads: &[u16]) {
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            let d = RawDescriptor::from(SplitDescriptor::new(*addr, *len, *flags, *next));
            mem.write_obj(d, GuestAddress(DESC + 16 * i as u64))
                .unwrap();
        }
        for (i, head) in heads.iter().enumerate() {
            mem.write_obj(*head, GuestAddress(AVAIL + 4 + 2 * i as u64))
                .unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// The used ring's index and its entries (id, len).
    pub fn used(mem: &GuestMemoryMmap) -> (u16, Vec<(u32, u32)>) {
        let idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
        let entries = (0..idx as u64)
            .map(|i| {
                let id: u32 = mem.read_obj(GuestAddress(USED + 4 + 8 * i)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(USED + 8 + 8 * i)).unwrap();
                (id, len)
            })
            .collect();
        (idx, entries)
    }

    /// The driver's used event (after the avail ring's entries) and the device's avail event
    /// (after the used ring's), as EVENT_IDX places them.
    pub const USED_EVENT: u64 = AVAIL + 4 + 2 * SIZE as u64;
    pub const AVAIL_EVENT: u64 = USED + 4 + 8 * SIZE as u64;

    pub const F_NEXT: u16 = 1;
    pub const F_WRITE: u16 = 2;
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    /// A queue with three one-descriptor chains available.
    fn three_chains() -> (GuestMemoryMmap, Queue) {
        let mem = memory();
        publish(
            &mem,
            &[
                (DATA, 8, F_WRITE, 0),
                (DATA, 8, F_WRITE, 0),
                (DATA, 8, F_WRITE, 0),
            ],
            &[0, 1, 2],
        );
        (mem, queue())
    }

    #[test]
    fn a_pass_takes_at_most_its_budget_and_says_more_wait() {
        let (mem, mut q) = three_chains();
        let mut seen = Vec::new();
        let first = drain_queue_within(&mut q, &mem, 2, |c| {
            seen.push(c.head_index());
            8
        });
        assert_eq!(first, QueueOutcome::Yielded);
        assert_eq!(seen, [0, 1]);
        assert_eq!(used(&mem).0, 2, "the two taken are returned at once");
        let second = drain_queue_within(&mut q, &mem, 2, |c| {
            seen.push(c.head_index());
            8
        });
        assert_eq!(second, QueueOutcome::Used);
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(used(&mem).0, 3);
        // Nothing left: idle, whatever the budget.
        assert_eq!(
            drain_queue_within(&mut q, &mem, 2, |_| 8),
            QueueOutcome::Idle
        );
    }

    /// A costed pass ends once its chains' costs reach the budget (the chain that crosses it
    /// is served whole); the rest waits on the ring.
    #[test]
    fn a_costed_pass_stops_at_its_cost_budget() {
        let (mem, mut q) = three_chains();
        let mut seen = Vec::new();
        let pass = |q: &mut Queue, seen: &mut Vec<u16>| {
            drain_queue_costed(q, &mem, 256, 64, |c| {
                seen.push(c.head_index());
                (8, 40)
            })
        };
        assert_eq!(pass(&mut q, &mut seen), QueueOutcome::Yielded);
        assert_eq!(seen, [0, 1]);
        assert_eq!(used(&mem).0, 2);
        assert_eq!(pass(&mut q, &mut seen), QueueOutcome::Used);
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(pass(&mut q, &mut seen), QueueOutcome::Idle);
    }

    /// A driver that polls (VRING_AVAIL_F_NO_INTERRUPT) gets its buffers back and no
    /// interrupt; once it clears the flag, interrupts again.
    #[test]
    fn a_polling_driver_gets_no_interrupt() {
        use vm_memory::{Bytes, GuestAddress};
        let (mem, mut q) = three_chains();
        mem.write_obj(VRING_AVAIL_F_NO_INTERRUPT, GuestAddress(AVAIL))
            .unwrap();
        assert_eq!(
            drain_queue_within(&mut q, &mem, 1, |_| 8),
            QueueOutcome::Yielded,
            "a pass cut short still comes back"
        );
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Idle);
        assert_eq!(used(&mem).0, 3, "the buffers are returned all the same");
        mem.write_obj(0u16, GuestAddress(AVAIL)).unwrap();
        publish(&mem, &[(DATA, 8, F_WRITE, 0)], &[0, 0, 0, 0]);
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Used);
    }

    /// The used ring's flags, where `VRING_USED_F_NO_NOTIFY` (1) tells the driver not to notify.
    fn used_flags(mem: &GuestMemoryMmap) -> u16 {
        use vm_memory::{Bytes, GuestAddress};
        mem.read_obj(GuestAddress(USED)).unwrap()
    }

    /// While a pass runs the driver is asked not to notify; what it adds meanwhile is taken by
    /// the same pass; after it, notifications are on again.
    #[test]
    fn a_pass_asks_for_no_notification_and_takes_what_comes_meanwhile() {
        let mem = memory();
        let mut q = queue();
        publish(&mem, &[(DATA, 8, F_WRITE, 0)], &[0]);
        let driver = mem.clone();
        let mut seen = Vec::new();
        let outcome = drain_queue(&mut q, &mem, |c| {
            assert_eq!(used_flags(&mem), 1, "no notifications while the pass runs");
            if seen.is_empty() {
                // The driver adds two more chains while the device works on the first.
                publish(
                    &driver,
                    &[
                        (DATA, 8, F_WRITE, 0),
                        (DATA, 8, F_WRITE, 0),
                        (DATA, 8, F_WRITE, 0),
                    ],
                    &[0, 1, 2],
                );
            }
            seen.push(c.head_index());
            8
        });
        assert_eq!(outcome, QueueOutcome::Used);
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(used_flags(&mem), 0, "notifications are on between passes");
    }

    /// A pass cut short by its budget leaves notifications on too (the device comes back by
    /// its own eventfd, and a snapshot taken meanwhile must not hold a silenced queue).
    #[test]
    fn a_yielded_pass_leaves_notifications_on() {
        let (mem, mut q) = three_chains();
        assert_eq!(
            drain_queue_within(&mut q, &mem, 1, |_| 8),
            QueueOutcome::Yielded
        );
        assert_eq!(used_flags(&mem), 0);
    }

    /// With EVENT_IDX the device writes its avail event (the next chain it takes) after every
    /// pass, so the driver notifies for the next chain; and interrupts follow the driver's used
    /// event: none until the used ring passes it.
    #[test]
    fn with_event_idx_the_events_decide_notifications_and_interrupts() {
        use vm_memory::{Bytes, GuestAddress};
        let (mem, mut q) = three_chains();
        q.set_event_idx(true);
        // The driver wants an interrupt only once the fifth buffer is used.
        mem.write_obj(4u16, GuestAddress(USED_EVENT)).unwrap();
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Idle);
        assert_eq!(used(&mem).0, 3, "the buffers are returned all the same");
        let avail_event: u16 = mem.read_obj(GuestAddress(AVAIL_EVENT)).unwrap();
        assert_eq!(avail_event, 3, "notify me when chain 3 is made available");
        assert_eq!(used_flags(&mem), 0, "no flags with EVENT_IDX");
        // Two more: the used ring passes the used event (index 4): an interrupt.
        publish(&mem, &[(DATA, 8, F_WRITE, 0)], &[0, 0, 0, 0, 0]);
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Used);
        let avail_event: u16 = mem.read_obj(GuestAddress(AVAIL_EVENT)).unwrap();
        assert_eq!(avail_event, 5);
    }

    /// A driver that moves its avail index back (a hostile one) breaks the queue; the pass
    /// does not spin on a ring that says it has chains and gives none.
    #[test]
    fn an_avail_index_moved_back_breaks_the_queue() {
        use vm_memory::{Bytes, GuestAddress};
        let (mem, mut q) = three_chains();
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Used);
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Broken);
    }

    /// A ring whose index says a chain waits but whose entries cannot be read (here: past the
    /// end of RAM) breaks the queue; the pass does not spin asking again and again.
    #[test]
    fn a_ring_that_says_more_and_gives_none_breaks_the_queue() {
        use vm_memory::{Bytes, GuestAddress};
        let mem = memory();
        let mut q = queue();
        let avail = 0x8000_0000 + (1 << 20) - 4;
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Broken);
    }

    /// A queue the driver never set up is no fault of its: a notification finds nothing to do
    /// and writes nothing (its rings are nowhere).
    #[test]
    fn a_queue_that_is_not_set_up_is_idle() {
        let mem = memory();
        let mut q = virtio_queue::Queue::new(SIZE).unwrap();
        assert_eq!(drain_queue(&mut q, &mem, |_| 8), QueueOutcome::Idle);
        assert_eq!(next_chain(&mut q, &mem).map(|c| c.is_none()), Ok(true));
        assert_eq!(rearm(&mut q, &mem), Ok(false));
    }

    #[test]
    fn a_full_budget_with_nothing_more_is_not_a_yield() {
        let mem = memory();
        let mut q = queue();
        publish(
            &mem,
            &[(DATA, 8, F_WRITE, 0), (DATA, 8, F_WRITE, 0)],
            &[0, 1],
        );
        assert_eq!(
            drain_queue_within(&mut q, &mem, 2, |_| 8),
            QueueOutcome::Used
        );
    }
}
