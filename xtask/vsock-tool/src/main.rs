//! The lab's two ends of rvvmm's virtio-vsock (busybox's `nc` speaks no vsock, and the L1
//! busybox no Unix sockets):
//!
//! ```text
//! vsock-tool listen PORT [COUNT]        guest: echo COUNT connections on vsock PORT, each to EOF
//! vsock-tool connect CID PORT MESSAGE   guest: send MESSAGE and a newline, print the answer
//! vsock-tool unix-serve PATH            host: answer one connection on Unix socket PATH
//! vsock-tool hybrid PATH PORT BYTES     host: CONNECT through rvvmm's socket, send BYTES,
//!                                       read the echo, print both sha256 and the time
//! vsock-tool hybrid-rtt PATH PORT N     host: N one-byte round trips, print the median
//! vsock-tool hybrid-stall PATH PORT     host: send without ever reading, until killed
//! vsock-tool hybrid-hold PATH PORT      host: one round trip, then idle until killed
//! vsock-tool tcp-listen PORT COUNT     guest: echo COUNT TCP connections (the bench's yardstick)
//! vsock-tool tcp HOST:PORT BYTES       host: as hybrid, over TCP
//! vsock-tool tcp-rtt HOST:PORT N       host: as hybrid-rtt, over TCP
//! ```
//!
//! and the I/O bench's ends (see `io_bench`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::Instant;

use sha2::{Digest, Sha256};

mod io_bench;

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: a zeroed sockaddr_vm is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

