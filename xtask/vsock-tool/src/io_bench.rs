//! The I/O bench's ends (the bench's `io` part, rvvmm beside kvmtool): a guest server that
//! L1 drives over TCP, so L1 can time each phase and read the VMM's CPU time around it, and
//! the guest's random-read load (busybox has no fio).
//!
//! ```text
//! vsock-tool io-serve PORT              guest: serve the bench's requests on TCP PORT
//! vsock-tool io-run HOST:PORT COMMAND   host: run COMMAND in the guest (sh -c), print its output
//! vsock-tool io-push HOST:PORT BYTES    host: send BYTES to the guest, print the time
//! vsock-tool io-pull HOST:PORT BYTES    host: have the guest send BYTES, print the time
//! vsock-tool randread DEV JOBS SECONDS  guest: 4 KiB O_DIRECT reads at random offsets
//! vsock-tool seq DEV MIB read|write     guest: MIB sequential 1 MiB O_DIRECT reads or writes
//! ```
//!
//! A request's first byte says what it is: `C` a command line (its output comes back, then
//! EOF), `R` bytes for the guest to swallow until EOF (the count comes back as 8 bytes), `W`
//! and 8 bytes N: the guest sends N bytes and closes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// The size of each read of `randread` and of each buffer on the wire.
const BLOCK: usize = 4096;
const WIRE_BUF: usize = 64 * 1024;

/// Serves requests on `port` until killed (the guest powers off under it), one thread each.
pub fn serve(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    println!("@@IO serving on port {port}");
    for conn in listener.incoming() {
        let conn = conn?;
        std::thread::spawn(move || {
            if let Err(e) = serve_one(conn) {
                println!("@@IO request failed: {e}");
            }
        });
    }
    Ok(())
}

fn serve_one(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut kind = [0u8; 1];
    conn.read_exact(&mut kind)?;
    match kind[0] {
        b'C' => {
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line)?;
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(line.trim_end())
                .output()?;
            conn.write_all(&out.stdout)?;
            conn.write_all(&out.stderr)?;
        }
        b'R' => {
            let total = count_to_eof(&mut conn)?;
            conn.write_all(&total.to_le_bytes())?;
        }
        b'W' => {
            let mut n = [0u8; 8];
            conn.read_exact(&mut n)?;
            send(&mut conn, u64::from_le_bytes(n))?;
        }
        other => return Err(io::Error::other(format!("unknown request {other:#x}"))),
    }
    conn.shutdown(Shutdown::Write)
}

/// Reads `conn` to its EOF; the bytes it brought.
fn count_to_eof(conn: &mut TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; WIRE_BUF];
    let mut total = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Writes `bytes` of a pattern that does not compress.
