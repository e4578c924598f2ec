//! virtio-net (`--net tap=NAME[,mac=MAC]`) on a Linux tap device.
//!
//! Queue 0 receives (tap to guest), queue 1 transmits (guest to tap); no control queue. Each
//! buffer is a 12-byte `virtio_net_hdr_v1` and an Ethernet frame, which is what the tap reads
//! and writes (see [`super::tap`]), so a frame costs one syscall and one copy.
//!
//! Offloads go through that header as the kernel's tap defines them (as kvmtool's and
//! Firecracker's virtio-net do): checksum and TCP segmentation both ways
//! (`CSUM`/`HOST_TSO4`/`HOST_TSO6`: the guest sends partly checksummed frames of up to 64 KiB
//! and the host's stack finishes them; `GUEST_CSUM`/`GUEST_TSO4`/`GUEST_TSO6`: the tap is told
//! with TUNSETOFFLOAD to hand over such frames, only those the driver accepted). The guest's
//! header goes to the tap as it is when the driver negotiated an offload (the tap's kernel
//! checks it and refuses a bad one, which counts as a refused frame); without one it is cleared.
//!
//! Receive is flow-controlled: when a frame waits and the guest has posted no buffer for it,
//! the device stops watching the tap ([`VirtioDevice::event_armed`]) until the guest notifies
//! the receive queue, so the event loop never spins on a readable tap. A frame that does not
//! fit the guest's buffer, or a transmit chain that is malformed or too long, is dropped (as a
//! NIC drops it), counted, and logged once.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::RawFd;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    device_id, drain_queue, read_config_bytes, QueueOutcome, VirtioDevice, VIRTIO_RING_F_EVENT_IDX,
};

/// Length of `virtio_net_hdr_v1` (with `num_buffers`), the header of every buffer.
pub const HDR_LEN: usize = 12;
/// The largest header + frame either way (a 64 KiB IP packet in an Ethernet frame, as
/// Firecracker bounds it); without offloads frames are MTU-sized, this only bounds a tap whose
/// MTU was raised and a hostile guest.
const MAX_BUFFER: usize = HDR_LEN + 65550;

const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// The offloads offered: checksum and TSO each way.
const OFFLOADS: u64 = VIRTIO_NET_F_CSUM
    | VIRTIO_NET_F_GUEST_CSUM
    | VIRTIO_NET_F_GUEST_TSO4
    | VIRTIO_NET_F_GUEST_TSO6
    | VIRTIO_NET_F_HOST_TSO4
    | VIRTIO_NET_F_HOST_TSO6;
const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// The tap's offload flags (linux/if_tun.h): frames with a partial checksum, TCP over IPv4
/// segments up to 64 KiB, and over IPv6.
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;

const RX: usize = 0;
const TX: usize = 1;

/// The host end of the link: a tap, or a socket in tests. Its fd is non-blocking.
pub trait NetBackend: Send {
    /// The fd the event loop watches for received frames.
    fn raw_fd(&self) -> RawFd;
    /// Reads one header + frame; `WouldBlock` when none waits.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Writes one header + frame.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize>;
    /// Which offloaded frames (`TUN_F_*`) the backend may hand over from now on.
    fn set_offload(&mut self, _flags: u32) -> std::io::Result<()> {
        Ok(())
    }
}

/// The tap's offload flags for the features the driver accepted: what it may receive.
fn tun_offload(features: u64) -> u32 {
    let mut flags = 0;
    if features & VIRTIO_NET_F_GUEST_CSUM != 0 {
        flags |= TUN_F_CSUM;
        if features & VIRTIO_NET_F_GUEST_TSO4 != 0 {
            flags |= TUN_F_TSO4;
        }
        if features & VIRTIO_NET_F_GUEST_TSO6 != 0 {
            flags |= TUN_F_TSO6;
        }
    }
    flags
}