/// A new vsock stream socket given to `call` (bind or connect) with address (cid, port).
fn vsock_socket_at(
    cid: u32,
    port: u32,
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket()?;
    let addr = vsock_addr(cid, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes; `call` is bind(2) or connect(2).
    check(unsafe {
        call(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            len,
        )
    })?;
    Ok(sock)
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A vsock stream, used through UnixStream's std I/O (both are plain stream sockets to
/// read(2), write(2) and shutdown(2)).
fn as_stream(fd: OwnedFd) -> UnixStream {
    UnixStream::from(fd)
}

fn listen(port: u32, count: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = vsock_socket_at(libc::VMADDR_CID_ANY, port, libc::bind)?;
    // SAFETY: listen on an fd this function owns.
    check(unsafe { libc::listen(sock.as_raw_fd(), 8) })?;
    println!("@@VSOCK listening on port {port}");
    let mut failed = false;
    for _ in 0..count {
        // SAFETY: accept on the listening fd; no address is asked for.
        let fd = unsafe {
            libc::accept4(
                sock.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        check(fd)?;
        // SAFETY: accept4 returned a new fd nothing else owns.
        let stream = as_stream(unsafe { OwnedFd::from_raw_fd(fd) });
        // A connection that fails (reset under it) is reported and the next one served.
        match echo(stream) {
            Ok(total) => println!("@@VSOCK echoed {total} bytes"),
            Err(e) => {
                println!("@@VSOCK error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(io::Error::other("a connection failed"));
    }
    Ok(())
}

/// Echoes what `stream` brings until its EOF; the bytes echoed.
fn echo(mut stream: UnixStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
        total += n as u64;
    }
    let _ = stream.shutdown(Shutdown::Write);
    Ok(total)
}

fn connect(cid: u32, port: u32, message: &str) -> io::Result<()> {
    let sock = vsock_socket_at(cid, port, libc::connect)?;
    let mut stream = as_stream(sock);
    stream.write_all(format!("{message}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    println!("@@VSOCK answer: {}", answer.trim_end());
    Ok(())
}

fn unix_serve(path: &str) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    println!("@@VSOCK host listening on {path}");
    let (stream, _) = listener.accept()?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let mut stream = stream;
    stream.write_all(format!("host heard: {}\n", line.trim_end()).as_bytes())?;
    println!("@@VSOCK host heard: {}", line.trim_end());
    Ok(())
}

/// Connects through rvvmm's hybrid socket to guest port `port`.
fn hybrid_connect(path: &str, port: u32) -> io::Result<(UnixStream, BufReader<UnixStream>)> {
    let mut stream = UnixStream::connect(path)?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut ok = String::new();
    reader.read_line(&mut ok)?;
    if !ok.starts_with("OK ") {
        return Err(io::Error::other(format!(
            "rvvmm answered {ok:?}, not OK <port>"
        )));
    }
    Ok((stream, reader))
}

/// xorshift64: data that does not compress and is the same every run.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Connects to a TCP `addr` (the bench's tap + TCP yardstick), as a stream like the others
/// (read, write and shutdown are the same calls on any stream socket).
fn tcp_connect(addr: &str) -> io::Result<(UnixStream, BufReader<UnixStream>)> {
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let stream = UnixStream::from(OwnedFd::from(tcp));
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Echoes `count` TCP connections on `port`, each to EOF (the guest's end of the TCP runs).
fn tcp_listen(port: u32, count: usize) -> io::Result<()> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port as u16))?;
    println!("@@TCP listening on port {port}");
    for _ in 0..count {
        let (tcp, _) = listener.accept()?;
        tcp.set_nodelay(true)?;
        let total = echo(UnixStream::from(OwnedFd::from(tcp)))?;
        println!("@@TCP echoed {total} bytes");
    }
    Ok(())
}

fn hybrid(path: &str, port: u32, bytes: u64) -> io::Result<()> {
    let (stream, reader) = hybrid_connect(path, port)?;
    both_ways("VSOCK", stream, reader, bytes)
}

/// Sends `bytes` on `stream` while reading the echo from `reader`; prints both sha256, the
/// time and the rate, under `label`.
fn both_ways(
    label: &str,
    mut stream: UnixStream,
    mut reader: BufReader<UnixStream>,
    bytes: u64,
) -> io::Result<()> {
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> io::Result<String> {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], &mut state);
            stream.write_all(&buf[..n])?;
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        stream.shutdown(Shutdown::Write)?;
        Ok(format!("{:x}", hash.finalize()))
    });
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let sent = writer
        .join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    let received = format!("{:x}", hash.finalize());
    println!(
        "@@{label} sent {bytes} bytes sha256 {sent}, received {got} bytes sha256 {received} in {secs:.3} s ({:.1} MiB/s each way){}",
        bytes as f64 / secs / 1048576.0,
        if sent == received && got == bytes { ", intact" } else { ", DIFFERENT" }
    );
    Ok(())
}

fn hybrid_rtt(path: &str, port: u32, n: usize) -> io::Result<()> {
    let (stream, reader) = hybrid_connect(path, port)?;
    round_trips("VSOCK", stream, reader, n)
}

/// `n` one-byte round trips; prints the median under `label`.
fn round_trips(
    label: &str,
    mut stream: UnixStream,
    mut reader: BufReader<UnixStream>,
    n: usize,
) -> io::Result<()> {
    let mut times = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for i in 0..n {
        let t = Instant::now();
        stream.write_all(&[i as u8])?;
        reader.read_exact(&mut b)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    stream.shutdown(Shutdown::Write)?;
    times.sort_by(f64::total_cmp);
    println!(
        "@@{label} round trip median {:.0} us over {n}",
        times[n / 2]
    );
    Ok(())
}

/// A peer that sends and never reads: the echo piles up in its socket until it is killed.
fn hybrid_stall(path: &str, port: u32) -> io::Result<()> {
    let (mut stream, _reader) = hybrid_connect(path, port)?;
    let buf = vec![0x5au8; 64 * 1024];
    loop {
        stream.write_all(&buf)?;
    }
}

/// A peer that makes one round trip, says so, and then holds the connection open and idle
/// until it is killed: nothing but the VMM's own events can end it in the guest.
fn hybrid_hold(path: &str, port: u32) -> io::Result<()> {
    let (mut stream, mut reader) = hybrid_connect(path, port)?;
    let mut b = [0u8; 1];
    stream.write_all(b"h")?;
    reader.read_exact(&mut b)?;
    println!("@@VSOCK holding an idle connection");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| io::Error::other(format!("'{s}' is not a number")))
    };
    let result = match a.as_slice() {
        ["listen", port] => num(port).and_then(|p| listen(p as u32, 1)),
        ["listen", port, count] => {
            num(port).and_then(|p| num(count).and_then(|c| listen(p as u32, c as usize)))
        }
        ["connect", cid, port, msg] => {
            num(cid).and_then(|c| num(port).and_then(|p| connect(c as u32, p as u32, msg)))
        }
        ["unix-serve", path] => unix_serve(path),
        ["hybrid", path, port, bytes] => {
            num(port).and_then(|p| num(bytes).and_then(|b| hybrid(path, p as u32, b)))
        }
        ["hybrid-stall", path, port] => num(port).and_then(|p| hybrid_stall(path, p as u32)),
        ["tcp-listen", port, count] => {
            num(port).and_then(|p| num(count).and_then(|c| tcp_listen(p as u32, c as usize)))
        }
        ["tcp", addr, bytes] => num(bytes).and_then(|b| {
            let (stream, reader) = tcp_connect(addr)?;
            both_ways("TCP", stream, reader, b)
        }),
        ["tcp-rtt", addr, n] => num(n).and_then(|n| {
            let (stream, reader) = tcp_connect(addr)?;
            round_trips("TCP", stream, reader, n.max(1) as usize)
        }),
        ["hybrid-hold", path, port] => num(port).and_then(|p| hybrid_hold(path, p as u32)),
        ["hybrid-rtt", path, port, n] => num(port)
            .and_then(|p| num(n).and_then(|n| hybrid_rtt(path, p as u32, n.max(1) as usize))),
        ["io-serve", port] => num(port).and_then(|p| io_bench::serve(p as u16)),
        ["io-run", addr, command] => io_bench::run(addr, command),
        ["io-push", addr, bytes] => num(bytes).and_then(|b| io_bench::push(addr, b)),
        ["io-pull", addr, bytes] => num(bytes).and_then(|b| io_bench::pull(addr, b)),
        ["seq", dev, mib, how @ ("read" | "write")] => {
            num(mib).and_then(|m| io_bench::seq(dev, m, *how == "write"))
        }
        ["randread", dev, jobs, secs] => {
            num(jobs).and_then(|j| num(secs).and_then(|s| io_bench::randread(dev, j as usize, s)))
        }
        _ => {
            eprintln!("usage: vsock-tool listen PORT [COUNT] | connect CID PORT MESSAGE | unix-serve PATH | hybrid PATH PORT BYTES | hybrid-rtt PATH PORT N | hybrid-stall PATH PORT | hybrid-hold PATH PORT | tcp-listen PORT COUNT | tcp HOST:PORT BYTES | tcp-rtt HOST:PORT N | io-serve PORT | io-run HOST:PORT COMMAND | io-push HOST:PORT BYTES | io-pull HOST:PORT BYTES | randread DEV JOBS SECONDS | seq DEV MIB read|write");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("@@VSOCK error: {e}");
            ExitCode::FAILURE
        }
    }
}
