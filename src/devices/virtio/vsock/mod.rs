//! virtio-vsock (`--vsock cid=N,socket=PATH`): stream sockets between the guest and host
//! processes, ending on the host in Unix sockets ([`muxer`]).
//!
//! Queue 0 (rx) takes packets to the guest, queue 1 (tx) brings the guest's, queue 2 (event)
//! holds the driver's event buffers: after a snapshot is restored (its host sockets are gone)
//! rvvmm puts `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` there, as Firecracker does, and the guest
//! drops its connections at once instead of at their next packet. Receive buffers are filled through
//! rust-vmm's virtio-vsock crate; transmitted packets are read with virtio-queue's chain reader
//! (see [`Vsock::transmit`]). A malformed packet (a chain too short for its header, a header
//! that claims more data than its chain holds or than [`MAX_PKT_DATA`], another CID, another
//! socket type) is dropped, counted and logged.

pub mod muxer;

use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{device_id, drain_queue, read_config_bytes, QueueOutcome, VirtioDevice};
use crate::files::SocketPathTaken;
use muxer::{Header, Muxer, HOST_CID, TYPE_STREAM};

const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;

/// Most data one packet carries either way (Linux's receive buffers hold 4 KiB; it sends at
/// most 64 KiB a packet).
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// The lowest CID a guest can have (0-2 are the hypervisor's, the local and the host's).
pub const MIN_GUEST_CID: u64 = 3;
/// The highest: `VMADDR_CID_ANY` (-1U) and above are not addresses.
pub const MAX_GUEST_CID: u64 = u32::MAX as u64 - 1;

/// The `--vsock` socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The path holds something that is not a socket.
    #[error("vsock socket {0}: the path exists and is not a socket; remove it or choose another")]
    NotASocket(PathBuf),
    /// Another process listens there (another VM's socket?).
    #[error("vsock socket {0}: another process listens on it")]
    InUse(PathBuf),
    /// The socket could not be made.
    #[error("vsock socket {path}: {source}")]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The listening socket of `--vsock`: bound once for the VM's life (every boot's device
/// listens on it, so host programs keep one path across guest reboots) and removed when the
/// VM goes.
pub struct VsockListener {
    listener: UnixListener,
    path: PathBuf,
}

