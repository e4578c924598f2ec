//! Host files rvvmm reads (kernel, initrd, dtb, config, disk images, snapshots): opened
//! without blocking, so a FIFO given by mistake cannot hang rvvmm, taken only when they are
//! regular files (a special file such as /dev/zero has no size to trust and may never end),
//! and read within a bound counted on the bytes read, never on what the file's metadata says.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` (read-write with `write`) if it is a regular file; a directory, a FIFO, a
/// device or a socket is refused with an error that says so. The open does not block.
pub fn open_regular(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // Blocking I/O again (for a regular file the flag changes nothing, but say what we mean).
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd this function owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// All of a regular file, if it holds at most `max` bytes (counted as they are read: a file
/// that grows while it is read cannot take more).
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path, false)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {max} bytes rvvmm takes for it"),
        ));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` whole or not at all: into a new file beside it, synced, then
/// renamed over it. A symbolic link at `path` is refused (its target would otherwise be
/// replaced or truncated where it points), as is anything but a regular file.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a symbolic link: give the file itself",
            ))
        }
        Ok(meta) if !meta.is_file() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".rvvmm-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rvvmm-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let fifo = temp("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a plain open would wait forever.
        let e = open_regular(&fifo, false).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = open_regular(Path::new("/"), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
    }

    #[test]
    fn replacing_writes_refuse_links_and_leave_no_temp_file() {
        let path = temp("out.dtb");
        std::fs::write(&path, b"old and longer").unwrap();
        write_replacing(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let target = temp("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = temp("link.dtb");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_replacing(&link, b"x").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let e = write_replacing(Path::new("/dev/null"), b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let leftovers = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".rvvmm-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn reads_are_bounded_by_the_bytes_read() {
        let path = temp("ten");
        std::fs::write(&path, [7u8; 10]).unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap(), [7u8; 10]);
        let e = read_bounded(&path, 9).unwrap_err();
        assert!(e.to_string().contains("larger than the 9 bytes"), "{e}");
    }
}

/// What stands in the way of binding a Unix socket at a path.
#[derive(Debug)]
pub enum SocketPathTaken {
    /// Something that is not a socket is there.
    NotASocket,
    /// A process listens on the socket there.
    InUse,
    /// The path could not be examined or the stale socket removed.
    Io(io::Error),
}

/// Makes `path` free for a new Unix socket: nothing there is fine, and a socket file nobody
/// listens on (left by a process that died: nothing removed it) is removed; anything else is
/// left alone and said.
pub fn take_over_stale_socket(path: &Path, what: &str) -> Result<(), SocketPathTaken> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(SocketPathTaken::NotASocket);
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketPathTaken::InUse),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("{what} {}: removing a stale socket", path.display());
            std::fs::remove_file(path).map_err(SocketPathTaken::Io)
        }
        Err(e) => Err(SocketPathTaken::Io(e)),
    }
}
