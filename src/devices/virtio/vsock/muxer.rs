//! The host side of virtio-vsock, "hybrid" as Firecracker's and Cloud Hypervisor's: guest
//! streams end in Unix sockets.
//!
//! - Host-initiated: a process connects to the listening socket `PATH`, writes
//!   `CONNECT <port>\n`, and once the guest's listener on `port` accepted, reads
//!   `OK <host_port>\n`; the rest is the stream.
//! - Guest-initiated: a guest connect to (CID 2, port P) connects to the Unix socket `PATH_P`.
//!
//! Flow control is the spec's credit: each side says how much buffer it has for the stream
//! (`buf_alloc`) and how much of it it has consumed (`fwd_cnt`); nobody sends more than the
//! other has room for. What the guest sends and the host socket does not take at once waits
//! here, at most [`BUF_ALLOC`] bytes a connection (what rvvmm advertises); a guest that sends
//! past its credit loses the connection (RST). Host data is read only when the guest has
//! credit and a receive buffer for it, so nothing is buffered that way. Connections, pending
//! `CONNECT` lines and control packets are bounded too.
//!
//! Written by hand: rust-vmm's virtio-vsock crate gives the packet format (used by the
//! device, `super`), not a backend; Firecracker's muxer is not a crate.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type offered.
pub const TYPE_STREAM: u16 = 1;

/// Operations (virtio 1.2, 5.10.6).
pub mod op {
    /// Connect.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or torn down.
    pub const RST: u16 = 3;
    /// No more sending and/or receiving.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Here is my credit.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Tell me your credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `SHUTDOWN` flags: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `SHUTDOWN` flags: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// Buffer rvvmm advertises for each connection: what the guest may have in flight to it.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Most connections at once (more: RST for a guest's request, close for a host's).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host connections that have not yet sent their `CONNECT` line.
const MAX_HANDSHAKES: usize = 64;
/// Longest `CONNECT <port>\n` line.
const MAX_LINE: usize = 32;
/// Host-side ports of host-initiated connections come from here up (below: what the guest
/// may connect to on the host, by convention).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// A packet header's fields that matter between the device and the muxer (CIDs and type are
/// the device's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The sender's port.
    pub src_port: u32,
    /// The receiver's port.
    pub dst_port: u32,
    /// The operation.
    pub op: u16,
    /// Shutdown flags.
    pub flags: u32,
    /// The sender's buffer for the stream.
    pub buf_alloc: u32,
    /// What the sender consumed of the stream so far.
    pub fwd_cnt: u32,
    /// Bytes of data after the header.
    pub len: u32,
}

/// A connection's key: (host-side port, guest-side port).
type Key = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: REQUEST sent, waiting for the guest's RESPONSE (or RST).
    Connecting,
    /// Data flows.
    Established,
}

struct Connection {
    stream: UnixStream,
    state: State,
    /// The guest's buffer and what it consumed of it (from its last packet).
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// Bytes of the guest's written to the host socket, and the count last told to the guest.
    fwd_cnt: Wrapping<u32>,
    fwd_cnt_told: Wrapping<u32>,
    /// The guest's bytes the host socket has not taken yet (at most [`BUF_ALLOC`]).
    pending: Vec<u8>,
    /// The host socket may have data or EOF to read.
    readable: bool,
    /// The guest sends no more: shut the host socket's write side once `pending` is out.
    guest_done_sending: bool,
    /// The guest receives no more: do not read from the host socket.
    guest_done_receiving: bool,
    /// The host socket said EOF (and the guest was told).
    host_done_sending: bool,
}

impl Connection {
    fn new(stream: UnixStream, state: State) -> Self {
        Connection {
            stream,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_told: Wrapping(0),
            pending: Vec::new(),
            readable: false,
            guest_done_sending: false,
            guest_done_receiving: false,
            host_done_sending: false,
        }
    }

    /// Bytes the guest has room for.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether host data can go to the guest now.
    fn can_send_to_guest(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.guest_done_receiving
            && !self.host_done_sending
            && self.peer_credit() > 0
    }

