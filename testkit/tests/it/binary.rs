//! The `glucoguard-testkit` binary: prints the connection string first, serves the real
//! client, and stops cleanly on SIGTERM.

use std::process::Stdio;

use azure_messaging_eventhubs::ProducerClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::within;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_its_connection_string_first_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glucoguard-testkit"))
        .args([
            "eventhubs",
            "--listen",
            "127.0.0.1:0",
            "--hub",
            "glucose_readings:3",
            "--hub",
            "alerts:1",
            "--namespace",
            "local",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = within("the first line", lines.next_line())
        .await
        .unwrap()
        .expect("a first line");
    let port: u16 = first
        .strip_prefix("Endpoint=sb://127.0.0.1:")
        .and_then(|rest| rest.split_once(';'))
        .map(|(port, _)| port.parse().expect("a port"))
        .unwrap_or_else(|| panic!("not a connection string: {first}"));
    assert_ne!(port, 0, "the bound port is printed, not 0");
    assert!(
        first.ends_with(
            ";SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
        ),
        "{first}"
    );

    let producer = within(
        "opening a producer",
        ProducerClient::builder()
            .with_custom_endpoint(format!("amqp://127.0.0.1:{port}"))
            .open_with_connection_string(&first, Some("glucose_readings")),
    )
    .await
    .expect("the producer opens");
    let props = within("reading hub properties", producer.get_eventhub_properties())
        .await
        .unwrap();
    assert_eq!(props.partition_ids, ["0", "1", "2"]);
    within("closing the producer", producer.close())
        .await
        .unwrap();

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = within("the binary stopping", child.wait()).await.unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn the_binary_refuses_a_bad_hub_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_glucoguard-testkit"))
        .args(["eventhubs", "--listen", "127.0.0.1:0", "--hub", "alerts"])
        .output();
    let out = within("the binary exiting", out).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAME:PARTITIONS"), "{err}");
}
