//! The REST API: the subset of Cloud Hypervisor's API (its OpenAPI file
//! `vmm/src/api/openapi/cloud-hypervisor.yaml`) that rvvmm can honour, on a Unix socket, so
//! that `ch-remote`, Kata Containers' Cloud Hypervisor driver and users' scripts drive rvvmm
//! as they drive Cloud Hypervisor: same paths, methods, JSON field names and status codes.
//!
//! [`server`] is the API thread (HTTP over the socket), [`route`] turns a request into an
//! [`ApiRequest`], the control loop ([`crate::vmm`]) answers it with an [`ApiResponse`], and
//! [`client`] is `rvvmm remote`. [`schema`] holds the JSON bodies.

pub mod client;
pub mod schema;
pub mod server;

use serde_json::Value;

/// The API's path prefix.
pub const PREFIX: &str = "/api/v1/";

/// What a client asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET vmm.ping`.
    VmmPing,
    /// `PUT vmm.shutdown`: stop the VM if it runs, then end the process (status 0).
    VmmShutdown,
    /// `PUT vm.create`: the body is the VM's config (Cloud Hypervisor's `VmConfig`).
    VmCreate,
    /// `PUT vm.delete`: stop the VM if it runs and forget it.
    VmDelete,
    /// `PUT vm.snapshot {"destination_url": "file:///dir"}` of a paused VM.
    VmSnapshot,
    /// `PUT vm.restore {"source_url": "file:///dir", "resume": bool}` with no VM created.
    VmRestore,
    /// `GET vm.info`.
    VmInfo,
    /// `GET vm.counters`.
    VmCounters,
    /// `PUT vm.boot`: boot the VM again after `vm.shutdown`.
    VmBoot,
    /// `PUT vm.pause`.
    VmPause,
    /// `PUT vm.resume`.
    VmResume,
    /// `PUT vm.shutdown`: stop the VM; the process stays and serves the API.
    VmShutdown,
    /// `PUT vm.reboot`.
    VmReboot,
    /// `PUT vm.power-button`.
    VmPowerButton,
}

/// The endpoints: path (after [`PREFIX`]), method, request.
const ENDPOINTS: &[(&str, &str, ApiRequest)] = &[
    ("vmm.ping", "GET", ApiRequest::VmmPing),
    ("vmm.shutdown", "PUT", ApiRequest::VmmShutdown),
    ("vm.create", "PUT", ApiRequest::VmCreate),
    ("vm.delete", "PUT", ApiRequest::VmDelete),
    ("vm.snapshot", "PUT", ApiRequest::VmSnapshot),
    ("vm.restore", "PUT", ApiRequest::VmRestore),
    ("vm.info", "GET", ApiRequest::VmInfo),
    ("vm.counters", "GET", ApiRequest::VmCounters),
    ("vm.boot", "PUT", ApiRequest::VmBoot),
    ("vm.pause", "PUT", ApiRequest::VmPause),
    ("vm.resume", "PUT", ApiRequest::VmResume),
    ("vm.shutdown", "PUT", ApiRequest::VmShutdown),
    ("vm.reboot", "PUT", ApiRequest::VmReboot),
    ("vm.power-button", "PUT", ApiRequest::VmPowerButton),
];

/// Cloud Hypervisor endpoints rvvmm knows and does not offer (yet): a clear 501, not a 404.
const NOT_OFFERED: &[&str] = &[
    "vm.resize",
    "vm.resize-disk",
    "vm.resize-zone",
    "vm.add-device",
    "vm.remove-device",
    "vm.add-disk",
    "vm.add-fs",
    "vm.add-net",
    "vm.add-pmem",
    "vm.add-vsock",
    "vm.add-vdpa",
    "vm.add-user-device",
    "vm.add-generic-vhost-user",
    "vm.coredump",
    "vm.balloon-stats",
    "vm.send-migration",
    "vm.receive-migration",
    "vm.nmi",
];

/// An answer: an HTTP status and, for most, a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// JSON body (none for 204).
    pub body: Option<Value>,
}

impl ApiResponse {
    /// 200 with `body`.
    pub fn ok(body: Value) -> Self {
        ApiResponse {
            status: 200,
            body: Some(body),
        }
    }

    /// 204: done, nothing to say.
    pub fn no_content() -> Self {
        ApiResponse {
            status: 204,
            body: None,
        }
    }

    /// An error: `status` with `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        ApiResponse {
            status,
            body: Some(serde_json::json!({ "error": message.into() })),
        }
    }

    /// The error message of an error response.
    pub fn error_message(&self) -> Option<&str> {
        self.body.as_ref()?.get("error")?.as_str()
    }
}

/// The request a method and path ask for, or the error response to send. `body` is the
/// request's body: the endpoints rvvmm offers take none, and a body that is not empty and not
/// JSON is refused as a client would want to hear of it.
pub fn route(method: &str, path: &str, body: &[u8]) -> Result<ApiRequest, ApiResponse> {
    let Some(name) = path.strip_prefix(PREFIX) else {
        return Err(ApiResponse::error(
            404,
            format!("no such endpoint {path}: the API is under {PREFIX}"),
        ));
    };
    let name = name.split('?').next().unwrap_or_default();
    let Some(&(_, want, request)) = ENDPOINTS.iter().find(|(n, _, _)| *n == name) else {
        if NOT_OFFERED.contains(&name) {
            return Err(ApiResponse::error(
                501,
                format!("rvvmm does not offer {name} (yet)"),
            ));
        }
        return Err(ApiResponse::error(404, format!("no such endpoint {path}")));
    };
    if method != want {
        return Err(ApiResponse::error(
            405,
            format!("{name} takes {want}, not {method}"),
        ));
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        if let Err(e) = serde_json::from_slice::<Value>(body) {
            return Err(ApiResponse::error(
                400,
                format!("the request body is not JSON: {e}"),
            ));
        }
    }
    Ok(request)
}

/// What the API thread hands the control loop: the request, its body, and where the answer
/// goes.
pub type ApiMessage = (ApiRequest, Vec<u8>, std::sync::mpsc::Sender<ApiResponse>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_and_method() {
        assert_eq!(
            route("GET", "/api/v1/vmm.ping", b""),
            Ok(ApiRequest::VmmPing)
        );
        assert_eq!(
            route("PUT", "/api/v1/vm.pause", b""),
            Ok(ApiRequest::VmPause)
        );
        assert_eq!(
            route("PUT", "/api/v1/vm.power-button", b"{}"),
            Ok(ApiRequest::VmPowerButton)
        );
        let status = |m: &str, p: &str, b: &[u8]| route(m, p, b).unwrap_err().status;
        assert_eq!(status("GET", "/api/v1/vm.pause", b""), 405);
        assert_eq!(status("PUT", "/api/v1/vm.info", b""), 405);
        assert_eq!(status("GET", "/api/v1/nope", b""), 404);
        assert_eq!(status("GET", "/nope", b""), 404);
        assert_eq!(status("PUT", "/api/v1/vm.coredump", b"{}"), 501);
        assert_eq!(status("PUT", "/api/v1/vm.pause", b"{not json"), 400);
        let e = route("GET", "/api/v1/vm.pause", b"").unwrap_err();
        assert_eq!(e.error_message(), Some("vm.pause takes PUT, not GET"));
    }
}
