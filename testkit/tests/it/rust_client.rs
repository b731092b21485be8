//! The official Rust client (`azure_messaging_eventhubs` 0.16) against the endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use azure_messaging_eventhubs::error::ErrorKind;
use azure_messaging_eventhubs::{
    EventDataBatchOptions, OpenReceiverOptions, SendEventOptions, StartLocation, StartPosition,
};
use futures::StreamExt;
use glucoguard_testkit::eventhubs::partition_for_key;

use super::*;

const HUBS: [(&str, usize); 3] = [
    ("glucose_readings", 4),
    ("device_readings", 3),
    ("alerts", 2),
];

async fn send_to_partition(producer: &ProducerClient, partition: &str, bodies: &[String]) {
    for b in bodies {
        within(
            "sending an event",
            producer.send_event(
                event(b.clone()),
                Some(SendEventOptions {
                    partition_id: Some(partition.to_owned()),
                }),
            ),
        )
        .await
        .expect("the event is sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_partition_properties_read_back_exactly() {
    let before = SystemTime::now() - Duration::from_secs(1);
    let server = endpoint(&HUBS).await;
    for (hub, partitions) in HUBS {
        let producer = producer(&server, hub).await;
        let props = within("reading hub properties", producer.get_eventhub_properties())
            .await
            .expect("hub properties");
        assert_eq!(props.name, hub);
        let ids: Vec<String> = (0..partitions).map(|i| i.to_string()).collect();
        assert_eq!(props.partition_ids, ids);
        let created = props.created_on.expect("created_at is a timestamp");
        assert!(
            created >= before && created <= SystemTime::now(),
            "{created:?}"
        );

        let empty = within(
            "reading partition properties",
            producer.get_partition_properties("1"),
        )
        .await
        .expect("partition properties");
        assert_eq!(empty.id, "1");
        assert_eq!(empty.eventhub, hub);
        assert!(empty.is_empty);
        assert_eq!(empty.last_enqueued_sequence_number, -1);
        assert_eq!(empty.last_enqueued_offset, "-1");

        let bodies: Vec<String> = (0..3).map(|i| reading(7, i)).collect();
        send_to_partition(&producer, "1", &bodies).await;
        let consumer = consumer(&server, hub, "$Default").await;
        let events = receive_exactly(&consumer, "1", options(earliest()), 3).await;
        let last = events.last().unwrap();
        // The consumer reads the same properties as the producer.
        let props = within(
            "reading partition properties",
            consumer.get_partition_properties("1"),
        )
        .await
        .expect("partition properties");
        assert!(!props.is_empty);
        assert_eq!(props.beginning_sequence_number, 0);
        assert_eq!(props.last_enqueued_sequence_number, 2);
        assert_eq!(Some(&props.last_enqueued_offset), last.offset().as_ref());
        assert_eq!(props.last_enqueued_time_utc, last.enqueued_time());
        let hub_props = within("reading hub properties", consumer.get_eventhub_properties())
            .await
            .unwrap();
        assert_eq!(hub_props.partition_ids.len(), partitions);
        within("closing the consumer", consumer.close())
            .await
            .unwrap();
        within("closing the producer", producer.close())
            .await
            .unwrap();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_batches_round_trip_on_every_hub_and_a_key_keeps_its_partition() {
    let server = endpoint(&HUBS).await;
    for (hub, partitions) in HUBS {
        let producer = producer(&server, hub).await;
        // Two batches per patient key, three readings each, so a key is sent more than once.
        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for round in 0..2 {
            for patient in 1..=6u32 {
                let key = format!("patient-{patient}");
                let batch = within(
                    "creating a batch",
                    producer.create_batch(Some(EventDataBatchOptions {
                        partition_key: Some(key.clone()),
                        ..Default::default()
                    })),
                )
                .await
                .expect("a batch");
                for i in 0..3 {
                    let body = reading(patient, round * 3 + i);
                    assert!(batch.try_add_event_data(event(body.clone()), None).unwrap());
                    sent.entry(key.clone()).or_default().push(body);
                }
                within("sending a batch", producer.send_batch(batch, None))
                    .await
                    .expect("the batch is sent");
            }
        }
        // Every key's events, in order, on exactly the partition its hash names.
        let mut expected_per_partition = vec![0usize; partitions];
        for key in sent.keys() {
            expected_per_partition[partition_for_key(key, partitions)] += sent[key].len();
        }
        let consumer = consumer(&server, hub, "$Default").await;
        let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut partition_of: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (p, expected) in expected_per_partition.iter().enumerate() {
            let events =
                receive_exactly(&consumer, &p.to_string(), options(earliest()), *expected).await;
            for e in events {
                let key = e.partition_key().clone().expect("the key comes back");
                partition_of.entry(key.clone()).or_default().insert(p);
                received.entry(key).or_default().push(body(&e));
            }
        }
        assert_eq!(received, sent, "{hub}: bodies intact and in order per key");
        for (key, ps) in &partition_of {
            assert_eq!(
                ps,
                &BTreeSet::from([partition_for_key(key, partitions)]),
                "{hub}: key {key}"
            );
        }
        within("closing the consumer", consumer.close())
            .await
            .unwrap();
        within("closing the producer", producer.close())
            .await
            .unwrap();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_resumes_exactly_after_an_offset_or_sequence_number() {
    let server = endpoint(&[("glucose_readings", 2)]).await;
    let producer = producer(&server, "glucose_readings").await;
    let bodies: Vec<String> = (0..8).map(|i| reading(3, i)).collect();
    send_to_partition(&producer, "0", &bodies).await;
    // Events without a key and without a partition go round-robin over both partitions.
    for i in 0..4 {
        within(
            "sending an event",
            producer.send_event(event(reading(9, i)), None),
        )
        .await
        .unwrap();
    }
    let consumer = consumer(&server, "glucose_readings", "$Default").await;
    let all = receive_exactly(&consumer, "0", options(earliest()), 10).await;
    let seqs: Vec<i64> = all.iter().map(|e| e.sequence_number().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..10).collect::<Vec<i64>>(),
        "sequence numbers count up from 0"
    );
    let offsets: Vec<String> = all.iter().map(|e| e.offset().clone().unwrap()).collect();
    let numeric: Vec<i64> = offsets.iter().map(|o| o.parse().unwrap()).collect();
    assert!(
        numeric.windows(2).all(|w| w[0] < w[1]),
        "offsets increase: {offsets:?}"
    );
    assert!(all.iter().all(|e| e.enqueued_time().is_some()));
    let other = receive_exactly(&consumer, "1", options(earliest()), 2).await;
    assert_eq!(
        other
            .iter()
            .map(|e| e.sequence_number().unwrap())
            .collect::<Vec<_>>(),
        [0, 1]
    );

    let bodies_from = |k: usize| all[k..].iter().map(body).collect::<Vec<_>>();
    for k in [0usize, 4, 9] {
        for inclusive in [false, true] {
            let first = if inclusive { k } else { k + 1 };
            for location in [
                StartLocation::Offset(offsets[k].clone()),
                StartLocation::SequenceNumber(seqs[k]),
            ] {
                let start = StartPosition {
                    location: location.clone(),
                    inclusive,
                };
                let got = receive_exactly(&consumer, "0", options(start), 10 - first).await;
                assert_eq!(
                    got.iter().map(body).collect::<Vec<_>>(),
                    bodies_from(first),
                    "from {location:?}, inclusive {inclusive}"
                );
            }
        }
    }
    // From an enqueued time: every event enqueued at or after the k-th one's time.
    let t = all[4].enqueued_time().unwrap();
    let expected: Vec<String> = all
        .iter()
        .filter(|e| e.enqueued_time().unwrap() >= t)
        .map(body)
        .collect();
    let start = StartPosition {
        location: StartLocation::EnqueuedTime(t),
        inclusive: true,
    };
    let got = receive_exactly(&consumer, "0", options(start), expected.len()).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), expected);
    within("closing the consumer", consumer.close())
        .await
        .unwrap();
    within("closing the producer", producer.close())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumer_groups_each_get_every_event() {
    let server = endpoint(&[("alerts", 1)]).await;
    let producer = producer(&server, "alerts").await;
    let bodies: Vec<String> = (0..5).map(|i| reading(1, i)).collect();
    send_to_partition(&producer, "0", &bodies).await;
    for group in ["$Default", "notifier"] {
        let consumer = consumer(&server, "alerts", group).await;
        let got = receive_exactly(&consumer, "0", options(earliest()), 5).await;
        assert_eq!(
            got.iter().map(body).collect::<Vec<_>>(),
            bodies,
            "group {group}"
        );
        within("closing the consumer", consumer.close())
            .await
            .unwrap();
    }
    within("closing the producer", producer.close())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_owner_level_disconnects_the_first_receiver_and_a_lower_one_is_refused() {
    let server = endpoint(&[("glucose_readings", 1)]).await;
    let producer = producer(&server, "glucose_readings").await;
    send_to_partition(&producer, "0", &[reading(1, 0)]).await;
    // One client per receiver, as two processes would have: a client keeps one link per
    // partition and shares it between its receivers.
    let first_client = consumer(&server, "glucose_readings", "$Default").await;
    let second_client = consumer(&server, "glucose_readings", "$Default").await;
    let third_client = consumer(&server, "glucose_readings", "$Default").await;
    let with_level = |level| OpenReceiverOptions {
        owner_level: Some(level),
        ..options(earliest())
    };
    let first = within(
        "opening the first receiver",
        first_client.open_receiver_on_partition("0".into(), Some(with_level(1))),
    )
    .await
    .unwrap();
    let mut first_events = first.stream_events();
    within("the first receiver's event", first_events.next())
        .await
        .unwrap()
        .expect("the first receiver gets the event");

    let second = within(
        "opening the second receiver",
        second_client.open_receiver_on_partition("0".into(), Some(with_level(2))),
    )
    .await
    .unwrap();
    let mut second_events = second.stream_events();
    within("the second receiver's event", second_events.next())
        .await
        .unwrap()
        .expect("the second receiver gets the event");

    let displaced = within("the first receiver's next item", first_events.next())
        .await
        .expect("the first receiver hears about it");
    let error = displaced.expect_err("the first receiver sees an error, not an event");
    assert!(
        matches!(error.kind, ErrorKind::ConsumerDisconnected(Some(_))),
        "a displaced receiver is told so: {error:?}"
    );

    let lower = within(
        "opening a lower-level receiver",
        third_client.open_receiver_on_partition("0".into(), Some(with_level(0))),
    )
    .await
    .unwrap();
    let refused = within(
        "the lower-level receiver's first item",
        lower.stream_events().next(),
    )
    .await
    .expect("an answer");
    let error = refused.expect_err("a lower owner level is refused");
    assert!(
        matches!(error.kind, ErrorKind::ConsumerDisconnected(Some(_))),
        "{error:?}"
    );

    // The owner still receives live events.
    send_to_partition(&producer, "0", &[reading(1, 1)]).await;
    let live = within("the owner's live event", second_events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body(&live), reading(1, 1));
    drop(first_events);
    drop(second_events);
    for client in [first_client, second_client, third_client] {
        within("closing a consumer", client.close()).await.unwrap();
    }
    within("closing the producer", producer.close())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_a_receiver_is_attached_arrive_live_within_its_credit() {
    let server = endpoint(&[("device_readings", 2)]).await;
    let producer = producer(&server, "device_readings").await;
    send_to_partition(&producer, "1", &[reading(2, 0)]).await;
    let consumer = consumer(&server, "device_readings", "$Default").await;
    // A prefetch of 2: the endpoint sends no more than the credit the client grants.
    let receiver = within(
        "opening a receiver",
        consumer.open_receiver_on_partition(
            "1".into(),
            Some(OpenReceiverOptions {
                prefetch: Some(2),
                ..options(earliest())
            }),
        ),
    )
    .await
    .unwrap();
    let mut events = receiver.stream_events();
    let first = within("the stored event", events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body(&first), reading(2, 0));
    // The receiver is attached now: what is sent from here on arrives live.
    let live: Vec<String> = (1..=10).map(|i| reading(2, i)).collect();
    let send = async {
        for b in &live {
            within(
                "sending a live event",
                producer.send_event(
                    event(b.clone()),
                    Some(SendEventOptions {
                        partition_id: Some("1".into()),
                    }),
                ),
            )
            .await
            .unwrap();
        }
    };
    let receive = async {
        let mut got = Vec::new();
        while got.len() < live.len() {
            let e = within("a live event", events.next())
                .await
                .unwrap()
                .unwrap();
            got.push(body(&e));
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    assert_eq!(got, live);
    drop(events);
    within("closing the receiver", receiver.close())
        .await
        .unwrap();
    within("closing the consumer", consumer.close())
        .await
        .unwrap();
    within("closing the producer", producer.close())
        .await
        .unwrap();
    server.shutdown().await;
}
