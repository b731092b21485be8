//! The running MQTT source: one task polls the connection (rumqttc's event loop, never
//! cancelled mid-poll) and hands what it yields to a second task, which feeds the pipeline.
//! A full pipeline queue blocks the second, which blocks the first: the connection is not
//! polled until there is room, and the broker holds back once `receive_maximum` messages are
//! unacknowledged.
//!
//! Acknowledgements: the poller gives every QoS 1 message a ticket in the connection's
//! [`InOrderAcks`] as it arrives; the item's `Ack` completes it and releases the completed
//! prefix to the event loop as PUBACKs, under the queue's lock, so they are queued in arrival
//! order. When the connection fails the poller voids every ticket (a new generation) *and
//! then* cleans the event loop again, which drops any PUBACK queued for the dead connection:
//! a packet id is never acknowledged on a connection that did not deliver it.

use super::MqttSourceConfig;
use super::acks::{InOrderAcks, Pending, Settle, Ticket};
use crate::sources::{Ack, RunningSource, SourceError, SourceItem, SourceTaskSide, StatusCell};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// How long, after our DISCONNECT, the broker has to close the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// First wait before reconnecting; doubles up to `reconnect_max`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// What the poller and the acknowledgements share.
struct Shared {
    client: AsyncClient,
    acks: Mutex<InOrderAcks<u16>>,
    status: Arc<StatusCell>,
    /// Signalled whenever no message of the current connection waits in the pipeline.
    settled: Notify,
}

impl Shared {
    fn acks(&self) -> MutexGuard<'_, InOrderAcks<u16>> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues PUBACKs for the completed prefix, oldest first. Called with the lock held, so
    /// two callers never interleave theirs. A full request queue keeps the rest for the next
    /// call (the poller retries after every event).
    fn release(&self, q: &mut InOrderAcks<u16>) {
        let n = q.release(|&pkid| self.client.try_ack(&puback_for(pkid)).is_ok());
        if n > 0 {
            self.status
                .acknowledged_upstream
                .fetch_add(n as u64, Ordering::AcqRel);
        }
        if q.waiting() == 0 {
            self.settled.notify_one();
        }
    }

    fn settle(&self, ticket: Ticket, durable: bool) {
        let mut q = self.acks();
        let changed = if durable {
            q.complete(ticket)
        } else {
            q.abandon(ticket)
        };
        if changed {
            self.release(&mut q);
        }
    }
}

/// What `try_ack` needs of a QoS 1 message: its packet id.
fn puback_for(pkid: u16) -> Publish {
    let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new(), None);
    p.pkid = pkid;
    p
}

impl Settle for Shared {
    fn settle(&self, ticket: Ticket, durable: bool) {
        Shared::settle(self, ticket, durable)
    }
    fn status(&self) -> &StatusCell {
        &self.status
    }
}

/// What the poller hands on.
enum Polled {
    Connected {
        session_present: bool,
    },
    Publish(Publish, Option<Pending<Shared>>),
    SubAck(Vec<SubscribeReasonCode>),
    Lost {
        error: String,
        unacknowledged: usize,
        retry_in: Duration,
    },
    /// Our DISCONNECT went out: the poller has ended.
    Disconnected,
}

pub(super) fn start(
    config: MqttSourceConfig,
    options: MqttOptions,
    input: mpsc::Sender<SourceItem>,
) -> RunningSource {
    let (control, side) = crate::sources::control(&config.name, "mqtt");
    // Room for a PUBACK per message the broker may send unacknowledged, the subscriptions and
    // the DISCONNECT: releasing acknowledgements never waits.
    let (client, eventloop) = AsyncClient::new(options, usize::from(config.receive_maximum) + 16);
    let shared = Arc::new(Shared {
        client,
        acks: Mutex::new(InOrderAcks::default()),
        status: side.status.clone(),
        settled: Notify::new(),
    });
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(poll_broker(
        eventloop,
        shared.clone(),
        tx,
        side.stop.clone(),
        config.reconnect_max,
    ));
    let task = tokio::spawn(feed(config, shared, rx, input, side));
    RunningSource::new(control, task)
}

/// Polls the connection until our DISCONNECT is sent, the feeder is gone, or the connection
/// fails after a stop. Reconnects with capped exponential backoff.
async fn poll_broker(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Polled>,
    mut stop: watch::Receiver<bool>,
    reconnect_max: Duration,
) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let event = eventloop.poll().await;
        if tx.is_closed() {
            return;
        }
        {
            let mut q = shared.acks();
            if q.releasable() {
                shared.release(&mut q);
            }
        }
        let polled = match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let pending = match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce | QoS::ExactlyOnce => {
                        let ticket = shared.acks().push(p.pkid);
                        Some(Pending::new(shared.clone(), ticket))
                    }
                };
                Polled::Publish(p, pending)
            }
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                backoff = INITIAL_BACKOFF;
                Polled::Connected {
                    session_present: c.session_present,
                }
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => Polled::SubAck(s.return_codes),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Our last PUBACKs and the DISCONNECT are written. Read until the broker
                // closes (messages it still sends are not acknowledged and come again):
                // closing a socket with unread data resets the connection, and the broker
                // may then lose what we wrote last.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while eventloop.poll().await.is_ok() {}
                })
                .await;
                let _ = tx.send(Polled::Disconnected).await;
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                // The connection is gone, and with it its packet ids: void every ticket,
                // then drop whatever PUBACK was queued for it in the meantime.
                let unacknowledged = {
                    let mut q = shared.acks();
                    let n = q.reset();
                    shared.settled.notify_one();
                    n
                };
                eventloop.clean();
                let lost = Polled::Lost {
                    error: e.to_string(),
                    unacknowledged,
                    retry_in: backoff,
                };
                if tx.send(lost).await.is_err() || *stop.borrow() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(reconnect_max);
                continue;
            }
        };
        if tx.send(polled).await.is_err() {
            return;
        }
    }
}

