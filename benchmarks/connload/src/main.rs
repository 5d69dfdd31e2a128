//! Connection-establishment load for the relay's `scale.connect` benchmark, with the standard library only.
//!
//! The Python peers spent 0.7-1 ms of CPU per established pair, as much as half the gateway's own cost, so
//! on two cores they could not show what the gateway can do. This program does the same work with blocking
//! sockets on threads:
//!
//!     connload listener HOST PORT ENTITY TOKEN
//!         Opens a control channel; every `accept` becomes a rendezvous upgrade on a worker thread, which
//!         answers the close the gateway forwards from the sender and closes. Prints READY once online.
//!
//!     connload churn HOST PORT PATH TOKEN CONCURRENCY SECONDS
//!         CONCURRENCY threads each connect, send the upgrade, wait for the 101, send a close frame and
//!         close, again and again. Warms up for 0.5 s, prints `MEASURE start`, measures for SECONDS, prints
//!         `MEASURE end` and a `RESULT {json}` line like `benchmarks.lean` does.

use std::env;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const WORKERS: usize = 256;

fn upgrade_request(host: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A masked client frame (payloads here are at most 125 bytes).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Connect, send the upgrade, read the response head; Ok(true) for a 101. Leftover bytes go to `rest`.
fn open(host: &str, port: u16, request: &[u8], rest: &mut Vec<u8>) -> io::Result<(TcpStream, bool)> {
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_nodelay(true)?;
    stream.write_all(request)?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            rest.clear();
            rest.extend_from_slice(&head[end + 4..]);
            return Ok((stream, head.starts_with(b"HTTP/1.1 101")));
        }
    }
}

/// Reads unmasked server frames; calls `on_frame(opcode, payload)` until it returns false or the socket ends.
fn read_frames(stream: &mut TcpStream, mut data: Vec<u8>, mut on_frame: impl FnMut(&mut TcpStream, u8, &[u8]) -> bool) {
    let mut buf = vec![0u8; 65536];
    loop {
        loop {
            if data.len() < 2 {
                break;
            }
            let opcode = data[0] & 0x0f;
            let short = (data[1] & 0x7f) as usize;
            let (len, start) = match short {
                126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
                127 if data.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&data[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n, 2),
            };
            if data.len() < start + len {
                break;
            }
            let payload: Vec<u8> = data[start..start + len].to_vec();
            data.drain(..start + len);
            if !on_frame(stream, opcode, &payload) {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

fn find_address(json: &str) -> Option<&str> {
    let start = json.find("\"address\":")? + "\"address\":".len();
    let rest = json[start..].trim_start().strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// The rendezvous leg: upgrade, then answer the gateway's close (forwarded from the sender) and close.
fn rendezvous(host: &str, port: u16, address: &str) {
    let path = match address.find("/$hc/") {
        Some(i) => &address[i..],
        None => return,
    };
    let mut rest = Vec::new();
    let request = upgrade_request(host, port, path, &[]);
    let Ok((mut stream, true)) = open(host, port, &request, &mut rest) else { return };
    read_frames(&mut stream, rest, |s, opcode, payload| match opcode {
        OP_CLOSE => {
            let _ = s.write_all(&frame(OP_CLOSE, &payload[..payload.len().min(2)]));
            false
        }
        OP_PING => s.write_all(&frame(OP_PONG, payload)).is_ok(),
        _ => true,
    });
    let _ = stream.shutdown(Shutdown::Both);
}

fn listener(host: String, port: u16, entity: &str, token: &str) {
    let path = format!("/$hc/{entity}?sb-hc-action=listen&sb-hc-token={}", percent_encode(token));
    let mut rest = Vec::new();
    let request = upgrade_request(&host, port, &path, &[]);
    let (mut control, ok) = open(&host, port, &request, &mut rest).unwrap_or_else(|e| {
        eprintln!("control channel: {e}");
        process::exit(1)
    });
    if !ok {
        eprintln!("control channel refused");
        process::exit(1);
    }
    let (tx, rx) = mpsc::channel::<String>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..WORKERS {
        let (rx, host) = (Arc::clone(&rx), host.clone());
        thread::spawn(move || loop {
            let address = match rx.lock().unwrap().recv() {
                Ok(a) => a,
                Err(_) => return,
            };
            rendezvous(&host, port, &address);
        });
    }
    println!("READY");
    io::stdout().flush().ok();
    read_frames(&mut control, rest, |s, opcode, payload| {
        match opcode {
            OP_TEXT => {
                if let Some(address) = std::str::from_utf8(payload).ok().and_then(find_address) {
                    tx.send(address.to_string()).ok();
                }
            }
            OP_PING => {
                s.write_all(&frame(OP_PONG, payload)).ok();
            }
            OP_CLOSE => return false,
            _ => {}
        }
        true
    });
}

/// User plus system CPU seconds of this process (all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ is 100 on Linux
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn churn(host: String, port: u16, path: &str, token: &str, concurrency: usize, seconds: f64) {
    let request = Arc::new(upgrade_request(&host, port, path, &[("ServiceBusAuthorization", token)]));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let close = Arc::new(frame(OP_CLOSE, &1000u16.to_be_bytes()));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (request, measuring, stop, failures, close, host) = (
            Arc::clone(&request),
            Arc::clone(&measuring),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&close),
            host.clone(),
        );
        workers.push(thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut rest = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match open(&host, port, &request, &mut rest) {
                    Ok((mut stream, true)) => {
                        if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                            latencies.push(started.elapsed().as_secs_f64());
                        }
                        let _ = stream.write_all(&close);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            latencies
        }));
    }
    thread::sleep(Duration::from_millis(500));
    measuring.store(true, Ordering::Relaxed);
    println!("MEASURE start");
    io::stdout().flush().ok();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!("MEASURE end");
    io::stdout().flush().ok();
    let mut latencies: Vec<f64> = workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let counted = latencies.len() as f64;
    println!(
        "RESULT {{\"established\": {}, \"failures\": {}, \"seconds\": {elapsed:.4}, \"per_s\": {:.2}, \
         \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"loadgen_cpu\": {:.4}, \"loop\": \"connload (Rust, {concurrency} threads)\"}}",
        latencies.len(),
        failures.load(Ordering::Relaxed),
        counted / elapsed,
        percentile(&latencies, 0.5) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0,
        cpu / elapsed,
    );
}

fn main() {
    let args: Vec<String> = env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: connload listener HOST PORT ENTITY TOKEN | churn HOST PORT PATH TOKEN CONCURRENCY SECONDS");
        process::exit(2)
    };
    if args.len() < 6 {
        usage();
    }
    let port: u16 = args[3].parse().unwrap_or_else(|_| usage());
    match args[1].as_str() {
        "listener" => listener(args[2].clone(), port, &args[4], &args[5]),
        "churn" if args.len() >= 8 => churn(
            args[2].clone(),
            port,
            &args[4],
            &args[5],
            args[6].parse().unwrap_or_else(|_| usage()),
            args[7].parse().unwrap_or_else(|_| usage()),
        ),
        _ => usage(),
    }
}
