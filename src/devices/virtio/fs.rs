//! virtio-fs (`--fs tag=T,socket=PATH`, virtio 1.2 section 5.11): a host directory served by a
//! vhost-user backend in another process (virtiofsd). rvvmm owns the transport and the
//! device's config space (the tag, one request queue); the backend gets guest RAM (the shared
//! memfd, by fd), each queue's addresses and a kick and a call eventfd per queue, through
//! rust-vmm's `vhost` frontend, and answers the FUSE requests itself.
//!
//! Kicks and interrupts pass through rvvmm's event loop: the guest's notify lands on the
//! transport's ioeventfd, which the loop relays to the queue's kick eventfd; the backend's call
//! eventfd wakes the loop, which sets virtio-mmio's interrupt status and raises the interrupt
//! (a call wired straight to an irqfd would leave the status register 0, and the guest's
//! handler would ignore it). One owner per fd also lets rvvmm take the queues back when the
//! backend dies: from then on it answers every request with EIO, so that the guest sees I/O
//! errors rather than waiting forever.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{device_id, drain_queue, QueueOutcome, VirtioDevice};

/// Bytes of the tag in the config space.
pub const MAX_TAG_LEN: usize = 36;
/// Entries of each queue unless `queue_size=` says otherwise (Cloud Hypervisor's default).
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// The high-priority queue and one request queue.
const NUM_QUEUES: usize = 2;
/// How long rvvmm waits for a backend's answer: a hung backend fails the step, never rvvmm.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// `VIRTIO_RING_F_INDIRECT_DESC`: the one ring feature passed through from the backend, as
/// rvvmm's own fallback (virtio-queue) reads indirect tables too.
const RING_INDIRECT_DESC: u64 = 1 << 28;
/// `struct fuse_out_header`: len (u32), error (i32), unique (u64).
const FUSE_OUT_HEADER_LEN: usize = 16;
/// `struct fuse_in_header`'s `unique` field, after len (u32) and opcode (u32).
const FUSE_IN_UNIQUE: usize = 8;

/// Epoll data of the call eventfd and of the socket's hangup.
const EV_CALL: u64 = 0;
const EV_HANGUP: u64 = 1;

/// Errors reaching a backend.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// Nothing answers on the socket.
    #[error("virtio-fs '{tag}': cannot connect to the backend's socket {}: {source} (start it first, e.g. virtiofsd --socket-path={} --shared-dir=DIR)", path.display(), path.display())]
    Connect {
        /// The device's tag.
        tag: String,
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The backend answered the handshake wrongly, or not at all.
    #[error("virtio-fs '{tag}': the backend at {} failed the vhost-user handshake ({step}): {source}", path.display())]
    Handshake {
        /// The device's tag.
        tag: String,
        /// The socket.
        path: PathBuf,
        /// The message that failed.
        step: &'static str,
        /// vhost's error.
        #[source]
        source: vhost::Error,
    },
}

/// The connection to one backend, made once for the VM: virtiofsd serves one frontend and exits
/// when it hangs up, so every boot of the VM (a guest reboot) goes on with this one.
pub struct FsBackend {
    tag: String,
    path: PathBuf,
    queue_size: u16,
    frontend: Frontend,
    /// A second fd of the socket, watched for the backend's hangup only (never read).
    watch: UnixStream,
    /// The backend's virtio features, without vhost-user's own bit.
    features: u64,
    /// Whether vhost-user's protocol features were negotiated (rings then start disabled).
    protocol: bool,
    /// Set when the backend hung up: every later boot's device answers EIO itself.
    dead: AtomicBool,
}