    /// Writes what is pending to the host socket; Err: the socket is gone.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.guest_done_sending {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }
}

/// What an fd the muxer watches is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    Listener,
    /// A host connection that has not sent its `CONNECT` line yet.
    Handshake,
    Connection(Key),
}

/// Counters for `vm.counters`.
#[derive(Debug, Default, Clone, Copy)]
pub struct VsockStats {
    /// Bytes from the host to the guest.
    pub rx_bytes: u64,
    /// Bytes from the guest to the host.
    pub tx_bytes: u64,
    /// Connections made (either way).
    pub connections: u64,
    /// Connections refused or reset.
    pub resets: u64,
}

/// The host side of the device: every connection, and the packets owed to the guest.
pub struct Muxer {
    listener: UnixListener,
    /// `PATH`: guest-initiated connections go to `PATH_<port>`.
    path: PathBuf,
    epoll: Epoll,
    watched: HashMap<RawFd, Watched>,
    handshakes: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    connections: HashMap<Key, Connection>,
    /// Control packets owed to the guest, in order (bounded by the connections: each owes a
    /// few at most).
    control: VecDeque<Header>,
    /// Connections that may have data for the guest, in turn.
    ready: VecDeque<Key>,
    next_local_port: u32,
    stats: VsockStats,
}