impl VsockListener {
    /// Creates the socket at `path`: where a socket file nobody listens on is left (by an
    /// rvvmm that was killed), it is taken over, as the API socket's is.
    pub fn bind(path: &Path) -> Result<Self, VsockError> {
        let err = |source| VsockError::Io {
            path: path.to_path_buf(),
            source,
        };
        match crate::files::take_over_stale_socket(path, "vsock socket") {
            Ok(()) => {}
            Err(SocketPathTaken::NotASocket) => {
                return Err(VsockError::NotASocket(path.to_path_buf()))
            }
            Err(SocketPathTaken::InUse) => return Err(VsockError::InUse(path.to_path_buf())),
            Err(SocketPathTaken::Io(e)) => return Err(err(e)),
        }
        // Non-blocking is set by each boot's device (`Muxer::new`), on the one open socket.
        let listener = UnixListener::bind(path).map_err(err)?;
        Ok(VsockListener {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for VsockListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The vsock device.
pub struct Vsock {
    cid: u64,
    muxer: Muxer,
    memory: Option<GuestMemoryMmap>,
    queues: Vec<Queue>,
    /// Guest packets dropped as malformed.
    malformed: u64,
    buf: Vec<u8>,
}

impl Vsock {
    /// A device with guest CID `cid` whose host connections come in on `socket` (the VM's;
    /// the device listens on its own handle of it).
    pub fn new(cid: u64, socket: &VsockListener) -> std::io::Result<Self> {
        Ok(Vsock {
            cid,
            muxer: Muxer::new(socket.listener.try_clone()?, &socket.path)?,
            memory: None,
            queues: Vec::new(),
            malformed: 0,
            buf: vec![0; MAX_PKT_DATA as usize],
        })
    }

    /// Takes the guest's packets off the transmit queue to the muxer.
    ///
    /// Read through virtio-queue's chain reader, not the virtio-vsock crate's
    /// `from_tx_virtq_chain`: Linux (6.12 seen in the lab) sends a packet's data in more than
    /// one descriptor (its non-linear skbs), which the crate refuses.
    fn transmit(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(TX)) else {
            return QueueOutcome::Idle;
        };
        let (cid, muxer, buf, malformed) = (
            self.cid,
            &mut self.muxer,
            &mut self.buf,
            &mut self.malformed,
        );
        drain_queue(queue, memory, |chain| {
            let mut raw = [0u8; PKT_HEADER_SIZE];
            let mut reader = match chain.reader(memory) {
                Ok(r) if r.available_bytes() >= PKT_HEADER_SIZE => r,
                _ => {
                    *malformed += 1;
                    crate::guest_warn!(
                        "virtio-vsock: a transmit chain shorter than a packet header; dropped"
                    );
                    return 0;
                }
            };
            if reader.read_exact(&mut raw).is_err() {
                *malformed += 1;
                return 0;
            }
            let (src_cid, dst_cid, type_, hdr) = parse_header(&raw);
            let len = hdr.len as usize;
            if hdr.len > MAX_PKT_DATA || reader.available_bytes() < len {
                *malformed += 1;
                crate::guest_warn!(
                    "virtio-vsock: a packet claims {} bytes of data and brings {}; dropped",
                    hdr.len,
                    reader.available_bytes()
                );
                return 0;
            }
            if src_cid != cid || dst_cid != HOST_CID || type_ != TYPE_STREAM {
                // Not from this guest to the host, or not a stream: nothing rvvmm serves.
                *malformed += 1;
                crate::guest_warn!(
                    "virtio-vsock: a packet from CID {src_cid} to CID {dst_cid} of type {type_}; dropped"
                );
                return 0;
            }
            if reader.read_exact(&mut buf[..len]).is_err() {
                *malformed += 1;
                return 0;
            }
            muxer.from_guest(&hdr, &buf[..len]);
            0
        })
    }

    /// Fills the guest's receive buffers with what the muxer has for it.
    fn receive(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(RX)) else {
            return QueueOutcome::Idle;
        };
        let mut used = false;
        while self.muxer.has_packet_for_guest() {
            let Some(mut chain) = queue.pop_descriptor_chain(memory) else {
                break;
            };
            let head = chain.head_index();
            let written = match VsockPacket::from_rx_virtq_chain(memory, &mut chain, MAX_PKT_DATA) {
                Ok(mut pkt) => {
                    let room = pkt.data_slice().map_or(0, |s| s.len()).min(self.buf.len());
                    match self.muxer.to_guest(&mut self.buf[..room]) {
                        Some(hdr) => {
                            pkt.set_src_cid(HOST_CID)
                                .set_dst_cid(self.cid)
                                .set_src_port(hdr.src_port)
                                .set_dst_port(hdr.dst_port)
                                .set_type(TYPE_STREAM)
                                .set_op(hdr.op)
                                .set_flags(hdr.flags)
                                .set_buf_alloc(hdr.buf_alloc)
                                .set_fwd_cnt(hdr.fwd_cnt)
                                .set_len(hdr.len);
                            let n = hdr.len as usize;
                            if n > 0 {
                                if let Some(slice) = pkt.data_slice() {
                                    let _ = slice.write_slice(&self.buf[..n], 0);
                                }
                            }
                            PKT_HEADER_SIZE as u32 + hdr.len
                        }
                        None => {
                            // Nothing after all (its host socket had nothing): the buffer
                            // goes back on the ring for the next packet.
                            queue.go_to_previous_position();
                            break;
                        }
                    }
                }
                Err(e) => {
                    self.malformed += 1;
                    crate::guest_warn!("virtio-vsock: a malformed receive buffer ({e}); skipped");
                    0
                }
            };
            if queue.add_used(memory, head, written).is_err() {
                return QueueOutcome::Broken;
            }
            used = true;
        }
        QueueOutcome::used_if(used)
    }
}

/// A packet header's fields (virtio 1.2, 5.10.6: all little-endian): source and destination
/// CIDs, the type, and what the muxer needs.
fn parse_header(raw: &[u8; PKT_HEADER_SIZE]) -> (u64, u64, u16, Header) {
    let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().expect("4 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(raw[o..o + 2].try_into().expect("2 bytes"));
    (
        u64_at(0),
        u64_at(8),
        u16_at(28),
        Header {
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        },
    )
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_id::VSOCK
    }

    fn name(&self) -> &'static str {
        "vsock"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256, 16]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // guest_cid, le64.
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, memory: GuestMemoryMmap, queues: Vec<Queue>, _features: u64) {
        self.memory = Some(memory);
        self.queues = queues;
    }

