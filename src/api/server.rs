//! The API thread: HTTP/1.1 on a Unix socket, one connection at a time and one request a
//! connection (every answer says `Connection: close`; ch-remote, curl and Go's HTTP client all
//! take that). httparse parses the request line and headers: Cloud Hypervisor's and
//! Firecracker's `micro_http` is not published on crates.io, tiny_http runs a thread pool of
//! its own, and hyper needs an async runtime, while this API needs one thread and a few
//! endpoints. What this file adds is the framing around httparse: bounded reads, the body by
//! Content-Length, time-outs, and the answer.
//!
//! A client can cost nothing but its own request: headers are at most [`MAX_HEADER`] bytes and
//! bodies [`MAX_BODY`] (else 431/413), a connection that stalls is dropped after
//! [`IO_TIMEOUT`], and garbage gets a 400. The VM never waits on the API: requests reach the
//! control loop as messages, and vCPUs never see them.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::{route, ApiMessage, ApiRequest, ApiResponse};
use crate::files::SocketPathTaken;

/// Largest request line + headers.
pub const MAX_HEADER: usize = 8 << 10;
/// Largest request body (a VM configuration is a few KiB).
pub const MAX_BODY: usize = 64 << 10;
/// How long a client may take to send its request or take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may wait for the control loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read and dropped after refusing a request whose body was not read, so that the
/// client can read the refusal before the socket closes.
const MAX_DRAIN: usize = 4 << 20;
/// Most headers a request may have.
const MAX_HEADERS: usize = 32;

/// Errors setting up the API socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path holds something that is not a socket.
    #[error("--api-socket {0}: the path exists and is not a socket; remove it or choose another")]
    NotASocket(PathBuf),
    /// Another process serves the socket.
    #[error("--api-socket {0}: another process listens on it")]
    InUse(PathBuf),
    /// The socket could not be made.
    #[error("--api-socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The bound API socket, not yet served. Its file goes when it does.
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The serving API thread; dropping it removes the socket file (the thread ends with the
/// process).
pub struct ApiHandle {
    path: PathBuf,
    _thread: JoinHandle<()>,
}

impl ApiHandle {
    /// Removes the socket file: no new client reaches this API (the VMM is ending).
    pub fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.close();
    }
}