impl Muxer {
    /// A muxer on `listener` (bound at `path`, non-blocking).
    pub fn new(listener: UnixListener, path: &Path) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut muxer = Muxer {
            listener,
            path: path.to_path_buf(),
            epoll: Epoll::new()?,
            watched: HashMap::new(),
            handshakes: HashMap::new(),
            connections: HashMap::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            stats: VsockStats::default(),
        };
        let fd = muxer.listener.as_raw_fd();
        muxer.watch(fd, Watched::Listener)?;
        Ok(muxer)
    }

    /// The fd that is readable when a watched socket is ready (the event loop watches it).
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The counters.
    pub fn stats(&self) -> VsockStats {
        self.stats
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    fn watch(&mut self, fd: RawFd, what: Watched) -> std::io::Result<()> {
        // Edge-triggered: a socket that waits for guest credit or buffers does not wake the
        // loop again and again; `readable` remembers it has data.
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events, fd as u64),
        )?;
        self.watched.insert(fd, what);
        Ok(())
    }

    fn unwatch(&mut self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.watched.remove(&fd);
    }

    /// Drops every connection (the driver reset the device): host sockets are closed.
    pub fn reset(&mut self) {
        let fds: Vec<RawFd> = self
            .watched
            .iter()
            .filter(|(_, w)| **w != Watched::Listener)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in fds {
            self.unwatch(fd);
        }
        self.handshakes.clear();
        self.connections.clear();
        self.control.clear();
        self.ready.clear();
    }

    /// Handles what the watched sockets say (without blocking): new host connections, their
    /// `CONNECT` lines, host data and EOF, room to write what waits.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("virtio-vsock: epoll: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.data() as RawFd;
                match self.watched.get(&fd).copied() {
                    Some(Watched::Listener) => self.accept(),
                    Some(Watched::Handshake) => self.read_connect_line(fd),
                    Some(Watched::Connection(key)) => self.connection_event(key, ev.event_set()),
                    None => {}
                }
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("virtio-vsock: accept on {}: {e}", self.path.display());
                    return;
                }
            };
            if self.handshakes.len() >= MAX_HANDSHAKES || self.connections.len() >= MAX_CONNECTIONS
            {
                log::warn!("virtio-vsock: too many connections; a host connection is refused");
                continue;
            }
            let fd = stream.as_raw_fd();
            if stream.set_nonblocking(true).is_err() || self.watch(fd, Watched::Handshake).is_err()
            {
                continue;
            }
            self.handshakes.insert(fd, (stream, Vec::new()));
            // Edge-triggered: what arrived with the connection is read now.
            self.read_connect_line(fd);
        }
    }

    /// Reads a host connection's `CONNECT <port>\n`; once whole, asks the guest to accept.
    fn read_connect_line(&mut self, fd: RawFd) {
        let Some((stream, line)) = self.handshakes.get_mut(&fd) else {
            return;
        };
        // A byte at a time: what follows the line is the stream's, for the guest.
        let mut byte = [0u8; 1];
        let complete = loop {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break true,
                Ok(1) if line.len() < MAX_LINE => line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EOF, an error, or a line too long: drop the connection.
                _ => break false,
            }
        };
        let (stream, line) = self.handshakes.remove(&fd).expect("looked up above");
        self.unwatch(fd);
        let port = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(port) = port.filter(|_| complete) else {
            log::warn!(
                "virtio-vsock: a host connection on {} did not start with 'CONNECT <port>'; closed",
                self.path.display()
            );
            return;
        };
        let local = self.allocate_local_port(port);
        let key = (local, port);
        if self.watch(fd, Watched::Connection(key)).is_err() {
            return;
        }
        self.connections
            .insert(key, Connection::new(stream, State::Connecting));
        self.push_control(key, op::REQUEST, 0);
    }

    fn allocate_local_port(&mut self, peer: u32) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.connections.contains_key(&(port, peer)) {
                return port;
            }
        }
    }

    fn connection_event(&mut self, key: Key, events: EventSet) {
        let Some(conn) = self.connections.get_mut(&key) else {
            return;
        };
        if events.intersects(EventSet::OUT) && conn.flush().is_err() {
            return self.host_gone(key);
        }
        if self.finish_if_closed(key) {
            return;
        }
        self.maybe_credit_update(key);
        if events
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            if let Some(conn) = self.connections.get_mut(&key) {
                conn.readable = true;
                if !self.ready.contains(&key) {
                    self.ready.push_back(key);
                }
            }
        }
    }

    /// Ends a connection the guest closed both ways once nothing of the guest's waits for
    /// the host socket: closes it and sends the guest its RST. Whether it ended.
    fn finish_if_closed(&mut self, key: Key) -> bool {
        let Some(conn) = self.connections.get(&key) else {
            return false;
        };
        if !(conn.guest_done_sending && conn.guest_done_receiving && conn.pending.is_empty()) {
            return false;
        }
        self.close(key);
        self.push_control(key, op::RST, 0);
        true
    }

    /// The host socket failed: say so, reset the stream.
    fn host_gone(&mut self, key: Key) {
        if self.connections.contains_key(&key) {
            crate::guest_warn!(
                "virtio-vsock: the host end of a connection (guest port {}, host port {}) failed; the guest's stream is reset",
                key.1,
                key.0
            );
        }
        self.reset_connection(key);
    }

    /// Closes the connection and tells the guest (RST).
    fn reset_connection(&mut self, key: Key) {
        self.close(key);
        self.push_control(key, op::RST, 0);
    }

    fn close(&mut self, key: Key) {
        if let Some(conn) = self.connections.remove(&key) {
            let fd = conn.stream.as_raw_fd();
            self.unwatch(fd);
            self.ready.retain(|k| *k != key);
        }
    }

    /// Queues a control packet for connection `key`.
    fn push_control(&mut self, key: Key, op: u16, flags: u32) {
        if op == op::RST {
            self.stats.resets += 1;
        }
        // Each connection owes a handful of control packets at most, and a reset one none
        // after its RST; the bound only guards against a guest that makes RSTs for ports
        // that never existed faster than it takes them.
        if self.control.len() >= 4 * MAX_CONNECTIONS {
            return;
        }
        self.control.push_back(Header {
            src_port: key.0,
            dst_port: key.1,
            op,
            flags,
            ..Header::default()
        });
    }

    /// Tells the guest how much it may send, when it has used half of what it was told.
    fn maybe_credit_update(&mut self, key: Key) {
        let Some(conn) = self.connections.get(&key) else {
            return;
        };
        if conn.state == State::Established
            && (conn.fwd_cnt - conn.fwd_cnt_told).0 >= BUF_ALLOC / 2
            && !self
                .control
                .iter()
                .any(|h| (h.src_port, h.dst_port) == key && h.op == op::CREDIT_UPDATE)
        {
            self.push_control(key, op::CREDIT_UPDATE, 0);
        }
    }

    /// A packet from the guest (its header, and its data for RW), sent from `src_port` to the
    /// host's `dst_port`.
    pub fn from_guest(&mut self, hdr: &Header, data: &[u8]) {
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.op == op::REQUEST {
            return self.guest_connects(key, hdr);
        }
        let Some(conn) = self.connections.get_mut(&key) else {
            // Nothing to reset for an RST; anything else on no connection gets one.
            if hdr.op != op::RST {
                self.push_control(key, op::RST, 0);
            }
            return;
        };
        conn.peer_buf_alloc = hdr.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        match (hdr.op, conn.state) {
            (op::RESPONSE, State::Connecting) => {
                conn.state = State::Established;
                let ok = format!("OK {}\n", key.0);
                if conn.stream.write_all(ok.as_bytes()).is_err() {
                    return self.host_gone(key);
                }
                self.stats.connections += 1;
                // What the host sent behind its CONNECT line may be waiting.
                conn.readable = true;
                self.ready.push_back(key);
            }
            (op::RST, _) => self.close(key),
            (op::RW, State::Established) => {
                if conn.guest_done_sending || conn.pending.len() + data.len() > BUF_ALLOC as usize {
                    crate::guest_warn!(
                        "virtio-vsock: the guest sent past its credit on port {}; connection reset",
                        key.0
                    );
                    return self.reset_connection(key);
                }
                self.stats.tx_bytes += data.len() as u64;
                conn.pending.extend_from_slice(data);
                if conn.flush().is_err() {
                    return self.host_gone(key);
                }
                self.maybe_credit_update(key);
            }
            (op::SHUTDOWN, State::Established) => {
                conn.guest_done_sending |= hdr.flags & SHUTDOWN_SEND != 0;
                conn.guest_done_receiving |= hdr.flags & SHUTDOWN_RCV != 0;
                if conn.flush().is_err() {
                    return self.host_gone(key);
                }
                // The guest closed: once what it sent is all in the host socket (now, or as
                // the socket takes it: `connection_event`), reset, which is the answer the
                // guest waits for. Closing at once would drop what the socket had no room
                // for yet (the end of a stream, seen as a short echo in the bench).
                self.finish_if_closed(key);
            }
            (op::CREDIT_UPDATE, State::Established) => {
                // The new credit was taken above; host data may go again.
                if conn.can_send_to_guest() && !self.ready.contains(&key) {
                    self.ready.push_back(key);
                }
            }
            (op::CREDIT_REQUEST, State::Established) => {
                self.push_control(key, op::CREDIT_UPDATE, 0);
            }
            _ => {
                crate::guest_warn!(
                    "virtio-vsock: unexpected operation {} on port {}; connection reset",
                    hdr.op,
                    key.0
                );
                self.reset_connection(key);
            }
        }
    }

    /// A guest connects to host port `key.0`: to the Unix socket `PATH_<port>`.
    fn guest_connects(&mut self, key: Key, hdr: &Header) {
        if self.connections.contains_key(&key) || self.connections.len() >= MAX_CONNECTIONS {
            return self.push_control(key, op::RST, 0);
        }
        let mut target = self.path.clone().into_os_string();
        target.push(format!("_{}", key.0));
        let stream = match connect_nonblocking(Path::new(&target)) {
            Ok(s) => s,
            Err(e) => {
                log::debug!(
                    "virtio-vsock: guest connect to port {}: {}: {e}",
                    key.0,
                    Path::new(&target).display()
                );
                return self.push_control(key, op::RST, 0);
            }
        };
        let fd = stream.as_raw_fd();
        if self.watch(fd, Watched::Connection(key)).is_err() {
            return self.push_control(key, op::RST, 0);
        }
        let mut conn = Connection::new(stream, State::Established);
        conn.peer_buf_alloc = hdr.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        self.connections.insert(key, conn);
        self.stats.connections += 1;
        self.push_control(key, op::RESPONSE, 0);
    }

    /// Whether a packet waits for the guest.
    pub fn has_packet_for_guest(&self) -> bool {
        !self.control.is_empty()
            || self.ready.iter().any(|k| {
                self.connections
                    .get(k)
                    .is_some_and(|c| c.can_send_to_guest())
            })
    }

    /// The next packet for the guest, its data (for RW) read into `data` (whose length is the
    /// room in the guest's buffer): control packets first, then host data, a connection at
    /// a time in turn. Every header carries the connection's credit.
    pub fn to_guest(&mut self, data: &mut [u8]) -> Option<Header> {
        while let Some(mut hdr) = self.control.pop_front() {
            let key = (hdr.src_port, hdr.dst_port);
            if let Some(conn) = self.connections.get_mut(&key) {
                hdr.buf_alloc = BUF_ALLOC;
                hdr.fwd_cnt = conn.fwd_cnt.0;
                conn.fwd_cnt_told = conn.fwd_cnt;
            } else if hdr.op != op::RST {
                // The connection went away since: its packets go with it.
                continue;
            }
            return Some(hdr);
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(conn) = self.connections.get_mut(&key) else {
                continue;
            };
            if !conn.can_send_to_guest() {
                // Back in turn when its credit or a buffer comes (CREDIT_UPDATE, process_events).
                continue;
            }
            let room = data.len().min(conn.peer_credit() as usize);
            if room == 0 {
                self.ready.push_front(key);
                return None;
            }
            match conn.stream.read(&mut data[..room]) {
                Ok(0) => {
                    conn.host_done_sending = true;
                    let fwd = conn.fwd_cnt;
                    conn.fwd_cnt_told = fwd;
                    return Some(Header {
                        src_port: key.0,
                        dst_port: key.1,
                        op: op::SHUTDOWN,
                        flags: SHUTDOWN_SEND,
                        buf_alloc: BUF_ALLOC,
                        fwd_cnt: fwd.0,
                        len: 0,
                    });
                }
                Ok(n) => {
                    conn.rx_cnt += Wrapping(n as u32);
                    conn.fwd_cnt_told = conn.fwd_cnt;
                    self.stats.rx_bytes += n as u64;
                    let hdr = Header {
                        src_port: key.0,
                        dst_port: key.1,
                        op: op::RW,
                        flags: 0,
                        buf_alloc: BUF_ALLOC,
                        fwd_cnt: conn.fwd_cnt.0,
                        len: n as u32,
                    };
                    // Maybe more: its turn again after the others'.
                    self.ready.push_back(key);
                    return Some(hdr);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => conn.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => self.ready.push_front(key),
                Err(_) => {
                    // The host end failed (a peer that went away with data unread gives
                    // ECONNRESET): the RST it queues goes first.
                    self.host_gone(key);
                    return self.to_guest(data);
                }
            }
        }
        None
    }
}

