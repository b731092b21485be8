//! Publishers and pacing: JSON lines to a file, HTTP with retries against a loopback server, batching and rates.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use glucoguard_simulator::{
    CollectPublisher, HttpConfig, HttpPublisher, JsonLinesPublisher, Pacing, Publisher, Simulator,
    stream, stream_until,
};
use serde_json::Value;

use crate::common::{config, json_lines, run};

/// A loopback HTTP server for `POST /api/ingest`; see [`serve_at`].
fn serve(statuses: Vec<u16>) -> (String, thread::JoinHandle<Vec<String>>) {
    serve_at("/api/ingest", statuses)
}

/// A loopback HTTP server answering POSTs to `path` with the given statuses in order, one
/// request per connection; returns the bodies.
fn serve_at(path: &'static str, statuses: Vec<u16>) -> (String, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let mut bodies = Vec::new();
        for status in statuses {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            assert!(
                request_line.starts_with(&format!("POST {path} ")),
                "{request_line}"
            );
            let mut json = false;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                json |= lower.starts_with("content-type: application/json");
                if line == "\r\n" {
                    break;
                }
            }
            assert!(json, "missing JSON content type");
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            bodies.push(String::from_utf8(body).unwrap());
            let reason = if status == 200 { "OK" } else { "Nope" };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
            );
            reader.get_mut().write_all(response.as_bytes()).unwrap();
        }
        bodies
    });
    (url, handle)
}

fn fast_retries() -> HttpConfig {
    HttpConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..HttpConfig::default()
    }
}

#[test]
fn http_posts_json_arrays_and_retries_server_errors() {
    let events = run(config(2, 1, 1));
    let batch = &events[..30];
    let (url, server) = serve(vec![503, 500, 200]);
    let mut publisher = HttpPublisher::with_config(url, fast_retries());
    publisher.publish(batch).unwrap();
    assert_eq!(publisher.retries(), 2);
    assert_eq!(publisher.requests(), 1);
    let bodies = server.join().unwrap();
    assert_eq!(bodies.len(), 3);
    let array: Vec<Value> = serde_json::from_str(&bodies[2]).unwrap();
    assert_eq!(array.len(), 30);
    assert_eq!(
        array[0],
        serde_json::from_str::<Value>(&batch[0].to_json_line()).unwrap()
    );
}

#[test]
fn http_splits_big_batches_and_fails_fast_on_client_errors() {
    let events = run(config(2, 1, 1));
    let (url, server) = serve(vec![200, 200, 200]);
    let cfg = HttpConfig {
        max_events_per_request: 10,
        ..fast_retries()
    };
    let mut publisher = HttpPublisher::with_config(url, cfg);
    publisher.publish(&events[..25]).unwrap();
    let sizes: Vec<usize> = server
        .join()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str::<Vec<Value>>(b).unwrap().len())
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);

    let (url, server) = serve(vec![400]);
    let mut publisher = HttpPublisher::with_config(url, fast_retries());
    let err = publisher.publish(&events[..3]).unwrap_err().to_string();
    assert!(err.contains("400"), "{err}");
    assert_eq!(publisher.retries(), 0);
    server.join().unwrap();
}

#[test]
fn http_gives_up_after_the_attempt_limit() {
    // A port nobody listens on: bind, note the port, drop the listener.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = HttpConfig {
        max_attempts: 3,
        ..fast_retries()
    };
    let mut publisher =
        HttpPublisher::with_config(format!("http://127.0.0.1:{port}/api/ingest"), cfg);
    let events = run(config(1, 1, 1));
    let started = Instant::now();
    let err = publisher.publish(&events[..1]).unwrap_err().to_string();
    assert!(err.contains("3 attempts"), "{err}");
    assert_eq!(publisher.retries(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn json_lines_file_matches_the_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut publisher = JsonLinesPublisher::create(&path).unwrap();
    let stats = stream(
        Simulator::new(config(3, 1, 4)),
        Pacing::AsFastAsPossible,
        &mut publisher,
        64,
        false,
    )
    .unwrap();
    drop(publisher);
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, json_lines(&run(config(3, 1, 4))));
    assert_eq!(stats.events as usize, written.lines().count());
    assert_eq!(
        stats.events,
        stats.glucose_readings + stats.device_telemetry
    );
    assert_eq!(stats.batches, stats.events.div_ceil(64));
}

#[test]
fn batches_respect_the_size() {
    let mut collect = CollectPublisher::default();
    let stats = stream(
        Simulator::new(config(2, 1, 4)),
        Pacing::AsFastAsPossible,
        &mut collect,
        50,
        false,
    )
    .unwrap();
    assert!(collect.batch_sizes.iter().all(|&n| (1..=50).contains(&n)));
    assert_eq!(collect.events.len() as u64, stats.events);
    assert_eq!(collect.events, run(config(2, 1, 4)));
}

