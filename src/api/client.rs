//! `rvvmm remote`: the API's client, as `ch-remote` is Cloud Hypervisor's. It writes one
//! request, reads the answer to the end (the server closes the connection), and parses it with
//! httparse.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::PREFIX;

/// Largest answer read.
const MAX_ANSWER: usize = 4 << 20;
/// How long a request may take (a reboot or pause included).
const TIMEOUT: Duration = Duration::from_secs(90);

/// The commands of `rvvmm remote`, as ch-remote names them: command, method, endpoint.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("ping", "GET", "vmm.ping"),
    ("shutdown-vmm", "PUT", "vmm.shutdown"),
    ("create", "PUT", "vm.create"),
    ("delete", "PUT", "vm.delete"),
    ("snapshot", "PUT", "vm.snapshot"),
    ("restore", "PUT", "vm.restore"),
    ("info", "GET", "vm.info"),
    ("counters", "GET", "vm.counters"),
    ("boot", "PUT", "vm.boot"),
    ("pause", "PUT", "vm.pause"),
    ("resume", "PUT", "vm.resume"),
    ("shutdown", "PUT", "vm.shutdown"),
    ("reboot", "PUT", "vm.reboot"),
    ("power-button", "PUT", "vm.power-button"),
];

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not a command of [`COMMANDS`].
    #[error("unknown command '{0}'; one of: {1}")]
    UnknownCommand(String, String),
    /// The socket could not be reached.
    #[error("cannot reach the API at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("the API connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP.
    #[error("the answer is not HTTP: {0}")]
    BadAnswer(String),
    /// The server said no.
    #[error("{endpoint}: HTTP {status}: {message}")]
    Refused {
        /// The endpoint asked.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The server's error text.
        message: String,
    },
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// Sends `method` `endpoint` (e.g. "vm.info") with `body` to the API at `socket`.
pub fn call(
    socket: &Path,
    method: &str,
    endpoint: &str,
    body: Option<&str>,
) -> Result<Answer, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {PREFIX}{endpoint} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n"
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER as u64).read_to_end(&mut raw)?;
    parse_answer(&raw)
}

/// Parses a whole HTTP answer.
pub fn parse_answer(raw: &[u8]) -> Result<Answer, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(raw) {
        Ok(httparse::Status::Complete(len)) => Ok(Answer {
            status: response.code.unwrap_or(0),
            body: String::from_utf8_lossy(&raw[len..]).into_owned(),
        }),
        Ok(httparse::Status::Partial) => Err(ClientError::BadAnswer("it ended early".into())),
        Err(e) => Err(ClientError::BadAnswer(e.to_string())),
    }
}

/// Runs `command` (with an optional JSON `body`) against `socket`: the answer's body on
/// success (pretty JSON when it is JSON), the server's error as an error.
pub fn remote(socket: &Path, command: &str, body: Option<&str>) -> Result<String, ClientError> {
    let Some(&(_, method, endpoint)) = COMMANDS.iter().find(|(c, _, _)| *c == command) else {
        let names: Vec<_> = COMMANDS.iter().map(|(c, _, _)| *c).collect();
        return Err(ClientError::UnknownCommand(
            command.into(),
            names.join(", "),
        ));
    };
    let answer = call(socket, method, endpoint, body)?;
    if !(200..300).contains(&answer.status) {
        let message = serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| answer.body.trim().to_string());
        return Err(ClientError::Refused {
            endpoint: endpoint.into(),
            status: answer.status,
            message,
        });
    }
    Ok(
        match serde_json::from_str::<serde_json::Value>(&answer.body) {
            Ok(json) => serde_json::to_string_pretty(&json).unwrap_or(answer.body),
            Err(_) => answer.body,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        let a = parse_answer(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}",
        )
        .unwrap();
        assert_eq!(a.status, 405);
        assert_eq!(a.body, "{\"error\":\"x\"}");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nConte").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn unknown_commands_list_the_known_ones() {
        let e = remote(Path::new("/nonexistent"), "explode", None).unwrap_err();
        assert!(
            e.to_string()
                .contains("ping, shutdown-vmm, create, delete, snapshot, restore, info"),
            "{e}"
        );
    }
}
