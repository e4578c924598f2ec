//! What a client of the API socket can send: the request as the API thread reads it (bounded
//! head and body, Content-Length, no chunking) and routes it, then the body as the control loop
//! parses it (`vm.create`'s VmConfig, the snapshot and restore URLs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvvmm::api::server::read_and_route;
use rvvmm::api::ApiRequest;
use rvvmm::config::{json, Source};

fuzz_target!(|data: &[u8]| {
    let mut conn = data;
    let Some(Ok((request, body))) = read_and_route(&mut conn) else {
        return;
    };
    match request {
        ApiRequest::VmCreate => {
            if let Ok((config, _)) = json::parse(&body, Source::Api) {
                let _ = config.resolve();
            }
        }
        ApiRequest::VmSnapshot | ApiRequest::VmRestore => {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
                for field in ["destination_url", "source_url"] {
                    if let Some(url) = value.get(field).and_then(|v| v.as_str()) {
                        let _ = rvvmm::snapshot::dir_of_url(url);
                    }
                }
            }
        }
        _ => {}
    }
});