/// Frames dropped, by cause (shown in the log when the device goes away).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    /// Received frames larger than the guest's buffer.
    pub rx_too_big: u64,
    /// Transmit chains that were malformed, shorter than a header or longer than the limit.
    pub tx_malformed: u64,
    /// Frames the tap refused (its queue full, the link down).
    pub tx_refused: u64,
}

/// Frames and payload bytes each way (Cloud Hypervisor's counter names).
#[derive(Debug, Default, Clone, Copy)]
struct NetStats {
    rx_bytes: u64,
    rx_frames: u64,
    tx_bytes: u64,
    tx_frames: u64,
}

/// The network device.
pub struct Net {
    backend: Box<dyn NetBackend>,
    config: [u8; 8],
    memory: Option<GuestMemoryMmap>,
    queues: Vec<Queue>,
    /// The frame read from the tap and not yet delivered (`rx_len` bytes; 0: none).
    rx_buf: Vec<u8>,
    rx_len: usize,
    /// A frame waits and the guest has no buffer: stop watching the tap.
    rx_stalled: bool,
    /// The tap failed for good (e.g. its interface was deleted): stop watching it.
    rx_failed: bool,
    tx_buf: Vec<u8>,
    /// The driver negotiated a transmit offload: its headers go to the tap as they are.
    tx_offload: bool,
    drops: Drops,
    /// Frames and bytes (headers not counted) each way, for `vm.counters`.
    stats: NetStats,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || mac[0] & 1 != 0 {
        // Too long, or a multicast address (no NIC has one).
        return None;
    }
    Some(mac)
}