impl ApiServer {
    /// Binds `path` with mode 0600. A socket file already there is taken over only when
    /// nothing listens on it (a stale one, left by a process that died).
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        let io = |source| ApiError::Io {
            path: path.to_owned(),
            source,
        };
        match crate::files::take_over_stale_socket(path, "--api-socket") {
            Ok(()) => {}
            Err(SocketPathTaken::NotASocket) => return Err(ApiError::NotASocket(path.to_owned())),
            Err(SocketPathTaken::InUse) => return Err(ApiError::InUse(path.to_owned())),
            Err(SocketPathTaken::Io(e)) => return Err(io(e)),
        }
        // The socket is born 0600: umask is process-wide, so binds are serialised here (an
        // embedder may bind several), and the mode is set again after, for certain.
        static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let bound = {
            let _serial = UMASK.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: umask only changes this process's file-creation mask; it is set back at
            // once, under the lock above.
            let old = unsafe { libc::umask(0o177) };
            let bound = UnixListener::bind(path);
            // SAFETY: as above.
            unsafe { libc::umask(old) };
            bound.map_err(io)?
        };
        let server = ApiServer {
            listener: bound,
            path: path.to_owned(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(server)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the API thread: each request goes to `requests`, and `wake` is written so that
    /// the control loop looks.
    pub fn start(self, requests: Sender<ApiMessage>, wake: EventFd) -> std::io::Result<ApiHandle> {
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || self.serve(requests, wake))?;
        Ok(ApiHandle {
            path,
            _thread: thread,
        })
    }

    fn serve(&self, requests: Sender<ApiMessage>, wake: EventFd) {
        crate::seccomp::apply_or_exit(crate::seccomp::ThreadKind::Api);
        let mut failures = 0u64;
        for conn in self.listener.incoming() {
            match conn {
                Ok(stream) => {
                    if let Err(e) = handle(stream, &requests, &wake) {
                        log::debug!("api: connection dropped: {e}");
                    }
                }
                Err(e) => {
                    // Out of fds and the like: say so (not every time), wait a little.
                    failures += 1;
                    if failures.is_power_of_two() {
                        log::warn!("api: cannot accept a connection ({e}); {failures} so far");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// What the API thread makes of the bytes a client sends, before the control loop sees
/// anything: the request read (bounded) and routed, with its body, or the answer the client
/// gets; `None` for a connection dropped without one. The fuzz target's way in.
pub fn read_and_route(conn: &mut impl Read) -> Option<Result<(ApiRequest, Vec<u8>), ApiResponse>> {
    match read_request(conn) {
        Ok(r) => Some(route(&r.method, &r.path, &r.body).map(|req| (req, r.body))),
        Err(ReadError::Answer(response, _)) => Some(Err(response)),
        Err(ReadError::Gone(_)) => None,
    }
}

/// A request as read off the socket.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Why a request could not be read: an answer to send (and whether unread bytes may follow),
/// or a connection to drop silently.
enum ReadError {
    Answer(ApiResponse, bool),
    Gone(std::io::Error),
}

fn handle(
    mut stream: UnixStream,
    requests: &Sender<ApiMessage>,
    wake: &EventFd,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = match read_request(&mut stream) {
        Ok(r) => r,
        Err(ReadError::Gone(e)) => return Err(e),
        Err(ReadError::Answer(response, unread)) => {
            write_response(&mut stream, &response)?;
            if unread {
                drain(&mut stream);
            }
            return Ok(());
        }
    };
    log::debug!("api: {} {}", request.method, request.path);
    let response = match route(&request.method, &request.path, &request.body) {
        Err(response) => response,
        Ok(api_request) => ask(api_request, request.body, requests, wake),
    };
    write_response(&mut stream, &response)
}

/// Hands a request to the control loop and waits for its answer.
fn ask(
    request: super::ApiRequest,
    body: Vec<u8>,
    requests: &Sender<ApiMessage>,
    wake: &EventFd,
) -> ApiResponse {
    let (reply, answer) = mpsc::channel();
    if requests.send((request, body, reply)).is_err() || wake.write(1).is_err() {
        return ApiResponse::error(503, "the VMM is shutting down");
    }
    answer
        .recv_timeout(ANSWER_TIMEOUT)
        .unwrap_or_else(|_| ApiResponse::error(503, "the VMM did not answer in time"))
}

fn read_request(stream: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_len, method, path, length) = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ReadError::Gone(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the client closed before its request ended",
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Gone(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let length = body_length(req.headers).map_err(|r| ReadError::Answer(r, true))?;
                break (
                    len,
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    length,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEADER => {}
            Ok(httparse::Status::Partial) => {
                return Err(ReadError::Answer(
                    ApiResponse::error(431, format!("request headers over {MAX_HEADER} bytes")),
                    true,
                ))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Answer(
                    ApiResponse::error(431, format!("more than {MAX_HEADERS} headers")),
                    true,
                ))
            }
            Err(e) => {
                return Err(ReadError::Answer(
                    ApiResponse::error(400, format!("not an HTTP request: {e}")),
                    true,
                ))
            }
        }
    };
    if length > MAX_BODY {
        return Err(ReadError::Answer(
            ApiResponse::error(
                413,
                format!("a {length}-byte body; the API takes at most {MAX_BODY}"),
            ),
            true,
        ));
    }
    let mut body = buf.split_off(head_len);
    if body.len() > length {
        body.truncate(length);
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => {
                return Err(ReadError::Gone(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the client closed before its body ended",
                )))
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Gone(e)),
        }
    }
    Ok(Request { method, path, body })
}

/// The body's length from Content-Length (none: no body); chunked bodies are refused.
fn body_length(headers: &[httparse::Header<'_>]) -> Result<usize, ApiResponse> {
    let mut length = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiResponse::error(
                411,
                "chunked bodies are not taken; send Content-Length",
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiResponse::error(400, "Content-Length is not a number"))?;
        }
    }
    Ok(length)
}

/// Reads and drops what the client still sends (bounded in bytes and time), so that closing
/// the socket does not reset it before the client has read the answer.
fn drain(stream: &mut UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let start = Instant::now();
    let mut chunk = [0u8; 16 << 10];
    let mut total = 0;
    while total < MAX_DRAIN && start.elapsed() < Duration::from_secs(2) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(stream: &mut UnixStream, response: &ApiResponse) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nServer: rvvmm\r\nConnection: close\r\n",
        response.status,
        reason(response.status)
    );
    let body = response
        .body
        .as_ref()
        .map(|b| b.to_string())
        .unwrap_or_default();
    if response.status != 204 {
        out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