#[test]
fn rate_pacing_takes_the_expected_time() {
    let mut collect = CollectPublisher::default();
    let cfg = glucoguard_simulator::SimConfig {
        duration: chrono::Duration::minutes(100),
        ..config(1, 1, 1)
    };
    let started = Instant::now();
    let stats = stream(
        Simulator::new(cfg),
        Pacing::Rate(100.0),
        &mut collect,
        1000,
        false,
    )
    .unwrap();
    let elapsed = started.elapsed();
    // ~27 events at 100/s: the last is due after (n-1)/100 s.
    let expected = Duration::from_secs_f64((stats.events - 1) as f64 / 100.0);
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_secs(2),
        "{elapsed:?} vs {expected:?}"
    );
    // Publishing before each wait: many small batches, not one big one.
    assert!(stats.batches as usize > stats.events as usize / 2);
}

#[test]
fn accelerated_pacing_follows_emission_time() {
    // Two hours of event time at 7200× should take about a second.
    let cfg = glucoguard_simulator::SimConfig {
        duration: chrono::Duration::hours(2),
        ..config(2, 1, 1)
    };
    let mut collect = CollectPublisher::default();
    let started = Instant::now();
    stream(
        Simulator::new(cfg),
        Pacing::Accelerated(7200.0),
        &mut collect,
        100,
        false,
    )
    .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_millis(800) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(
        stream(
            Simulator::new(config(1, 1, 1)),
            Pacing::Accelerated(0.0),
            &mut collect,
            1,
            false
        )
        .is_err()
    );
}

#[test]
fn stop_flag_ends_a_realtime_stream_promptly() {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let collected = Arc::new(Mutex::new(0usize));
    struct Counting(Arc<Mutex<usize>>);
    impl Publisher for Counting {
        fn publish(&mut self, events: &[glucoguard_simulator::Event]) -> anyhow::Result<()> {
            *self.0.lock().unwrap() += events.len();
            Ok(())
        }
    }
    let mut publisher = Counting(collected.clone());
    let handle = thread::spawn(move || {
        stream_until(
            Simulator::new(config(2, 1, 1)),
            Pacing::Realtime,
            &mut publisher,
            10,
            false,
            &flag,
        )
        .unwrap()
    });
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let stats = handle.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(stats.stopped);
    assert_eq!(*collected.lock().unwrap() as u64, stats.events);
}

#[test]
fn a_failing_publisher_stops_the_stream_with_its_error() {
    struct Failing;
    impl Publisher for Failing {
        fn publish(&mut self, _: &[glucoguard_simulator::Event]) -> anyhow::Result<()> {
            anyhow::bail!("queue closed")
        }
    }
    let err = stream(
        Simulator::new(config(1, 1, 1)),
        Pacing::AsFastAsPossible,
        &mut Failing,
        10,
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("queue closed"));
}

#[test]
fn seed_posts_the_dimension_data_of_the_same_seed() {
    let (url, server) = serve_at("/api/dimensions", vec![503, 200]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glucoguard-sim"))
        .args(["seed", "--patients", "6", "--seed", "7", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("seeded 6 patients"));
    let bodies = server.join().unwrap();
    assert_eq!(bodies.len(), 2, "retried once after the 503");
    let posted: Value = serde_json::from_str(&bodies[1]).unwrap();
    let expected = serde_json::to_value(glucoguard_simulator::dimensions(7, 6)).unwrap();
    assert_eq!(
        posted, expected,
        "the same document as `dims` for this seed"
    );
}

#[test]
fn wall_clock_pacing_sends_the_past_at_once_and_holds_the_future_for_its_time() {
    // Two hours of history and two hours ahead: the history arrives at once, nothing emitted
    // after "now" is published before its time (the stop flag ends the wait).
    let now = chrono::Utc::now();
    let cfg = glucoguard_simulator::SimConfig {
        start: now - chrono::Duration::hours(2),
        duration: chrono::Duration::hours(4),
        ..config(2, 1, 1)
    };
    let in_the_past = Simulator::new(cfg.clone())
        .filter(|e| e.emitted_at() <= now)
        .count();
    assert!(
        in_the_past > 40,
        "two patients, two hours of CGM: {in_the_past}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let collected = Arc::new(Mutex::new(Vec::new()));
    struct Keep(Arc<Mutex<Vec<glucoguard_simulator::Event>>>);
    impl Publisher for Keep {
        fn publish(&mut self, events: &[glucoguard_simulator::Event]) -> anyhow::Result<()> {
            self.0.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
    }
    let mut publisher = Keep(collected.clone());
    let handle = thread::spawn(move || {
        stream_until(
            Simulator::new(cfg),
            Pacing::WallClock,
            &mut publisher,
            16,
            false,
            &flag,
        )
        .unwrap()
    });
    // Wait until the history is in (generous: a loaded machine), then stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while collected.lock().unwrap().len() < in_the_past && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap();
    let sent = collected.lock().unwrap();
    assert!(stats.stopped, "the stream was still waiting for the future");
    assert!(
        sent.len() >= in_the_past,
        "{} of {in_the_past} past events",
        sent.len()
    );
    let published_at = chrono::Utc::now();
    assert!(
        sent.iter().all(|e| e.emitted_at() <= published_at),
        "an event was published before its emission time"
    );
    // The next event (CGM every 5 minutes) lies minutes ahead: none of it was sent.
    assert!(sent.len() < in_the_past + 4, "{} sent", sent.len());
}
