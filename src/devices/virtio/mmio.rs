//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2), written once for every device.
//!
//! Three points of installation, as Firecracker's transport: the MMIO bus (registers, this
//! file's [`MmioTransport`] as a [`BusDevice`]), the event loop (one eventfd per queue, which
//! KVM signals directly when registered as an ioeventfd on the QueueNotify register), and the
//! interrupt ([`Interrupt`]: an edge on a PLIC source or on a line of KVM's AIA).
//!
//! Every register write is checked against the status the driver has reached
//! (`check_device_status`, as Firecracker does): queue setup only between FEATURES_OK and
//! DRIVER_OK, features only before FEATURES_OK, and so on. A driver that breaks the protocol,
//! or hands over a malformed queue, gets DEVICE_NEEDS_RESET and a config-change interrupt;
//! nothing it does can panic the VMM.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{QueueOutcome, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::control::{Flow, CONTINUE};
use crate::devices::{BusDevice, Counted};
use crate::event_loop::set_watched;
use crate::interrupts::Interrupt;

/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
const VERSION: u32 = 2;
/// "RVVM".
const VENDOR_ID: u32 = 0x4d56_5652;

#[cfg(test)]
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
const STATUS_FAILED: u32 = 128;

/// InterruptStatus bit: a used buffer.
pub const INT_USED_RING: u32 = 1;
/// InterruptStatus bit: the configuration (or status) changed.
pub const INT_CONFIG: u32 = 2;

/// Offset of QueueNotify (where an ioeventfd goes).
pub const QUEUE_NOTIFY: u64 = 0x50;
/// Start of the device-specific configuration space.
const CONFIG_SPACE: u64 = 0x100;

/// The transport around one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    memory: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    interrupt: Arc<dyn Interrupt>,
    interrupt_status: Arc<AtomicU32>,
    /// Queue notifications handled (an eventfd's count adds up several) and interrupts sent.
    notifications: u64,
    interrupts: AtomicU64,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    config_generation: u32,
    activated: bool,
    /// Whether the event loop watches the device's own fd (see `sync_device_event`).
    device_event_watched: bool,
}