/// Connects to the Unix socket at `path` without blocking (a full backlog is a refusal, as
/// a guest's connect to a busy host listener should not hold the device thread).
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is valid; sun_family and a NUL-terminated path are set.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un and its size is given.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::time::Duration;

    struct Fixture {
        _dir: super::super::TestDir,
        path: PathBuf,
        muxer: Muxer,
    }

    fn fixture() -> Fixture {
        let dir = super::super::TestDir::new();
        let path = dir.0.join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let muxer = Muxer::new(listener, &path).unwrap();
        Fixture {
            _dir: dir,
            path,
            muxer,
        }
    }

    fn guest(op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_port,
            dst_port,
            op,
            buf_alloc: 64 * 1024,
            ..Header::default()
        }
    }

    /// Runs the muxer's events for 100 ms.
    fn settle(m: &mut Muxer) {
        for _ in 0..20 {
            m.process_events();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A host connection to guest port 5000, accepted by the guest: (host stream, host port).
    fn host_connects(f: &mut Fixture) -> (UnixStream, u32) {
        let mut host = UnixStream::connect(&f.path).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        host.write_all(b"CONNECT 5000\n").unwrap();
        settle(&mut f.muxer);
        let mut buf = [0u8; 64];
        let req = f.muxer.to_guest(&mut buf).expect("a REQUEST for the guest");
        assert_eq!((req.op, req.dst_port), (op::REQUEST, 5000));
        assert!(req.src_port >= FIRST_LOCAL_PORT);
        f.muxer
            .from_guest(&guest(op::RESPONSE, 5000, req.src_port), &[]);
        let mut line = String::new();
        std::io::BufReader::new(&host).read_line(&mut line).unwrap();
        assert_eq!(line, format!("OK {}\n", req.src_port));
        (host, req.src_port)
    }

    #[test]
    fn a_host_connection_reaches_the_guest_and_data_flows_both_ways() {
        let mut f = fixture();
        let (mut host, port) = host_connects(&mut f);
        host.write_all(b"hello").unwrap();
        settle(&mut f.muxer);
        let mut buf = [0u8; 64];
        let rw = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!(
            (rw.op, rw.len, rw.src_port, rw.dst_port),
            (op::RW, 5, port, 5000)
        );
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(rw.buf_alloc, BUF_ALLOC);
        let mut rw = guest(op::RW, 5000, port);
        rw.len = 5;
        f.muxer.from_guest(&rw, b"world");
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        assert_eq!(f.muxer.stats().connections, 1);
    }

    #[test]
    fn host_data_never_exceeds_the_guests_credit() {
        let mut f = fixture();
        let (mut host, port) = host_connects(&mut f);
        // The guest has 4 bytes of buffer.
        let mut small = guest(op::CREDIT_UPDATE, 5000, port);
        small.buf_alloc = 4;
        f.muxer.from_guest(&small, &[]);
        host.write_all(b"0123456789").unwrap();
        settle(&mut f.muxer);
        let mut buf = [0u8; 64];
        let rw = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!((rw.op, rw.len), (op::RW, 4));
        assert!(f.muxer.to_guest(&mut buf).is_none(), "no credit left");
        assert!(!f.muxer.has_packet_for_guest());
        // The guest consumed the 4 bytes.
        small.fwd_cnt = 4;
        f.muxer.from_guest(&small, &[]);
        assert!(f.muxer.has_packet_for_guest());
        let rw = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!((rw.op, rw.len, &buf[..4]), (op::RW, 4, &b"4567"[..]));
    }

    #[test]
    fn a_guest_that_sends_past_its_credit_is_reset() {
        let mut f = fixture();
        let (_host, port) = host_connects(&mut f);
        // Nobody reads the host end: the socket fills, then rvvmm's buffer, then the guest
        // is over its credit.
        let chunk = vec![7u8; 64 * 1024];
        let mut rw = guest(op::RW, 5000, port);
        rw.len = chunk.len() as u32;
        for _ in 0..64 {
            f.muxer.from_guest(&rw, &chunk);
            if f.muxer.connection_count() == 0 {
                break;
            }
        }
        assert_eq!(f.muxer.connection_count(), 0);
        let mut buf = [0u8; 64];
        let mut last = None;
        while let Some(h) = f.muxer.to_guest(&mut buf) {
            last = Some(h.op);
        }
        assert_eq!(last, Some(op::RST));
        assert!(f.muxer.stats().tx_bytes <= 2 * 1024 * 1024 + u64::from(BUF_ALLOC));
    }

    #[test]
    fn a_guest_connection_reaches_a_host_listener_or_is_reset() {
        let mut f = fixture();
        let mut target = f.path.clone().into_os_string();
        target.push("_6000");
        let host = UnixListener::bind(&target).unwrap();
        f.muxer.from_guest(&guest(op::REQUEST, 40000, 6000), &[]);
        let mut buf = [0u8; 64];
        let resp = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!(
            (resp.op, resp.src_port, resp.dst_port),
            (op::RESPONSE, 6000, 40000)
        );
        let (mut accepted, _) = host.accept().unwrap();
        let mut rw = guest(op::RW, 40000, 6000);
        rw.len = 3;
        f.muxer.from_guest(&rw, b"hi\n");
        let mut got = [0u8; 3];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi\n");
        // Nobody listens on 6001.
        f.muxer.from_guest(&guest(op::REQUEST, 40001, 6001), &[]);
        let rst = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!((rst.op, rst.dst_port), (op::RST, 40001));
    }

    #[test]
    fn shutdowns_close_both_ways() {
        let mut f = fixture();
        let (mut host, port) = host_connects(&mut f);
        // The host closes its writing side: the guest hears SHUTDOWN(send).
        host.shutdown(Shutdown::Write).unwrap();
        settle(&mut f.muxer);
        let mut buf = [0u8; 64];
        let sd = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!((sd.op, sd.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        // The guest closes: rvvmm resets, the host reads EOF.
        let mut close = guest(op::SHUTDOWN, 5000, port);
        close.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
        f.muxer.from_guest(&close, &[]);
        let rst = f.muxer.to_guest(&mut buf).unwrap();
        assert_eq!(rst.op, op::RST);
        assert_eq!(f.muxer.connection_count(), 0);
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    /// The guest closes while the host socket is full: what the guest sent still reaches the
    /// host, all of it, as the host reads; the RST comes after it.
    #[test]
    fn a_guest_close_delivers_what_the_host_socket_had_no_room_for() {
        let mut f = fixture();
        let (mut host, port) = host_connects(&mut f);
        let mut buf = [0u8; 64];
        while f.muxer.to_guest(&mut buf).is_some() {}
        // Fill the host socket (nobody reads it yet): up to the credit the guest has.
        let chunk = vec![0x42u8; 4096];
        let mut sent = 0usize;
        while sent + chunk.len() <= BUF_ALLOC as usize {
            let mut rw = guest(op::RW, 5000, port);
            rw.len = chunk.len() as u32;
            rw.buf_alloc = BUF_ALLOC;
            f.muxer.from_guest(&rw, &chunk);
            sent += chunk.len();
            assert_eq!(f.muxer.connection_count(), 1, "within its credit");
        }
        let mut close = guest(op::SHUTDOWN, 5000, port);
        close.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
        f.muxer.from_guest(&close, &[]);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            host.read_to_end(&mut all).map(|_| all.len())
        });
        let mut rst = None;
        for _ in 0..200 {
            f.muxer.process_events();
            if let Some(h) = f.muxer.to_guest(&mut buf) {
                if h.op == op::CREDIT_UPDATE {
                    continue;
                }
                rst = Some(h.op);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(rst, Some(op::RST), "the RST once all was delivered");
        assert_eq!(
            reader.join().unwrap().unwrap(),
            sent,
            "every byte the guest sent"
        );
        assert_eq!(f.muxer.connection_count(), 0);
    }

    #[test]
    fn strangers_get_resets_and_bad_handshakes_are_closed() {
        let mut f = fixture();
        let mut buf = [0u8; 64];
        // Data, a response or an unknown operation on no connection: RST; an RST: nothing.
        for op in [op::RW, op::RESPONSE, 99] {
            f.muxer.from_guest(&guest(op, 1, 2), &[]);
            assert_eq!(f.muxer.to_guest(&mut buf).unwrap().op, op::RST);
        }
        f.muxer.from_guest(&guest(op::RST, 1, 2), &[]);
        assert!(f.muxer.to_guest(&mut buf).is_none());
        // A host that does not say CONNECT, or says too much, is closed without a word.
        for line in [&b"HELLO 5000\n"[..], &[b'C'; 100][..], b"CONNECT x\n"] {
            let mut host = UnixStream::connect(&f.path).unwrap();
            host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            host.write_all(line).unwrap();
            settle(&mut f.muxer);
            // Closed: EOF, or a reset where rvvmm left bytes of the line unread.
            let mut rest = Vec::new();
            match host.read_to_end(&mut rest) {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
            }
            assert!(f.muxer.to_guest(&mut buf).is_none());
        }
    }
}
