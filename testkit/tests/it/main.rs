//! The testkit's integration tests: the real clients against the endpoint. Every client
//! call runs under a timeout, since a client waiting for an answer that never comes hangs
//! silently.

mod binary;
mod python_client;
mod rust_client;

use std::future::Future;
use std::time::Duration;

use azure_messaging_eventhubs::models::{EventData, ReceivedEventData};
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, ProducerClient, StartLocation, StartPosition,
};
use futures::StreamExt;
use glucoguard_testkit::eventhubs::{Config, Server, ServerHandle};

/// The longest any one client step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

/// How long a receiver must stay quiet to show that nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(700);

/// Runs one client step, failing the test if it does not finish within [`STEP`].
pub async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, step).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts an endpoint on a free loopback port with these hubs.
pub async fn endpoint(hubs: &[(&str, usize)]) -> ServerHandle {
    init_logs();
    let mut config = Config::new("127.0.0.1:0".parse().unwrap());
    for (name, partitions) in hubs {
        config = config.hub(name, *partitions);
    }
    Server::start(config).await.expect("the endpoint starts")
}

/// A producer on `hub`, configured the way the host must configure it: the printed
/// connection string plus `with_custom_endpoint("amqp://127.0.0.1:PORT")`.
pub async fn producer(server: &ServerHandle, hub: &str) -> ProducerClient {
    within(
        "opening a producer",
        ProducerClient::builder()
            .with_custom_endpoint(server.endpoint())
            .open_with_connection_string(&server.connection_string(), Some(hub)),
    )
    .await
    .expect("the producer opens")
}

pub async fn consumer(server: &ServerHandle, hub: &str, group: &str) -> ConsumerClient {
    within(
        "opening a consumer",
        ConsumerClient::builder()
            .with_consumer_group(group.to_owned())
            .with_custom_endpoint(server.endpoint())
            .open_with_connection_string(&server.connection_string(), Some(hub)),
    )
    .await
    .expect("the consumer opens")
}

pub fn earliest() -> StartPosition {
    StartPosition {
        location: StartLocation::Earliest,
        inclusive: false,
    }
}

pub fn options(start: StartPosition) -> OpenReceiverOptions {
    OpenReceiverOptions {
        start_position: Some(start),
        ..Default::default()
    }
}

/// Receives exactly `count` events from a partition, then checks that no further event
/// arrives within [`QUIET`].
pub async fn receive_exactly(
    consumer: &ConsumerClient,
    partition: &str,
    options: OpenReceiverOptions,
    count: usize,
) -> Vec<ReceivedEventData> {
    let receiver = within(
        "opening a receiver",
        consumer.open_receiver_on_partition(partition.to_owned(), Some(options)),
    )
    .await
    .expect("the receiver opens");
    let mut events = Vec::with_capacity(count);
    {
        let mut stream = receiver.stream_events();
        while events.len() < count {
            let event = within(
                &format!(
                    "receiving event {} of {count} on partition {partition}",
                    events.len() + 1
                ),
                stream.next(),
            )
            .await
            .expect("the stream goes on")
            .expect("an event, not an error");
            events.push(event);
        }
        if let Ok(extra) = tokio::time::timeout(QUIET, stream.next()).await {
            panic!(
                "partition {partition}: expected {count} events, got one more: {:?}",
                extra.map(|e| e.map(|e| body(&e)))
            );
        }
    }
    within("closing a receiver", receiver.close())
        .await
        .expect("the receiver closes");
    events
}

pub fn body(event: &ReceivedEventData) -> String {
    String::from_utf8(event.event_data().body().expect("a body").to_vec()).expect("UTF-8 body")
}

/// One JSON glucose reading, as a producer would send it.
pub fn reading(patient: u32, i: u32) -> String {
    format!(
        r#"{{"reading_id":"r-{patient}-{i}","patient_id":{patient},"device_id":{},"glucose_level":{}.0,"timestamp":"2026-11-28T10:{:02}:00Z"}}"#,
        1000 + patient,
        90 + i,
        i % 60
    )
}

pub fn event(body: String) -> EventData {
    EventData::builder().with_body(body.into_bytes()).build()
}