    fn process_queue(&mut self, index: usize) -> QueueOutcome {
        let outcome = match index {
            TX => self.transmit(),
            RX | EVENT => QueueOutcome::Idle,
            _ => return QueueOutcome::Idle,
        };
        if outcome == QueueOutcome::Broken {
            return outcome;
        }
        // Whatever the guest sent may owe it an answer; new buffers may take waiting data.
        match (outcome, self.receive()) {
            (_, QueueOutcome::Broken) => QueueOutcome::Broken,
            (QueueOutcome::Yielded, _) => QueueOutcome::Yielded,
            (a, b) => QueueOutcome::used_if(a == QueueOutcome::Used || b == QueueOutcome::Used),
        }
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.muxer.epoll_fd())
    }

    fn process_event(&mut self) -> QueueOutcome {
        self.muxer.process_events();
        self.receive()
    }

    fn restored(&mut self) -> QueueOutcome {
        let (Some(memory), Some(queue)) = (self.memory.as_ref(), self.queues.get_mut(EVENT)) else {
            return QueueOutcome::Idle;
        };
        // struct virtio_vsock_event { le32 id; }: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET is 0.
        let Some(chain) = queue.pop_descriptor_chain(memory) else {
            log::warn!("virtio-vsock: no event buffer to tell the guest its connections are gone");
            return QueueOutcome::Idle;
        };
        let head = chain.head_index();
        let written = match chain.writer(memory) {
            Ok(mut w) if w.available_bytes() >= 4 => {
                std::io::Write::write_all(&mut w, &0u32.to_le_bytes()).map_or(0, |_| 4)
            }
            _ => 0,
        };
        if queue.add_used(memory, head, written).is_err() {
            return QueueOutcome::Broken;
        }
        QueueOutcome::Used
    }

    fn reset(&mut self) {
        self.memory = None;
        self.queues.clear();
        self.muxer.reset();
    }

    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)> {
        self.queues.iter().map(|q| q.state()).enumerate().collect()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.muxer.stats();
        vec![
            ("rx_bytes", s.rx_bytes),
            ("tx_bytes", s.tx_bytes),
            ("connections", s.connections),
            ("resets", s.resets),
            ("malformed_packets", self.malformed),
        ]
    }
}