/// Hands messages to the pipeline until stopped, then waits until everything it handed over
/// has settled (the pipeline drained), so the last PUBACKs are queued, and disconnects.
async fn feed(
    config: MqttSourceConfig,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Polled>,
    input: mpsc::Sender<SourceItem>,
    mut side: SourceTaskSide,
) -> Result<(), SourceError> {
    let name = config.name.as_str();
    let filters: Vec<Filter> = config
        .topic_filters()
        .into_iter()
        .map(|path| Filter {
            path,
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            // A resubscription after a reconnect does not send retained messages again.
            retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        })
        .collect();
    let mut stopping = false;
    let mut connects = 0u64;
    loop {
        if stopping && shared.acks().waiting() == 0 {
            break;
        }
        let polled = tokio::select! {
            biased;
            _ = side.stopped(), if !stopping => {
                stopping = true;
                side.close_intake();
                continue;
            }
            _ = shared.settled.notified(), if stopping => continue,
            polled = rx.recv() => match polled {
                Some(p) => p,
                None => break,
            },
        };
        match polled {
            Polled::Publish(p, pending) => {
                if stopping {
                    // Not taken: left unacknowledged, the broker redelivers it.
                    continue;
                }
                let topic = String::from_utf8_lossy(&p.topic);
                let ack = match pending {
                    Some(pending) => Ack::new(move || pending.durable()),
                    None => {
                        let status = shared.status.clone();
                        Ack::new(move || {
                            status.acknowledged.fetch_add(1, Ordering::AcqRel);
                        })
                    }
                };
                let item = SourceItem {
                    payload: p.payload.to_vec(),
                    origin: Arc::from(format!("mqtt:{topic}").as_str()),
                    takeover: 0,
                    ack,
                };
                shared.status.received.fetch_add(1, Ordering::AcqRel);
                let sent = tokio::select! {
                    biased;
                    _ = side.stopped() => false,
                    sent = input.send(item) => sent.is_ok(),
                };
                if !sent {
                    shared.status.received.fetch_sub(1, Ordering::AcqRel);
                    stopping = true;
                    side.close_intake();
                }
            }
            Polled::Connected { session_present } => {
                connects += 1;
                shared.status.connects.fetch_add(1, Ordering::AcqRel);
                if connects > 1 && !session_present {
                    tracing::warn!(source = name, client_id = %config.client_id, "the broker kept no session for this client (expired or lost): messages published while the host was away may be missing");
                } else {
                    tracing::info!(source = name, host = %config.host, port = config.port, client_id = %config.client_id, session_present, "mqtt connected");
                }
                if stopping {
                    continue;
                }
                if let Err(e) = shared.client.subscribe_many(filters.clone()).await {
                    tracing::error!(source = name, error = %e, "mqtt subscribe could not be queued");
                }
            }
            Polled::SubAck(codes) => {
                let refused: Vec<String> = codes
                    .iter()
                    .zip(config.topic_filters())
                    .filter(|(c, _)| !matches!(c, SubscribeReasonCode::Success(_)))
                    .map(|(c, f)| format!("{f}: {c:?}"))
                    .collect();
                if refused.is_empty() {
                    shared.status.set_error(None);
                    if !stopping {
                        shared.status.taking_input.store(true, Ordering::Release);
                    }
                } else {
                    let message = format!("subscription refused: {}", refused.join(", "));
                    tracing::error!(source = name, reason = %message, "mqtt subscription refused by the broker");
                    shared.status.set_error(Some(message));
                }
            }
            Polled::Lost {
                error,
                unacknowledged,
                retry_in,
            } => {
                shared.status.taking_input.store(false, Ordering::Release);
                tracing::warn!(source = name, host = %config.host, port = config.port, error = %error, unacknowledged, retry_in_ms = retry_in.as_millis() as u64, "mqtt connection lost or refused; reconnecting (unacknowledged messages are redelivered)");
                shared.status.set_error(Some(error));
            }
            Polled::Disconnected => return Ok(()),
        }
    }
    side.close_intake();
    // Everything handed over has settled and its PUBACKs are queued ahead of this
    // DISCONNECT on the same request queue, so the broker receives them first.
    let _ = shared.client.try_disconnect();
    while let Some(p) = rx.recv().await {
        if matches!(p, Polled::Disconnected) {
            tracing::info!(
                source = name,
                acknowledged = shared.status.acknowledged_upstream.load(Ordering::Acquire),
                "mqtt source stopped after its last acknowledgement"
            );
            break;
        }
    }
    Ok(())
}