impl Net {
    /// A network device on `backend` with address `mac`.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        Net {
            backend,
            config,
            memory: None,
            queues: Vec::new(),
            rx_buf: vec![0; MAX_BUFFER],
            rx_len: 0,
            rx_stalled: false,
            rx_failed: false,
            tx_buf: vec![0; MAX_BUFFER],
            tx_offload: false,
            drops: Drops::default(),
            stats: NetStats::default(),
        }
    }

    /// What was dropped so far.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Moves frames from the tap into the guest's receive buffers until either runs out.
    fn receive(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(RX)) else {
            return QueueOutcome::Idle;
        };
        if self.rx_failed {
            return QueueOutcome::Idle;
        }
        let mut used = false;
        self.rx_stalled = false;
        // As in a drain: a ring that says it has buffers and then gives none is malformed.
        let mut more_said = false;
        loop {
            if self.rx_len == 0 {
                match self.backend.recv(&mut self.rx_buf) {
                    Ok(n) if n >= HDR_LEN => self.rx_len = n,
                    Ok(0) => break,
                    Ok(_) => continue, // a runt: nothing to deliver
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // Not a wait but a failure (a deleted interface gives EBADFD while
                        // epoll keeps reporting an error): stop receiving instead of spinning.
                        log::warn!("virtio-net: cannot read from the tap ({e}); receive stops");
                        self.rx_failed = true;
                        break;
                    }
                }
                // One buffer a frame: num_buffers is 1 (the tap leaves those bytes alone).
                self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            let chain = match super::next_chain(queue, memory) {
                Ok(Some(chain)) => chain,
                Ok(None) if more_said => return QueueOutcome::Broken,
                Ok(None) => {
                    // Out of buffers: ask for a notification when the driver adds some, and
                    // look once more (it may have added one before it saw the request).
                    match super::rearm(queue, memory) {
                        Ok(true) => {
                            more_said = true;
                            continue;
                        }
                        Ok(false) => {
                            self.rx_stalled = true;
                            break;
                        }
                        Err(()) => return QueueOutcome::Broken,
                    }
                }
                Err(()) => return QueueOutcome::Broken,
            };
            more_said = false;
            let head = chain.head_index();
            let frame = &self.rx_buf[..self.rx_len];
            let written = match chain.writer(memory) {
                Ok(mut w) if w.available_bytes() >= frame.len() => {
                    w.write_all(frame).ok().map(|_| frame.len() as u32)
                }
                _ => None,
            };
            self.rx_len = 0;
            if let Some(n) = written {
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += u64::from(n).saturating_sub(HDR_LEN as u64);
            }
            if written.is_none() {
                if self.drops.rx_too_big == 0 {
                    log::warn!(
                        "virtio-net: a {}-byte frame does not fit the guest's receive buffer; dropped",
                        frame.len()
                    );
                }
                self.drops.rx_too_big += 1;
            }
            if queue.add_used(memory, head, written.unwrap_or(0)).is_err() {
                return QueueOutcome::Broken;
            }
            used = true;
        }
        // Buffers to spare: the driver need not say when it adds more.
        if !self.rx_stalled && super::disarm(queue, memory).is_err() {
            return QueueOutcome::Broken;
        }
        super::used_outcome(queue, memory, used)
    }

    /// Sends every frame the guest queued for transmission.
    fn transmit(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(TX)) else {
            return QueueOutcome::Idle;
        };
        let (backend, buf, drops, stats, offload) = (
            &mut self.backend,
            &mut self.tx_buf,
            &mut self.drops,
            &mut self.stats,
            self.tx_offload,
        );
        drain_queue(queue, memory, |chain| {
            let len = match chain.reader(memory) {
                Ok(mut r) if (HDR_LEN..=MAX_BUFFER).contains(&r.available_bytes()) => {
                    let len = r.available_bytes();
                    r.read_exact(&mut buf[..len]).ok().map(|_| len)
                }
                _ => None,
            };
            let Some(len) = len else {
                if drops.tx_malformed == 0 {
                    crate::guest_warn!(
                        "virtio-net: a malformed or oversized transmit chain; dropped"
                    );
                }
                drops.tx_malformed += 1;
                return 0;
            };
            // Without a transmit offload the header means nothing: clear whatever the guest
            // put there so the tap sends the frame as it is.
            if !offload {
                buf[..HDR_LEN].fill(0);
            }
            loop {
                match backend.send(&buf[..len]) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if drops.tx_refused == 0 {
                            crate::guest_warn!(
                                "virtio-net: the tap refused a frame ({e}); dropped"
                            );
                        }
                        drops.tx_refused += 1;
                    }
                    Ok(_) => {
                        stats.tx_frames += 1;
                        stats.tx_bytes += (len - HDR_LEN) as u64;
                    }
                }
                break;
            }
            0
        })
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_id::NET
    }

    fn name(&self) -> &'static str {
        "net"
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | OFFLOADS | VIRTIO_RING_F_EVENT_IDX
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)> {
        self.queues.iter().map(|q| q.state()).enumerate().collect()
    }

    fn activate(&mut self, memory: GuestMemoryMmap, queues: Vec<Queue>, features: u64) {
        self.queues = queues;
        self.memory = Some(memory);
        self.tx_offload =
            features & (VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6) != 0;
        let flags = tun_offload(features);
        if let Err(e) = self.backend.set_offload(flags) {
            // The tap then hands over plain frames only, which the guest takes too.
            log::warn!(
                "virtio-net: the tap refused offloads {flags:#x} ({e}); receiving plain frames"
            );
        }
    }

    fn process_queue(&mut self, index: usize) -> QueueOutcome {
        match index {
            RX => self.receive(),
            TX => self.transmit(),
            _ => QueueOutcome::Idle,
        }
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.backend.raw_fd())
    }

    fn process_event(&mut self) -> QueueOutcome {
        self.receive()
    }

    fn event_armed(&self) -> bool {
        !self.rx_stalled && !self.rx_failed
    }

    fn reset(&mut self) {
        self.queues.clear();
        self.memory = None;
        self.rx_len = 0;
        self.rx_stalled = false;
        self.tx_offload = false;
        // The next driver may take no offload: no more offloaded frames from the tap.
        let _ = self.backend.set_offload(0);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats;
        vec![
            ("rx_bytes", s.rx_bytes),
            ("rx_frames", s.rx_frames),
            ("tx_bytes", s.tx_bytes),
            ("tx_frames", s.tx_frames),
        ]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.drops != Drops::default() {
            log::info!("virtio-net: dropped frames: {:?}", self.drops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;
    use vm_memory::{Bytes, GuestAddress};

    /// One end of a datagram socket pair: a frame is a datagram, as on a tap.
    /// It records the offloads it was told.
    struct SocketBackend(UnixDatagram, std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

    impl SocketBackend {
        fn boxed(sock: UnixDatagram) -> Box<Self> {
            Box::new(SocketBackend(sock, Default::default()))
        }
    }

    impl NetBackend for SocketBackend {
        fn raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
        fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.recv(buf)
        }
        fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
            self.0.send(frame)
        }
        fn set_offload(&mut self, flags: u32) -> std::io::Result<()> {
            self.1.lock().unwrap().push(flags);
            Ok(())
        }
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A device with RX at the test queue addresses and TX 0x4000 above them.
    fn active() -> (Net, UnixDatagram, GuestMemoryMmap) {
        active_with(queue(), 0)
    }

    /// [`active`] with receive queue `rx` and `features` accepted.
    fn active_with(rx: Queue, features: u64) -> (Net, UnixDatagram, GuestMemoryMmap) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mem = memory();
        let mut net = Net::new(SocketBackend::boxed(a), MAC);
        net.activate(mem.clone(), vec![rx, queue()], features);
        (net, b, mem)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xee; HDR_LEN];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn config_has_the_mac_and_link_up() {
        let (net, _, _) = active();
        let mut data = [0u8; 8];
        net.read_config(0, &mut data);
        assert_eq!(&data[..6], &MAC);
        assert_eq!(u16::from_le_bytes([data[6], data[7]]), VIRTIO_NET_S_LINK_UP);
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some(MAC));
        assert_eq!(parse_mac("53:54:00:12:34:56"), None, "multicast");
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("52-54-00-12-34-56"), None);
    }

    #[test]
    fn received_frames_fill_buffers_and_wait_for_more() {
        let (mut net, peer, mem) = active();
        peer.send(&frame(b"first")).unwrap();
        peer.send(&frame(b"second")).unwrap();
        publish(&mem, &[(DATA, 2048, F_WRITE, 0)], &[0]);
        assert_eq!(net.process_event(), QueueOutcome::Used);
        assert_eq!(used(&mem), (1, vec![(0, (HDR_LEN + 5) as u32)]));
        let mut got = vec![0u8; HDR_LEN + 5];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(&got[10..12], &[1, 0], "num_buffers");
        assert_eq!(&got[HDR_LEN..], b"first");
        // The second frame waits: no buffer. The tap is not watched until the guest adds one.
        assert!(!net.event_armed());
        mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2)).unwrap();
        mem.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
        assert_eq!(net.process_queue(RX), QueueOutcome::Used);
        assert!(net.event_armed());
        assert_eq!(used(&mem).0, 2);
        assert_eq!(used(&mem).1[1].1, (HDR_LEN + 6) as u32);
    }

    /// With EVENT_IDX, a receive queue out of buffers asks the driver to notify for the next
    /// one (its avail event); with buffers to spare it asks for nothing (no flag, no event
    /// moved), so the driver's refills cost no exits.
    #[test]
    fn receive_asks_for_notifications_only_when_out_of_buffers() {
        let mut rx = queue();
        rx.set_event_idx(true);
        let (mut net, peer, mem) = active_with(rx, VIRTIO_RING_F_EVENT_IDX);
        publish(
            &mem,
            &[(DATA, 2048, F_WRITE, 0), (DATA + 2048, 2048, F_WRITE, 0)],
            &[0, 1],
        );
        peer.send(&frame(b"one")).unwrap();
        assert_eq!(net.process_event(), QueueOutcome::Used);
        let event: u16 = mem.read_obj(GuestAddress(AVAIL_EVENT)).unwrap();
        assert_eq!(event, 0, "a buffer to spare: no notification asked for");
        peer.send(&frame(b"two")).unwrap();
        peer.send(&frame(b"three")).unwrap();
        // The driver took the first and wants to hear of the next.
        mem.write_obj(1u16, GuestAddress(USED_EVENT)).unwrap();
        assert_eq!(net.process_event(), QueueOutcome::Used);
        assert!(!net.event_armed());
        let event: u16 = mem.read_obj(GuestAddress(AVAIL_EVENT)).unwrap();
        assert_eq!(event, 2, "out of buffers: notify when the third is added");
        // Without EVENT_IDX the same is said with the used ring's flag.
        let (mut net, peer, mem) = active();
        publish(
            &mem,
            &[(DATA, 2048, F_WRITE, 0), (DATA + 2048, 2048, F_WRITE, 0)],
            &[0, 1],
        );
        peer.send(&frame(b"one")).unwrap();
        net.process_event();
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED)).unwrap(), 1);
        peer.send(&frame(b"two")).unwrap();
        peer.send(&frame(b"three")).unwrap();
        net.process_event();
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED)).unwrap(), 0);
    }

    /// A driver that sets up only the transmit queue (as the abuse guest does): a frame from
    /// the tap waits, the device does not break, and transmit works.
    #[test]
    fn a_receive_queue_not_set_up_only_waits() {
        let (mut net, peer, mem) = active_with(Queue::new(256).unwrap(), 0);
        peer.send(&frame(b"early")).unwrap();
        assert_eq!(net.process_event(), QueueOutcome::Idle);
        assert!(!net.event_armed(), "the frame waits for buffers");
        let tx = frame(b"out");
        mem.write_slice(&tx, GuestAddress(DATA)).unwrap();
        publish(&mem, &[(DATA, tx.len() as u32, 0, 0)], &[0]);
        assert_eq!(net.process_queue(TX), QueueOutcome::Used);
        let mut got = [0u8; 64];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[HDR_LEN..n], b"out");
    }

    #[test]
    fn a_frame_too_big_for_the_buffer_is_dropped() {
        let (mut net, peer, mem) = active();
        peer.send(&frame(&[7u8; 100])).unwrap();
        publish(&mem, &[(DATA, 64, F_WRITE, 0)], &[0]);
        assert_eq!(net.process_event(), QueueOutcome::Used);
        assert_eq!(used(&mem), (1, vec![(0, 0)]));
        assert_eq!(net.drops().rx_too_big, 1);
    }

    #[test]
    fn transmitted_frames_reach_the_tap_with_a_clean_header() {
        let (mut net, peer, mem) = active();
        let tx = frame(b"hello, tap");
        mem.write_slice(&tx[..HDR_LEN], GuestAddress(DATA)).unwrap();
        mem.write_slice(&tx[HDR_LEN..], GuestAddress(DATA + 0x100))
            .unwrap();
        publish(
            &mem,
            &[(DATA, HDR_LEN as u32, F_NEXT, 1), (DATA + 0x100, 10, 0, 0)],
            &[0],
        );
        assert_eq!(net.process_queue(TX), QueueOutcome::Used);
        let mut got = [0u8; 64];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(n, HDR_LEN + 10);
        assert_eq!(&got[..HDR_LEN], &[0u8; HDR_LEN]);
        assert_eq!(&got[HDR_LEN..n], b"hello, tap");
    }

    #[test]
    fn hostile_transmit_chains_are_dropped_not_fatal() {
        let (mut net, peer, mem) = active();
        peer.set_nonblocking(true).unwrap();
        publish(
            &mem,
            &[
                (0x1000, 64, 0, 0),     // outside RAM
                (DATA, 16, F_NEXT, 1),  // a loop
                (DATA, 16, F_NEXT, 1),  //
                (DATA, 4, 0, 0),        // shorter than a header
                (DATA, u32::MAX, 0, 0), // absurd length
                (DATA, 64, F_WRITE, 0), // device-writable only: nothing to send
            ],
            &[0, 1, 3, 4, 5],
        );
        assert_eq!(net.process_queue(TX), QueueOutcome::Used);
        assert_eq!(used(&mem).0, 5, "every chain is returned");
        assert_eq!(net.drops().tx_malformed, 4);
        // The loop is cut at the queue size (virtio-queue's chain TTL): one bounded frame.
        let mut got = [0u8; 1024];
        assert_eq!(peer.recv(&mut got).unwrap(), 16 * usize::from(SIZE));
        assert!(peer.recv(&mut got).is_err(), "nothing else was sent");
    }

    #[test]
    fn offloads_are_offered_and_the_tap_takes_what_the_driver_accepted() {
        let (a, _b) = UnixDatagram::pair().unwrap();
        let backend = SocketBackend::boxed(a);
        let told = backend.1.clone();
        let mut net = Net::new(backend, MAC);
        assert_eq!(net.features() & OFFLOADS, OFFLOADS);
        // Checksum and TSO4 only: the tap hands over those, not TSO6.
        let accepted = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_CSUM;
        net.activate(memory(), vec![queue(), queue()], accepted);
        // A reset: nothing offloaded any more; a driver that takes no offload: the same.
        net.reset();
        net.activate(memory(), vec![queue(), queue()], 0);
        // TSO without checksum offload is no offload (the spec makes one need the other).
        net.reset();
        net.activate(memory(), vec![queue(), queue()], VIRTIO_NET_F_GUEST_TSO6);
        assert_eq!(*told.lock().unwrap(), [TUN_F_CSUM | TUN_F_TSO4, 0, 0, 0, 0]);
    }

    #[test]
    fn with_a_transmit_offload_the_guests_header_reaches_the_tap() {
        let (a, peer) = UnixDatagram::pair().unwrap();
        let mem = memory();
        let mut net = Net::new(SocketBackend::boxed(a), MAC);
        net.activate(
            mem.clone(),
            vec![queue(), queue()],
            VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4,
        );
        // NEEDS_CSUM, GSO TCPv4, hdr_len 54, gso_size 1448, csum_start 34, csum_offset 16.
        let mut tx = vec![1u8, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
        tx.extend_from_slice(b"a segment to be");
        mem.write_slice(&tx, GuestAddress(DATA)).unwrap();
        publish(&mem, &[(DATA, tx.len() as u32, 0, 0)], &[0]);
        assert_eq!(net.process_queue(TX), QueueOutcome::Used);
        let mut got = [0u8; 64];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(
            &got[..n],
            &tx[..],
            "header and frame as the guest wrote them"
        );
    }

    /// A tap whose interface is gone.
    struct DeadBackend;

    impl NetBackend for DeadBackend {
        fn raw_fd(&self) -> RawFd {
            -1
        }
        fn recv(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::EBADFD))
        }
        fn send(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::EBADFD))
        }
    }

    #[test]
    fn a_failed_tap_is_no_longer_watched() {
        let mut net = Net::new(Box::new(DeadBackend), MAC);
        net.activate(memory(), vec![queue(), queue()], 0);
        assert!(net.event_armed());
        assert_eq!(net.process_event(), QueueOutcome::Idle);
        assert!(!net.event_armed(), "a dead tap would spin the event loop");
    }

    #[test]
    fn a_full_tap_drops_the_frame_and_goes_on() {
        let (mut net, peer, mem) = active();
        drop(peer); // sends now fail (ECONNREFUSED), as a tap whose link is down
        let tx = frame(b"x");
        mem.write_slice(&tx, GuestAddress(DATA)).unwrap();
        publish(&mem, &[(DATA, tx.len() as u32, 0, 0)], &[0]);
        assert_eq!(net.process_queue(TX), QueueOutcome::Used);
        assert_eq!(net.drops().tx_refused, 1);
    }
}