/// A fresh directory for a test's sockets, removed when dropped.
#[cfg(test)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rvvmm-vsock-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("a test directory");
        TestDir(p)
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::muxer::op;
    use super::*;
    use crate::devices::virtio::testing::*;
    use std::io::Write;
    use vm_memory::GuestAddress;

    fn header(src_cid: u64, dst_cid: u64, dst_port: u32, len: u32, op: u16) -> [u8; 44] {
        let mut h = [0u8; 44];
        h[0..8].copy_from_slice(&src_cid.to_le_bytes());
        h[8..16].copy_from_slice(&dst_cid.to_le_bytes());
        h[16..20].copy_from_slice(&1234u32.to_le_bytes());
        h[20..24].copy_from_slice(&dst_port.to_le_bytes());
        h[24..28].copy_from_slice(&len.to_le_bytes());
        h[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
        h[30..32].copy_from_slice(&op.to_le_bytes());
        h[36..40].copy_from_slice(&4096u32.to_le_bytes());
        h
    }

    /// A device on a new socket in `dir`, and the socket (its file goes when it drops).
    fn device(dir: &Path) -> (Vsock, VsockListener) {
        let socket = VsockListener::bind(&dir.join("v.sock")).unwrap();
        (Vsock::new(3, &socket).unwrap(), socket)
    }

    #[test]
    fn hostile_headers_are_dropped_and_counted() {
        let dir = TestDir::new();
        let (mut dev, _socket) = device(&dir.0);
        let mem = memory();
        dev.activate(mem.clone(), vec![queue(), queue(), queue()], 0);
        // A header that claims 1 GiB of data, one from another CID, one to a CID that is not
        // the host's, a chain too short for a header.
        let packets = [
            header(3, 2, 5, 1 << 30, op::RW),
            header(7, 2, 5, 0, op::REQUEST),
            header(3, 9, 5, 0, op::REQUEST),
        ];
        for (i, p) in packets.iter().enumerate() {
            mem.write_slice(p, GuestAddress(DATA + 64 * i as u64))
                .unwrap();
        }
        publish(
            &mem,
            &[
                (DATA, 44, 0, 0),
                (DATA + 64, 44, 0, 0),
                (DATA + 128, 44, 0, 0),
                (DATA + 192, 8, 0, 0),
            ],
            &[0, 1, 2, 3],
        );
        assert_eq!(dev.process_queue(TX), QueueOutcome::Used);
        assert_eq!(used(&mem).0, 4, "every chain is returned");
        assert_eq!(dev.malformed, 4);
        assert_eq!(dev.muxer.connection_count(), 0);
    }

    /// Linux sends a packet's data in more than one descriptor: it arrives whole.
    #[test]
    fn data_split_over_descriptors_reaches_the_host_in_order() {
        let dir = TestDir::new();
        let (mut dev, socket) = device(&dir.0);
        let mut target = socket.path().as_os_str().to_owned();
        target.push("_6000");
        let host = std::os::unix::net::UnixListener::bind(&target).unwrap();
        let mem = memory();
        // The test rings share their addresses: only the transmit queue is ready here.
        let idle = || Queue::new(SIZE).unwrap();
        dev.activate(mem.clone(), vec![idle(), queue(), idle()], 0);
        mem.write_slice(&header(3, 2, 6000, 0, op::REQUEST), GuestAddress(DATA))
            .unwrap();
        mem.write_slice(&header(3, 2, 6000, 5, op::RW), GuestAddress(DATA + 64))
            .unwrap();
        mem.write_slice(b"hel", GuestAddress(DATA + 128)).unwrap();
        mem.write_slice(b"lo", GuestAddress(DATA + 192)).unwrap();
        publish(
            &mem,
            &[
                (DATA, 44, 0, 0),
                (DATA + 64, 44, F_NEXT, 2),
                (DATA + 128, 3, F_NEXT, 3),
                (DATA + 192, 2, 0, 0),
            ],
            &[0, 1],
        );
        dev.process_queue(TX);
        assert_eq!(dev.malformed, 0);
        let (mut accepted, _) = host.accept().unwrap();
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut accepted, &mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    /// A socket file left by a killed rvvmm is taken over; a live one is not.
    #[test]
    fn a_stale_socket_is_taken_over_and_a_live_one_is_not() {
        let dir = TestDir::new();
        let path = dir.0.join("v.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "std leaves the file behind");
        let listener = VsockListener::bind(&path).unwrap();
        assert!(matches!(
            VsockListener::bind(&path),
            Err(VsockError::InUse(_))
        ));
        drop(listener);
        assert!(!path.exists(), "removed with the VM");
    }

    /// After a restore the guest hears of the transport reset on its event queue.
    #[test]
    fn a_restore_tells_the_guest_its_connections_are_gone() {
        let dir = TestDir::new();
        let (mut dev, _socket) = device(&dir.0);
        let mem = memory();
        let idle = || Queue::new(SIZE).unwrap();
        mem.write_slice(&[0xff; 4], GuestAddress(DATA)).unwrap();
        publish(&mem, &[(DATA, 4, F_WRITE, 0)], &[0]);
        dev.activate(mem.clone(), vec![idle(), idle(), queue()], 0);
        assert_eq!(dev.restored(), QueueOutcome::Used);
        assert_eq!(used(&mem).1, vec![(0, 4)]);
        let mut id = [0xffu8; 4];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(
            u32::from_le_bytes(id),
            0,
            "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET"
        );
    }

    #[test]
    fn a_host_connect_becomes_a_request_in_the_guests_buffer() {
        let dir = TestDir::new();
        let (mut dev, socket) = device(&dir.0);
        let mem = memory();
        dev.activate(mem.clone(), vec![queue(), queue(), queue()], 0);
        publish(&mem, &[(DATA, 44 + 4096, F_WRITE, 0)], &[0]);
        let mut host = std::os::unix::net::UnixStream::connect(socket.path()).unwrap();
        host.write_all(b"CONNECT 52\n").unwrap();
        let mut outcome = QueueOutcome::Idle;
        for _ in 0..100 {
            outcome = dev.process_event();
            if outcome != QueueOutcome::Idle {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(outcome, QueueOutcome::Used);
        assert_eq!(used(&mem).1, vec![(0, 44)]);
        let mut h = [0u8; 44];
        mem.read_slice(&mut h, GuestAddress(DATA)).unwrap();
        assert_eq!(u64::from_le_bytes(h[0..8].try_into().unwrap()), HOST_CID);
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(h[20..24].try_into().unwrap()), 52);
        assert_eq!(
            u16::from_le_bytes(h[30..32].try_into().unwrap()),
            op::REQUEST
        );
    }
}
