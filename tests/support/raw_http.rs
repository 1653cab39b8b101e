//! A minimal HTTP/1.1 client for raw requests to the simulator (one
//! request per connection), shared by the simulator's tests.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;

use hangar::sim::{self, SimConfig, SimHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The token the simulator's tests start it with, and the header that
/// presents it.
pub const TOKEN: &str = "sim-raw-token";
pub const AUTH: (&str, &str) = ("authorization", "Bearer sim-raw-token");

/// A simulator that accepts [`TOKEN`].
pub async fn start() -> SimHandle {
    sim::start(SimConfig::new(TOKEN)).await.unwrap()
}

/// `GET path` with `headers`.
pub async fn get(sim: &SimHandle, path: &str, headers: &[(&str, &str)]) -> Answer {
    http(sim, "GET", path, headers, None).await
}

/// `DELETE path` with `headers`.
pub async fn delete(sim: &SimHandle, path: &str, headers: &[(&str, &str)]) -> Answer {
    http(sim, "DELETE", path, headers, None).await
}

/// `POST path` with `headers` and the JSON `body`.
pub async fn post(sim: &SimHandle, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
    http(sim, "POST", path, headers, Some(body)).await
}

pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub async fn http(
    sim: &SimHandle,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    http_at(
        sim.base_url.trim_start_matches("http://"),
        method,
        path,
        headers,
        body,
    )
    .await
}

/// The same to any loopback `ADDRESS:PORT` (a webhook listener).
pub async fn http_at(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    // Lossy: a release asset's bytes are not text (its length is checked).
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}