impl MmioTransport {
    /// A transport for `device`, interrupting through `interrupt`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
    ) -> std::io::Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("queue sizes are powers of two"))
            .collect::<Vec<_>>();
        let queue_evts = (0..queues.len())
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(MmioTransport {
            device,
            memory,
            queues,
            queue_evts,
            interrupt,
            interrupt_status: Arc::new(AtomicU32::new(0)),
            notifications: 0,
            interrupts: AtomicU64::new(0),
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
            activated: false,
            device_event_watched: false,
        })
    }

    /// The eventfd of each queue (for KVM ioeventfds on [`QUEUE_NOTIFY`] with the queue index
    /// as the data match).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Why the device cannot be in a snapshot, if it cannot.
    pub fn snapshot_refusal(&self) -> Option<String> {
        self.device.snapshot_refusal()
    }

    /// The device's name.
    pub fn name(&self) -> &'static str {
        self.device.name()
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Whether the driver has reached `set` and none of `clear`.
    fn check_device_status(&self, set: u32, clear: u32) -> bool {
        self.status & (set | clear) == set
    }

    fn signal(&self, bits: u32) {
        self.interrupt_status.fetch_or(bits, Ordering::SeqCst);
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.interrupt.trigger();
    }

    fn needs_reset(&mut self, why: &str) {
        crate::guest_warn!(
            "virtio-{}: {why}; the device needs a reset",
            self.device.name()
        );
        if self.status & STATUS_DRIVER_OK != 0 {
            self.status |= STATUS_NEEDS_RESET;
            self.signal(INT_CONFIG);
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for (q, max) in self.queues.iter_mut().zip(self.device.queue_max_sizes()) {
            *q = Queue::new(*max).expect("queue sizes are powers of two");
        }
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activated = false;
        self.interrupt_status.store(0, Ordering::SeqCst);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let new_bits = value & !self.status;
        if value & self.status != self.status {
            // Clearing bits other than by a reset is not allowed.
            return self.needs_reset("the driver cleared status bits");
        }
        if new_bits & STATUS_FEATURES_OK != 0 {
            let offered = self.device_features();
            if self.driver_features & !offered != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0
            {
                crate::guest_warn!(
                    "virtio-{}: driver features {:#x} not acceptable",
                    self.device.name(),
                    self.driver_features
                );
                self.status = value & !STATUS_FEATURES_OK;
                return;
            }
        }
        self.status = value;
        if new_bits & STATUS_DRIVER_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & STATUS_FEATURES_OK == 0 {
            return self.needs_reset("DRIVER_OK without FEATURES_OK");
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.memory) {
                return self
                    .needs_reset(&format!("queue {i} lies outside guest RAM or is malformed"));
            }
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            match Queue::try_from(q.state()) {
                Ok(mut q) => {
                    // The device offered it only if all its queue paths keep the events.
                    q.set_event_idx(self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0);
                    queues.push(q)
                }
                Err(e) => return self.needs_reset(&format!("bad queue setup: {e}")),
            }
        }
        self.device
            .activate(self.memory.clone(), queues, self.driver_features);
        self.activated = true;
        if self.device.event_fd().is_some() {
            // Wake the event loop (on queue 0) so that it starts watching the device's fd.
            if let Some(evt) = self.queue_evts.first() {
                let _ = evt.write(1);
            }
        }
        log::debug!("virtio-{}: activated", self.device.name());
    }

    /// Runs the device for a notification of queue `index` (from the event loop).
    pub fn process_queue(&mut self, index: usize) {
        if !self.activated || self.status & STATUS_NEEDS_RESET != 0 {
            return;
        }
        let outcome = self.device.process_queue(index);
        if outcome == QueueOutcome::Yielded {
            // The rest of the queue at the next pass, after what else is ready: the queue's
            // own eventfd, written here, brings the event loop back to it.
            if let Some(evt) = self.queue_evts.get(index) {
                let _ = evt.write(1);
            }
        }
        self.apply(outcome);
    }

    /// Runs the device for its own event fd (from the event loop).
    pub fn process_event(&mut self) {
        if !self.activated || self.status & STATUS_NEEDS_RESET != 0 {
            return;
        }
        let outcome = self.device.process_event();
        self.apply(outcome);
    }

    fn apply(&mut self, outcome: QueueOutcome) {
        match outcome {
            QueueOutcome::Idle => {}
            QueueOutcome::Used | QueueOutcome::Yielded => self.signal(INT_USED_RING),
            QueueOutcome::Broken => self.needs_reset("malformed queue"),
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR_ID,
            0x10 => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            0x34 => self
                .selected_queue()
                .map(|q| u32::from(q.max_size()))
                .unwrap_or(0),
            0x44 => self
                .selected_queue()
                .map(|q| u32::from(q.ready()))
                .unwrap_or(0),
            // InterruptStatus (0x60) is served by `SharedTransport`, without the lock.
            0x70 => self.status,
            // SHMLenLow/High and SHMBaseLow/High: no device here has shared memory regions,
            // and a region that does not exist reads as length -1 (virtio 1.2, 4.2.2). A 0
            // would be a region of length 0 at address 0, which virtio-fs's driver then
            // fails to claim for its DAX window (its probe ends with EBUSY).
            0xb0 | 0xb4 | 0xb8 | 0xbc => u32::MAX,
            0xfc => self.config_generation,
            _ => {
                log::debug!(
                    "virtio-{}: read of register {offset:#x}",
                    self.device.name()
                );
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        let setup = self.check_device_status(STATUS_FEATURES_OK, STATUS_DRIVER_OK | STATUS_FAILED);
        match offset {
            0x14 => self.device_features_sel = value,
            0x20 if self.check_device_status(STATUS_DRIVER, STATUS_FEATURES_OK | STATUS_FAILED) => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            0x24 => self.driver_features_sel = value,
            0x30 => self.queue_sel = value,
            0x38 if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value.min(u32::from(u16::MAX)) as u16);
                }
            }
            0x44 if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            QUEUE_NOTIFY => {
                // Reached only without an ioeventfd: pass the notification on the same path.
                if let Some(evt) = self.queue_evts.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            // InterruptACK (0x64) is served by `SharedTransport`, without the lock.
            0x70 => self.set_status(value),
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if setup => {
                let (lo, hi) = if offset.is_multiple_of(8) {
                    (Some(value), None)
                } else {
                    (None, Some(value))
                };
                if let Some(q) = self.selected_queue() {
                    match offset {
                        0x80 | 0x84 => q.set_desc_table_address(lo, hi),
                        0x90 | 0x94 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => log::debug!(
                "virtio-{}: write {value:#x} to register {offset:#x} ignored in status {:#x}",
                self.device.name(),
                self.status
            ),
        }
    }
}

/// The transport on the bus and in the event loop: shared between the vCPU threads (registers)
/// and the event-loop thread (queues).
///
/// InterruptStatus and InterruptACK, which the driver reads and writes at every interrupt, are
/// served without the lock: the event loop holds it for a whole pass over a queue (a disk's
/// reads included), and a vCPU taking the interrupt of the pass's first request would wait for
/// the pass's last. They are one atomic, which the device sets before it raises the edge.
#[derive(Clone)]
pub struct SharedTransport {
    transport: Arc<Mutex<MmioTransport>>,
    interrupt_status: Arc<AtomicU32>,
}

impl SharedTransport {
    /// Shares `transport`.
    pub fn new(transport: MmioTransport) -> Self {
        let interrupt_status = transport.interrupt_status.clone();
        SharedTransport {
            transport: Arc::new(Mutex::new(transport)),
            interrupt_status,
        }
    }

    /// The transport, locked (a poisoned lock is taken over: its state is plain registers).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, MmioTransport> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// InterruptStatus (read) and InterruptACK (write).
const INTERRUPT_STATUS: u64 = 0x60;
const INTERRUPT_ACK: u64 = 0x64;

impl BusDevice for SharedTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == INTERRUPT_STATUS && data.len() == 4 {
            let status = self.interrupt_status.load(Ordering::SeqCst);
            data.copy_from_slice(&status.to_le_bytes());
            return;
        }
        let mut t = self.lock();
        if offset >= CONFIG_SPACE {
            t.device.read_config(offset - CONFIG_SPACE, data);
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&t.read_reg(offset).to_le_bytes());
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Flow {
        if offset == INTERRUPT_ACK && data.len() == 4 {
            let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.interrupt_status.fetch_and(!value, Ordering::SeqCst);
            return CONTINUE;
        }
        let mut t = self.lock();
        if offset >= CONFIG_SPACE {
            if t.check_device_status(STATUS_DRIVER, STATUS_FAILED) {
                t.device.write_config(offset - CONFIG_SPACE, data);
            }
        } else if data.len() == 4 && offset.is_multiple_of(4) {
            t.write_reg(
                offset,
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            );
        }
        CONTINUE
    }
}

/// Event data of the device's own fd (queue fds use their index).
const DEVICE_EVENT: u32 = u32::MAX;

impl MmioTransport {
    /// Whether the device's own fd should be watched now: only while the device runs and
    /// has room for what the fd brings (else a readable fd would spin the loop).
    fn device_event_wanted(&self) -> bool {
        self.activated && self.status & STATUS_NEEDS_RESET == 0 && self.device.event_armed()
    }

    /// Adds or removes the device's fd from the loop to match [`Self::device_event_wanted`].
    fn sync_device_event(&mut self, ops: &mut EventOps) {
        let Some(fd) = self.device.event_fd() else {
            return;
        };
        let want = self.device_event_wanted();
        let events = Events::with_data_raw(fd, DEVICE_EVENT, EventSet::IN);
        if let Err(e) = set_watched(ops, events, &mut self.device_event_watched, want) {
            log::error!(
                "virtio-{}: cannot (un)watch its fd: {e:?}",
                self.device.name()
            );
        }
    }
}

/// A queue in a snapshot (virtio-queue's `QueueState`, which has no serde, mirrored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// Largest size the device offers.
    pub max_size: u16,
    /// The next available-ring entry the device takes.
    pub next_avail: u16,
    /// The next used-ring entry the device fills.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX negotiated.
    pub event_idx_enabled: bool,
    /// Size the driver chose.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
}

impl From<virtio_queue::QueueState> for QueueSnapshot {
    fn from(q: virtio_queue::QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<&QueueSnapshot> for virtio_queue::QueueState {
    fn from(q: &QueueSnapshot) -> Self {
        virtio_queue::QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// A transport (and the progress of its device's queues) in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    /// The device's name, checked on restore.
    pub device: String,
    /// Device status.
    pub status: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    /// QueueSel.
    pub queue_sel: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// Whether the device was running (DRIVER_OK reached and accepted).
    pub activated: bool,
    /// Each queue, with the device's own progress through it.
    pub queues: Vec<QueueSnapshot>,
}

impl MmioTransport {
    /// The transport's registers and its queues as the device has advanced them.
    pub fn save(&self) -> TransportState {
        let live = if self.activated {
            self.device.queue_states()
        } else {
            Vec::new()
        };
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                live.iter()
                    .find(|(index, _)| *index == i)
                    .map(|(_, state)| *state)
                    .unwrap_or_else(|| q.state())
                    .into()
            })
            .collect();
        TransportState {
            device: self.device.name().to_string(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt_status.load(Ordering::SeqCst),
            activated: self.activated,
            queues,
        }
    }

    /// Takes a snapshot's transport state: a device that was running is activated again on
    /// its queues where it left them, and a pending interrupt is raised again.
    pub fn restore(&mut self, saved: &TransportState) -> Result<(), String> {
        let name = self.device.name();
        if saved.device != name || saved.queues.len() != self.queues.len() {
            return Err(format!(
                "the snapshot has virtio-{} with {} queues where this VM has virtio-{name} with {}",
                saved.device,
                saved.queues.len(),
                self.queues.len()
            ));
        }
        for (i, (to, from)) in self.queues.iter_mut().zip(&saved.queues).enumerate() {
            *to = Queue::try_from(virtio_queue::QueueState::from(from))
                .map_err(|e| format!("virtio-{name} queue {i}: {e}"))?;
        }
        self.status = saved.status;
        self.device_features_sel = saved.device_features_sel;
        self.driver_features_sel = saved.driver_features_sel;
        self.driver_features = saved.driver_features;
        self.queue_sel = saved.queue_sel;
        self.config_generation = saved.config_generation;
        if saved.activated {
            self.activate();
            if !self.activated {
                return Err(format!(
                    "virtio-{name} would not run on the snapshot's queues"
                ));
            }
        }
        self.interrupt_status
            .store(saved.interrupt_status, Ordering::SeqCst);
        if saved.interrupt_status != 0 {
            self.interrupt.trigger();
        }
        if self.activated {
            // After the saved interrupt state, which would otherwise overwrite this one's.
            let outcome = self.device.restored();
            self.apply(outcome);
        }
        Ok(())
    }
}

impl Counted for SharedTransport {
    fn counters(&self) -> BTreeMap<&'static str, u64> {
        let t = self.lock();
        let mut counters = BTreeMap::from([
            ("notifications", t.notifications),
            ("interrupts", t.interrupts.load(Ordering::Relaxed)),
        ]);
        counters.extend(t.device.counters());
        counters
    }
}

impl MutEventSubscriber for SharedTransport {
    fn init(&mut self, ops: &mut EventOps) {
        let mut t = self.lock();
        for (i, evt) in t.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                log::error!("virtio-{}: cannot watch queue {i}: {e:?}", t.device.name());
            }
        }
        t.sync_device_event(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut t = self.lock();
        match events.data() {
            DEVICE_EVENT => t.process_event(),
            index => {
                let index = index as usize;
                if let Some(evt) = t.queue_evts.get(index) {
                    // Non-blocking: a spurious wakeup reads EAGAIN, which is fine.
                    if let Ok(n) = evt.read() {
                        t.notifications += n;
                    }
                }
                t.process_queue(index);
            }
        }
        t.sync_device_event(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::testing::*;
    use crate::interrupts::CountingInterrupt;

    fn transport() -> (SharedTransport, Arc<CountingInterrupt>, GuestMemoryMmap) {
        let mem = memory();
        let irq = Arc::new(CountingInterrupt::default());
        let t = MmioTransport::new(Box::new(Rng::new()), mem.clone(), irq.clone()).unwrap();
        (SharedTransport::new(t), irq, mem)
    }

    fn r(t: &SharedTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn w(t: &SharedTransport, off: u64, v: u32) {
        assert_eq!(t.write(off, &v.to_le_bytes()), CONTINUE);
    }

    /// The Linux driver's sequence up to DRIVER_OK, with queue 0 at the test addresses.
    fn bring_up(t: &SharedTransport) {
        w(t, 0x70, STATUS_ACKNOWLEDGE);
        w(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, 0x24, 1);
        w(t, 0x20, 1); // VERSION_1
        w(
            t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(r(t, 0x70) & STATUS_FEATURES_OK, 0);
        w(t, 0x30, 0);
        w(t, 0x38, u32::from(SIZE));
        w(t, 0x80, DESC as u32);
        w(t, 0x84, 0);
        w(t, 0x90, AVAIL as u32);
        w(t, 0x94, 0);
        w(t, 0xa0, USED as u32);
        w(t, 0xa4, 0);
        w(t, 0x44, 1);
        w(
            t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }

    #[test]
    fn a_restored_transport_goes_on_where_the_device_was() {
        let (t, _, mem) = transport();
        bring_up(&t);
        publish(&mem, &[(DATA, 64, F_WRITE, 0)], &[0]);
        t.lock().process_queue(0);
        let saved = t.lock().save();
        assert!(saved.activated);
        assert_eq!(
            saved.queues[0].next_avail, 1,
            "the device's progress, not setup's copy"
        );
        assert_eq!(saved.interrupt_status, INT_USED_RING);
        // A fresh transport on the same RAM takes it, runs, and raises the pending interrupt.
        let irq = Arc::new(CountingInterrupt::default());
        let mut fresh = MmioTransport::new(Box::new(Rng::new()), mem.clone(), irq.clone()).unwrap();
        fresh.restore(&saved).unwrap();
        assert_eq!(fresh.save(), saved);
        assert_eq!(irq.0.load(Ordering::Relaxed), 1);
        publish(&mem, &[(DATA, 32, F_WRITE, 0)], &[0, 0]);
        fresh.process_queue(0);
        assert_eq!(used(&mem).0, 2, "the second request is used next");
        // Another device, or another shape, is refused.
        let mut other = MmioTransport::new(
            Box::new(
                crate::devices::virtio::console::VirtioConsole::new(Arc::new(
                    crate::console::BufferConsole::default(),
                ))
                .unwrap(),
            ),
            mem,
            irq,
        )
        .unwrap();
        assert!(other.restore(&saved).unwrap_err().contains("virtio-rng"));
    }

    #[test]
    fn identity_registers() {
        let (t, _, _) = transport();
        w(&t, 0xac, 0);
        assert_eq!(
            (r(&t, 0xb0), r(&t, 0xb4)),
            (u32::MAX, u32::MAX),
            "no shared memory region: length -1"
        );
        assert_eq!(r(&t, 0), MAGIC);
        assert_eq!(r(&t, 4), 2);
        assert_eq!(r(&t, 8), 4);
        w(&t, 0x14, 1);
        assert_eq!(r(&t, 0x10), 1, "VERSION_1 is feature bit 32");
        assert_eq!(r(&t, 0x34), 256);
    }

    #[test]
    fn notify_runs_the_device_and_interrupts() {
        let (t, irq, mem) = transport();
        bring_up(&t);
        publish(&mem, &[(DATA, 64, F_WRITE, 0)], &[0]);
        w(&t, QUEUE_NOTIFY, 0);
        // The notify went to the queue's eventfd; the event loop would now process it.
        assert_eq!(t.lock().queue_evts[0].read().unwrap(), 1);
        t.lock().process_queue(0);
        assert_eq!(used(&mem), (1, vec![(0, 64)]));
        assert_eq!(irq.0.load(Ordering::Relaxed), 1);
        assert_eq!(r(&t, 0x60), INT_USED_RING);
        w(&t, 0x64, INT_USED_RING);
        assert_eq!(r(&t, 0x60), 0);
    }

    /// A vCPU reads InterruptStatus and acknowledges while the event loop holds the transport
    /// (a pass over a disk's queue): neither waits for the lock.
    #[test]
    fn the_interrupt_registers_do_not_wait_for_a_pass() {
        let (t, _, mem) = transport();
        bring_up(&t);
        publish(&mem, &[(DATA, 64, F_WRITE, 0)], &[0]);
        t.lock().process_queue(0);
        let pass = t.lock();
        let (done, finished) = std::sync::mpsc::channel();
        let vcpu = t.clone();
        std::thread::spawn(move || {
            let status = r(&vcpu, 0x60);
            w(&vcpu, 0x64, status);
            let _ = done.send((status, r(&vcpu, 0x60)));
        });
        let seen = finished.recv_timeout(std::time::Duration::from_secs(10));
        drop(pass);
        assert_eq!(seen, Ok((INT_USED_RING, 0)));
    }

    #[test]
    fn features_the_device_does_not_offer_are_refused() {
        let (t, _, _) = transport();
        w(&t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&t, 0x24, 0);
        w(&t, 0x20, 1 << 3);
        w(
            &t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&t, 0x70) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn a_queue_outside_ram_needs_a_reset_not_a_panic() {
        let (t, irq, _) = transport();
        w(&t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&t, 0x24, 1);
        w(&t, 0x20, 1);
        w(
            &t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        w(&t, 0x38, u32::from(SIZE));
        w(&t, 0x80, 0x1000); // below RAM
        w(&t, 0x90, AVAIL as u32);
        w(&t, 0xa0, USED as u32);
        w(&t, 0x44, 1);
        w(
            &t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_ne!(r(&t, 0x70) & STATUS_NEEDS_RESET, 0);
        assert_eq!(r(&t, 0x60), INT_CONFIG);
        assert_eq!(irq.0.load(Ordering::Relaxed), 1);
        t.lock().process_queue(0); // ignored
        w(&t, 0x70, 0);
        assert_eq!(r(&t, 0x70), 0, "reset clears everything");
    }

    #[test]
    fn setup_registers_are_ignored_after_driver_ok_and_garbage_is_harmless() {
        let (t, _, mem) = transport();
        bring_up(&t);
        w(&t, 0x80, 0xdead_0000); // too late: ignored
        publish(&mem, &[(DATA, 8, F_WRITE, 0)], &[0]);
        t.lock().process_queue(0);
        assert_eq!(used(&mem).0, 1);
        for off in (0..0x200).step_by(4) {
            w(&t, off, u32::MAX);
            let _ = r(&t, off);
        }
        assert_eq!(t.write(0x70, &[1, 2]), CONTINUE);
        t.lock().process_queue(99);
    }
}
