//! The official Python client (`azure-eventhub` 5.15.1 from PyPI, unpatched) against the
//! endpoint, used the way a notebook uses it: `tests/python/roundtrip.py`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use glucoguard_testkit::eventhubs::partition_for_key;
use tokio::process::Command;

use super::endpoint;

const PIP_HINT: &str = "the Python client is missing: run `pip install azure-eventhub==5.15.1` \
                        (or `python3 -m pip install azure-eventhub==5.15.1`)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_round_trips_a_batch_of_json_readings() {
    let has_client = Command::new("python3")
        .args(["-c", "import azure.eventhub"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(has_client, "{PIP_HINT}");

    // Once: the endpoint announces an Ethernet-sized MSS, so the client's read-back of its
    // socket options (which Linux refuses for a loopback MSS) no longer fails.
    let server = endpoint(&[("glucose_readings", 3)]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/roundtrip.py");
    let run = Command::new("python3")
        .arg(&script)
        .arg(server.connection_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("roundtrip.py finished within 120 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "roundtrip.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line"))
            .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"));
    assert_eq!(summary["received"], 9, "{summary}");
    // The key went to the partition the documented hash names.
    let expected = partition_for_key("patient-8", 3).to_string();
    assert_eq!(
        summary["key_partitions"]["patient-8"],
        serde_json::json!([expected])
    );
    server.shutdown().await;
}