impl FsBackend {
    /// Connects to the backend on `path` and makes the handshake that needs no guest:
    /// SET_OWNER, GET_FEATURES, and the protocol features when the backend has them.
    pub fn connect(tag: &str, path: &Path, queue_size: u16) -> Result<Self, FsError> {
        let connect_err = |source| FsError::Connect {
            tag: tag.into(),
            path: path.into(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(connect_err)?;
        let watch = stream.try_clone().map_err(connect_err)?;
        let mut frontend = Frontend::from_stream(stream, NUM_QUEUES as u64);
        let step = |step: &'static str| {
            move |source| FsError::Handshake {
                tag: tag.into(),
                path: path.into(),
                step,
                source,
            }
        };
        frontend.set_owner().map_err(step("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(step("GET_FEATURES"))?;
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol = offered & protocol_bit != 0;
        if protocol {
            let theirs = frontend
                .get_protocol_features()
                .map_err(step("GET_PROTOCOL_FEATURES"))?;
            let ours = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
            frontend
                .set_protocol_features(theirs & ours)
                .map_err(step("SET_PROTOCOL_FEATURES"))?;
            if theirs.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every later message is acknowledged: a step the backend refuses fails there.
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        log::info!(
            "virtio-fs '{tag}': backend at {} offers features {offered:#x}",
            path.display()
        );
        Ok(FsBackend {
            tag: tag.into(),
            path: path.into(),
            queue_size,
            frontend,
            watch,
            features: offered & !protocol_bit,
            protocol,
            dead: AtomicBool::new(false),
        })
    }

    /// Marks the backend gone; says so the first time.
    fn hung_up(&self, why: &str) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            log::error!(
                "virtio-fs '{}': its backend at {} {why}; the guest's requests fail with EIO from now on",
                self.tag,
                self.path.display()
            );
        }
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// The device of one boot.
pub struct VirtioFs {
    backend: Arc<FsBackend>,
    sizes: [u16; NUM_QUEUES],
    config: Vec<u8>,
    /// One call eventfd for every queue: any of them means "look at the used rings".
    call: EventFd,
    kicks: Vec<EventFd>,
    /// The call eventfd and the socket's hangup, as one fd for the event loop.
    epoll: Epoll,
    memory: Option<GuestMemoryMmap>,
    queues: Vec<Queue>,
    /// Whether the backend runs the rings now.
    running: bool,
    relayed_kicks: u64,
    calls: u64,
    failed_requests: u64,
}

impl VirtioFs {
    /// A device on `backend`'s connection.
    pub fn new(backend: Arc<FsBackend>) -> std::io::Result<Self> {
        let mut config = vec![0u8; MAX_TAG_LEN + 4];
        let tag = backend.tag.as_bytes();
        config[..tag.len().min(MAX_TAG_LEN)].copy_from_slice(&tag[..tag.len().min(MAX_TAG_LEN)]);
        config[MAX_TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
        let call = EventFd::new(EFD_NONBLOCK)?;
        let kicks = (0..NUM_QUEUES)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            call.as_raw_fd(),
            EpollEvent::new(EventSet::IN, EV_CALL),
        )?;
        if !backend.is_dead() {
            epoll.ctl(
                ControlOperation::Add,
                backend.watch.as_raw_fd(),
                EpollEvent::new(EventSet::READ_HANG_UP, EV_HANGUP),
            )?;
        }
        Ok(VirtioFs {
            sizes: [backend.queue_size; NUM_QUEUES],
            backend,
            config,
            call,
            kicks,
            epoll,
            memory: None,
            queues: Vec::new(),
            running: false,
            relayed_kicks: 0,
            calls: 0,
            failed_requests: 0,
        })
    }

    /// Hands the rings to the backend: the driver's features, guest RAM, and each ready
    /// queue's size, addresses (rvvmm's own virtual ones, as vhost-user wants), position and
    /// eventfds.
    fn start_backend(&mut self, features: u64) -> Result<(), String> {
        let memory = self.memory.as_ref().ok_or("no guest memory")?;
        let mut frontend = self.backend.frontend.clone();
        let err = |step: &'static str| move |e: vhost::Error| format!("{step}: {e}");
        let mut acked = features & (self.backend.features | super::VIRTIO_F_VERSION_1);
        if self.backend.protocol {
            acked |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        frontend.set_features(acked).map_err(err("SET_FEATURES"))?;
        let regions = memory
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("guest RAM is not shared ({e}); this is rvvmm's bug"))?;
        frontend
            .set_mem_table(&regions)
            .map_err(err("SET_MEM_TABLE"))?;
        let host = |gpa: u64| {
            memory
                .get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|e| format!("a ring at {gpa:#x}: {e}"))
        };
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            frontend
                .set_vring_num(i, q.size())
                .map_err(err("SET_VRING_NUM"))?;
            let addrs = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: host(q.desc_table())?,
                used_ring_addr: host(q.used_ring())?,
                avail_ring_addr: host(q.avail_ring())?,
                log_addr: None,
            };
            frontend
                .set_vring_addr(i, &addrs)
                .map_err(err("SET_VRING_ADDR"))?;
            frontend
                .set_vring_base(i, q.next_avail())
                .map_err(err("SET_VRING_BASE"))?;
            frontend
                .set_vring_call(i, &self.call)
                .map_err(err("SET_VRING_CALL"))?;
            frontend
                .set_vring_kick(i, &self.kicks[i])
                .map_err(err("SET_VRING_KICK"))?;
            if self.backend.protocol {
                frontend
                    .set_vring_enable(i, true)
                    .map_err(err("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// Stops the backend's rings (GET_VRING_BASE stops a ring and says where it stopped).
    fn stop_backend(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let frontend = self.backend.frontend.clone();
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !self.backend.is_dead() {
                if let Err(e) = frontend.get_vring_base(i) {
                    self.backend
                        .hung_up(&format!("did not stop its queue {i} ({e})"));
                }
            }
        }
    }

    /// The backend is gone: rvvmm takes the queues back where the guest sees them (everything
    /// made available and not used is answered now: with virtiofsd's in-order queue, exactly
    /// what it took and never finished, and what it never took).
    fn take_over(&mut self) -> QueueOutcome {
        self.running = false;
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            self.backend.watch.as_raw_fd(),
            EpollEvent::default(),
        );
        let Some(memory) = self.memory.as_ref() else {
            return QueueOutcome::Idle;
        };
        for q in self.queues.iter_mut().filter(|q| q.ready()) {
            if let Ok(used) = q.used_idx(memory, std::sync::atomic::Ordering::Acquire) {
                q.set_next_avail(used.0);
                q.set_next_used(used.0);
            }
        }
        let mut outcome = QueueOutcome::Idle;
        for i in 0..self.queues.len() {
            outcome = merge(outcome, self.fail_requests(i));
        }
        outcome
    }

    /// Answers every request waiting on queue `index` with EIO (a request without room for a
    /// reply, as FORGET, is just returned).
    fn fail_requests(&mut self, index: usize) -> QueueOutcome {
        let (Some(queue), Some(memory)) = (self.queues.get_mut(index), self.memory.as_ref()) else {
            return QueueOutcome::Idle;
        };
        if !queue.ready() {
            return QueueOutcome::Idle;
        }
        let mut failed = 0u64;
        let outcome = drain_queue(queue, memory, |chain| {
            failed += 1;
            let mut unique = [0u8; 8];
            let mut skip = FUSE_IN_UNIQUE;
            for desc in chain.clone().readable() {
                let len = desc.len() as usize;
                if skip >= len {
                    skip -= len;
                    continue;
                }
                let n = (len - skip).min(8);
                let _ = memory.read_slice(&mut unique[..n], desc.addr().unchecked_add(skip as u64));
                break;
            }
            let Some(out) = chain.writable().next() else {
                return 0;
            };
            if (out.len() as usize) < FUSE_OUT_HEADER_LEN {
                return 0;
            }
            let mut header = [0u8; FUSE_OUT_HEADER_LEN];
            header[..4].copy_from_slice(&(FUSE_OUT_HEADER_LEN as u32).to_le_bytes());
            header[4..8].copy_from_slice(&(-libc::EIO).to_le_bytes());
            header[8..].copy_from_slice(&unique);
            match memory.write_slice(&header, out.addr()) {
                Ok(()) => FUSE_OUT_HEADER_LEN as u32,
                Err(_) => 0,
            }
        });
        self.failed_requests += failed;
        outcome
    }
}

impl Drop for VirtioFs {
    /// A boot's device ends (a guest reboot builds new ones): the backend must stop reading
    /// rings at this boot's addresses before the next kernel reuses that RAM.
    fn drop(&mut self) {
        self.stop_backend();
    }
}

/// The outcome of two passes: the worse of them, else whether either used buffers.
fn merge(a: QueueOutcome, b: QueueOutcome) -> QueueOutcome {
    use QueueOutcome::*;
    match (a, b) {
        (Broken, _) | (_, Broken) => Broken,
        (Yielded, _) | (_, Yielded) => Yielded,
        (Used, _) | (_, Used) => Used,
        _ => Idle,
    }
}

impl VirtioDevice for VirtioFs {
    fn device_type(&self) -> u32 {
        device_id::FS
    }

    fn name(&self) -> &'static str {
        "fs"
    }

    fn features(&self) -> u64 {
        self.backend.features & RING_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, memory: GuestMemoryMmap, queues: Vec<Queue>, features: u64) {
        self.memory = Some(memory);
        self.queues = queues;
        if self.backend.is_dead() {
            return;
        }
        match self.start_backend(features) {
            Ok(()) => self.running = true,
            Err(e) => self.backend.hung_up(&format!("refused the queues ({e})")),
        }
    }

    fn process_queue(&mut self, index: usize) -> QueueOutcome {
        if self.running && !self.backend.is_dead() {
            if let Some(kick) = self.kicks.get(index) {
                let _ = kick.write(1);
                self.relayed_kicks += 1;
            }
            return QueueOutcome::Idle;
        }
        if self.running {
            return self.take_over();
        }
        self.fail_requests(index)
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn process_event(&mut self) -> QueueOutcome {
        let mut events = [EpollEvent::default(); 2];
        let n = self.epoll.wait(0, &mut events).unwrap_or(0);
        let mut outcome = QueueOutcome::Idle;
        for event in &events[..n] {
            match event.data() {
                EV_CALL => {
                    if self.call.read().is_ok() {
                        self.calls += 1;
                        outcome = merge(outcome, QueueOutcome::Used);
                    }
                }
                _ => {
                    self.backend.hung_up("hung up");
                    if self.running {
                        outcome = merge(outcome, self.take_over());
                    }
                }
            }
        }
        outcome
    }

    fn reset(&mut self) {
        self.stop_backend();
        self.queues.clear();
        self.memory = None;
    }

    fn queue_states(&self) -> Vec<(usize, virtio_queue::QueueState)> {
        // The backend holds the rings' progress: a snapshot is refused before this is asked.
        Vec::new()
    }

    fn snapshot_refusal(&self) -> Option<String> {
        Some(format!(
            "virtio-fs '{}' keeps its state in its backend (virtiofsd), which rvvmm cannot save",
            self.backend.tag
        ))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("kicks_relayed", self.relayed_kicks),
            ("backend_calls", self.calls),
            ("requests_failed", self.failed_requests),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    use std::os::unix::net::UnixListener;
    use std::sync::Mutex;
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;

    const GET_FEATURES: u32 = 1;
    const SET_FEATURES: u32 = 2;
    const SET_OWNER: u32 = 3;
    const SET_MEM_TABLE: u32 = 5;
    const SET_VRING_NUM: u32 = 8;
    const SET_VRING_ADDR: u32 = 9;
    const SET_VRING_BASE: u32 = 10;
    const GET_VRING_BASE: u32 = 11;
    const SET_VRING_KICK: u32 = 12;
    const SET_VRING_CALL: u32 = 13;
    const GET_PROTOCOL_FEATURES: u32 = 15;
    const SET_PROTOCOL_FEATURES: u32 = 16;
    const SET_VRING_ENABLE: u32 = 18;
    const NEED_REPLY: u32 = 0x8;

    /// What the stub backend received: each message's code, its body, the fds with it.
    type Log = Arc<Mutex<Vec<(u32, Vec<u8>, Vec<OwnedFd>)>>>;

    /// A vhost-user backend in a thread that answers what a frontend asks (features with
    /// PROTOCOL_FEATURES, MQ and REPLY_ACK, acks when asked, ring bases) and records every
    /// message; it hangs up when `hang_up` is set and the next message arrives, or at once
    /// when the test drops the returned stream.
    fn stub(path: &Path) -> (Log, std::thread::JoinHandle<UnixStream>) {
        let listener = UnixListener::bind(path).unwrap();
        let log: Log = Arc::default();
        let record = log.clone();
        let handle = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            loop {
                // The header (and the message's fds) first, then the body: a frontend sends
                // messages without replies back to back, and they arrive as one stream.
                let mut buf = [0u8; 12];
                let Ok((n, file)) = sock.recv_with_fd(&mut buf) else {
                    break;
                };
                if n < 12 {
                    break;
                }
                let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
                let (code, flags, size) = (word(0), word(4), word(8) as usize);
                let mut body = vec![0u8; size];
                use std::io::Read;
                if (&sock).read_exact(&mut body).is_err() {
                    break;
                }
                let owned = file.into_iter().map(OwnedFd::from).collect();
                let reply = |payload: &[u8]| {
                    let mut out = Vec::new();
                    out.extend_from_slice(&code.to_le_bytes());
                    out.extend_from_slice(&(0x1u32 | 0x4).to_le_bytes());
                    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    out.extend_from_slice(payload);
                    use std::io::Write;
                    (&sock).write_all(&out).unwrap();
                };
                let stop_at = body
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
                record.lock().unwrap().push((code, body, owned));
                match code {
                    GET_FEATURES => reply(
                        &((1u64 << 32) | (1 << 30) | RING_INDIRECT_DESC | (1 << 29)).to_le_bytes(),
                    ),
                    GET_PROTOCOL_FEATURES => reply(&(1u64 | (1 << 3)).to_le_bytes()),
                    GET_VRING_BASE => {
                        let mut state = [0u8; 8];
                        state[..4].copy_from_slice(&stop_at.unwrap_or(0).to_le_bytes());
                        reply(&state)
                    }
                    _ if flags & NEED_REPLY != 0 => reply(&0u64.to_le_bytes()),
                    _ => {}
                }
            }
            sock
        });
        (log, handle)
    }

    fn codes(log: &Log) -> Vec<u32> {
        log.lock().unwrap().iter().map(|m| m.0).collect()
    }

    fn temp_socket(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rvvmm-fs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("vfs.sock")
    }

    fn queues() -> Vec<Queue> {
        let mut second = queue();
        // Queue 1 elsewhere in RAM, so that each ring's address can be told apart.
        second.set_desc_table_address(Some((DESC + 0x4000) as u32), Some(0));
        second.set_avail_ring_address(Some((AVAIL + 0x4000) as u32), Some(0));
        second.set_used_ring_address(Some((USED + 0x4000) as u32), Some(0));
        vec![queue(), second]
    }

    /// The frontend's message sequence against a recording backend: the handshake at connect,
    /// the rings handed over at DRIVER_OK with guest RAM by fd and rvvmm's own addresses, a
    /// kick relayed, a call turned into an interrupt, and the rings stopped at reset.
    #[test]
    fn the_frontend_hands_the_rings_over_and_takes_them_back() {
        let path = temp_socket("seq");
        let (log, stub) = stub(&path);
        let backend = Arc::new(FsBackend::connect("share", &path, 16).unwrap());
        assert_eq!(backend.features & RING_INDIRECT_DESC, RING_INDIRECT_DESC);
        assert!(backend.protocol);
        let mut dev = VirtioFs::new(backend.clone()).unwrap();
        assert_eq!(dev.device_type(), 26);
        assert_eq!(
            dev.features(),
            RING_INDIRECT_DESC,
            "EVENT_IDX is not passed through"
        );
        let mut tag = [0u8; 40];
        dev.read_config(0, &mut tag);
        assert_eq!(&tag[..6], b"share\0");
        assert_eq!(&tag[36..], &1u32.to_le_bytes(), "one request queue");

        let mem = crate::memory::guest_memory(4 << 20, false, true).unwrap();
        dev.activate(mem.clone(), queues(), (1 << 32) | RING_INDIRECT_DESC);
        assert!(dev.running);
        let mut want = vec![
            SET_OWNER,
            GET_FEATURES,
            GET_PROTOCOL_FEATURES,
            SET_PROTOCOL_FEATURES,
            SET_FEATURES,
            SET_MEM_TABLE,
        ];
        for _ in 0..2 {
            want.extend([
                SET_VRING_NUM,
                SET_VRING_ADDR,
                SET_VRING_BASE,
                SET_VRING_CALL,
                SET_VRING_KICK,
                SET_VRING_ENABLE,
            ]);
        }
        assert_eq!(codes(&log), want);
        {
            let log = log.lock().unwrap();
            let features = u64::from_le_bytes(log[4].1[..8].try_into().unwrap());
            assert_eq!(features, (1 << 32) | (1 << 30) | RING_INDIRECT_DESC);
            assert_eq!(log[5].2.len(), 1, "guest RAM goes by fd");
            // SET_VRING_ADDR of queue 1: index, flags, then desc, used, avail (rvvmm's VAs).
            let addr = &log[13].1;
            let host = mem.get_host_address(GuestAddress(DESC + 0x4000)).unwrap() as u64;
            assert_eq!(u32::from_le_bytes(addr[..4].try_into().unwrap()), 1);
            assert_eq!(u64::from_le_bytes(addr[8..16].try_into().unwrap()), host);
        }

        // A notify of queue 1 reaches the backend's kick eventfd for queue 1.
        assert_eq!(dev.process_queue(1), QueueOutcome::Idle);
        let kick = {
            let log = log.lock().unwrap();
            let fd = log[16].2[0].try_clone().unwrap();
            // SAFETY: a dup of the eventfd the stub received, owned here.
            unsafe { EventFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) }
        };
        assert_eq!(kick.read().unwrap(), 1);
        // The backend's call: the device says buffers were used.
        let call = {
            let log = log.lock().unwrap();
            let fd = log[15].2[0].try_clone().unwrap();
            // SAFETY: as above.
            unsafe { EventFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) }
        };
        call.write(1).unwrap();
        assert_eq!(dev.process_event(), QueueOutcome::Used);
        assert_eq!(dev.process_event(), QueueOutcome::Idle);

        dev.reset();
        let tail: Vec<u32> = codes(&log).into_iter().skip(want.len()).collect();
        assert_eq!(tail, vec![GET_VRING_BASE, GET_VRING_BASE]);
        drop(dev);
        assert_eq!(
            codes(&log).len(),
            want.len() + 2,
            "a reset device sends no more"
        );
        drop(backend);
        drop(stub.join().unwrap());
    }

    /// A backend that dies: the device notices the hangup, says so, and answers the request
    /// the backend took and never finished with a FUSE reply carrying EIO, as it does every
    /// later request, and a later boot's device on the same connection too.
    #[test]
    fn a_dead_backend_makes_requests_fail_with_eio() {
        let path = temp_socket("dead");
        let (_log, stub) = stub(&path);
        let backend = Arc::new(FsBackend::connect("share", &path, 16).unwrap());
        let mut dev = VirtioFs::new(backend.clone()).unwrap();
        let mem = crate::memory::guest_memory(4 << 20, false, true).unwrap();
        dev.activate(mem.clone(), queues(), 1 << 32);
        // A FUSE request on queue 0 (40-byte in header with unique 0x1234, room for the
        // reply), made available; the backend "took" it and dies.
        let mut header = [0u8; 40];
        header[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
        mem.write_slice(&header, GuestAddress(DATA)).unwrap();
        publish(
            &mem,
            &[(DATA, 40, F_NEXT, 1), (DATA + 0x100, 64, F_WRITE, 0)],
            &[0],
        );
        assert_eq!(dev.process_queue(0), QueueOutcome::Idle, "relayed");
        // The connection goes down, as a killed virtiofsd's does (the stub's loop ends).
        backend.watch.shutdown(std::net::Shutdown::Both).unwrap();
        drop(stub.join().unwrap());
        let mut outcome = QueueOutcome::Idle;
        for _ in 0..100 {
            outcome = dev.process_event();
            if outcome != QueueOutcome::Idle {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(outcome, QueueOutcome::Used);
        assert!(backend.is_dead());
        assert_eq!(used(&mem), (1, vec![(0, 16)]));
        let reply: [u8; 16] = mem.read_obj(GuestAddress(DATA + 0x100)).unwrap();
        assert_eq!(u32::from_le_bytes(reply[..4].try_into().unwrap()), 16);
        assert_eq!(
            i32::from_le_bytes(reply[4..8].try_into().unwrap()),
            -libc::EIO
        );
        assert_eq!(u64::from_le_bytes(reply[8..].try_into().unwrap()), 0x1234);
        // A later request is answered at its notify.
        publish(
            &mem,
            &[(DATA, 40, F_NEXT, 1), (DATA + 0x100, 64, F_WRITE, 0)],
            &[0, 0],
        );
        assert_eq!(dev.process_queue(0), QueueOutcome::Used);
        assert_eq!(used(&mem).0, 2);
        dev.reset();
        // The next boot's device never hands anything to the dead backend.
        let mut next = VirtioFs::new(backend.clone()).unwrap();
        next.activate(mem.clone(), queues(), 1 << 32);
        assert!(!next.running);
        assert_eq!(next.counters()[2], ("requests_failed", 0));
    }
}