fn send(conn: &mut TcpStream, bytes: u64) -> io::Result<()> {
    let mut buf = vec![0u8; WIRE_BUF];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        crate::fill(&mut buf[..n], &mut state);
        conn.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Connects to the guest's server, giving up after 10 s (a guest that never came up).
fn connect(addr: &str) -> io::Result<TcpStream> {
    let to = addr
        .parse()
        .map_err(|_| io::Error::other(format!("'{addr}' is not HOST:PORT")))?;
    let conn = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// Runs `command` in the guest and prints what it printed.
pub fn run(addr: &str, command: &str) -> io::Result<()> {
    let mut conn = connect(addr)?;
    conn.write_all(format!("C{command}\n").as_bytes())?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    print!("{out}");
    Ok(())
}

/// L1 to the guest: `bytes` sent, timed until the guest has counted them all.
pub fn push(addr: &str, bytes: u64) -> io::Result<()> {
    let start = Instant::now();
    let mut conn = connect(addr)?;
    conn.write_all(b"R")?;
    send(&mut conn, bytes)?;
    conn.shutdown(Shutdown::Write)?;
    let mut n = [0u8; 8];
    conn.read_exact(&mut n)?;
    let secs = start.elapsed().as_secs_f64();
    let got = u64::from_le_bytes(n);
    if got != bytes {
        return Err(io::Error::other(format!(
            "the guest counted {got} of {bytes} bytes"
        )));
    }
    println!("@@IO push {bytes} bytes in {secs:.4} s");
    Ok(())
}

/// The guest to L1: `bytes` asked for, timed until the last one is here.
pub fn pull(addr: &str, bytes: u64) -> io::Result<()> {
    let start = Instant::now();
    let mut conn = connect(addr)?;
    let mut ask = vec![b'W'];
    ask.extend_from_slice(&bytes.to_le_bytes());
    conn.write_all(&ask)?;
    let got = count_to_eof(&mut conn)?;
    let secs = start.elapsed().as_secs_f64();
    if got != bytes {
        return Err(io::Error::other(format!("got {got} of {bytes} bytes")));
    }
    println!("@@IO pull {bytes} bytes in {secs:.4} s");
    Ok(())
}

/// A 4 KiB-aligned buffer for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// `jobs` threads, each reading 4 KiB at random aligned offsets of `dev` with O_DIRECT, one
/// read at a time (so `jobs` reads are in flight: the queue depth), for `seconds`; prints
/// the reads done and the rate.
pub fn randread(dev: &str, jobs: usize, seconds: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    let blocks = file_blocks(&file)?;
    if blocks == 0 {
        return Err(io::Error::other(format!("{dev} has no 4 KiB block")));
    }
    let irqs_before = device_irqs(dev);
    let file = std::sync::Arc::new(file);
    let deadline = Duration::from_secs(seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|j| {
            let file = file.clone();
            std::thread::spawn(move || -> io::Result<u64> {
                let mut buf = Box::new(Block([0; BLOCK]));
                let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (j as u64 + 1).wrapping_mul(0x1000_0001);
                let mut done = 0u64;
                while start.elapsed() < deadline {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let at = (state % blocks) * BLOCK as u64;
                    file.read_exact_at(&mut buf.0, at)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| io::Error::other("a reader panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let irqs = match (irqs_before, device_irqs(dev)) {
        (Some(a), Some(b)) => format!(" irqs={}", b.saturating_sub(a)),
        _ => String::new(),
    };
    println!(
        "@@IO randread jobs={} reads={total} secs={secs:.3} iops={:.0}{irqs}",
        jobs.max(1),
        total as f64 / secs
    );
    Ok(())
}

/// The interrupts the guest took so far for the virtio device behind block device `dev`
/// (`/dev/vda`): its /proc/interrupts line, found by the transport's name (`virtioN`).
fn device_irqs(dev: &str) -> Option<u64> {
    let name = dev.rsplit('/').next()?;
    let link = std::fs::read_link(format!("/sys/block/{name}/device")).ok()?;
    let virtio = link.file_name()?.to_str()?.to_string();
    let table = std::fs::read_to_string("/proc/interrupts").ok()?;
    let line = table
        .lines()
        .find(|l| l.split_whitespace().last() == Some(virtio.as_str()))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map_while(|f| f.parse::<u64>().ok())
            .sum(),
    )
}

/// `mib` sequential 1 MiB reads (or writes of a pattern) of `dev` with O_DIRECT, one at a
/// time (as `dd bs=1M iflag=direct` does; busybox's dd prints no time), timed.
pub fn seq(dev: &str, mib: u64, write: bool) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    // 1 MiB at a 4 KiB-aligned address inside a slightly larger allocation (O_DIRECT).
    let mut backing = vec![0u8; (1 << 20) + BLOCK];
    let off = backing.as_ptr().align_offset(BLOCK);
    let buf = &mut backing[off..off + (1 << 20)];
    let mut state = 0x1234_5678_9abc_def1u64;
    crate::fill(buf, &mut state);
    let start = Instant::now();
    for i in 0..mib {
        let at = i << 20;
        if write {
            file.write_all_at(buf, at)?;
        } else {
            file.read_exact_at(buf, at)?;
        }
    }
    if write {
        file.sync_all()?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "@@IO seq {} bytes={} secs={secs:.4}",
        if write { "write" } else { "read" },
        mib << 20
    );
    Ok(())
}

/// The number of whole 4 KiB blocks of a block device (or file).
fn file_blocks(file: &std::fs::File) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = file;
    let size = f.seek(io::SeekFrom::End(0))?;
    Ok(size / BLOCK as u64)
}
