//! Connections, sessions and links: SASL, then one task per session accepting attaches, and
//! one task per link: publishing into a partition, delivering a partition to a receiver, or
//! answering `$cbs` / `$management` requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SessionAcceptor,
    SupportedReceiverSettleModes,
    sasl_acceptor::{SaslAcceptor, SaslServerFrame},
};
use fe2o3_amqp::{Receiver, Sendable, Sender};
use fe2o3_amqp_types::definitions::{
    self, AmqpError, ErrorCondition, LinkError, ReceiverSettleMode, Role,
};
use fe2o3_amqp_types::messaging::{
    Body, Message, MessageAnnotations, TargetArchetype,
    annotations::OwnedKey,
    message::__private::{Deserializable, Serializable},
};
use fe2o3_amqp_types::primitives::{Array, Symbol, Timestamp, Value};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};

use super::address::{self, Node, Start};
use super::nodes::{self, RequestNode};
use super::store::{Event, Hub, Namespace, Partition};
use super::wire::FullFrames;

/// The message format of an Event Hubs batch: one data section per encoded event.
pub const BATCH_FORMAT: u32 = 0x8001_3700;

/// The largest message (a batch counts as one) a producer may send: Event Hubs' 1 MiB.
const MAX_MESSAGE_BYTES: u64 = 1024 * 1024;

/// How long a request waits for its reply link to attach.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(5);

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    pub namespace: Namespace,
    pub container_id: String,
    pub settle_delay: Duration,
    /// Becomes `true` when the server stops.
    pub stopping: watch::Receiver<bool>,
}

/// SASL: ANONYMOUS and PLAIN, any credentials (the endpoint cannot check SAS keys; the
/// clients authorise through `$cbs` afterwards anyway).
#[derive(Debug, Clone)]
struct AnyCredentials;

impl SaslAcceptor for AnyCredentials {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("ANONYMOUS"), Symbol::from("PLAIN")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        tracing::debug!(mechanism = %init.mechanism.0, "SASL init");
        let code = match init.mechanism.0.as_str() {
            "ANONYMOUS" | "PLAIN" => SaslCode::Ok,
            _ => SaslCode::Auth,
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        })
    }
}

/// Serves one TCP connection until the peer closes it or the server stops.
pub async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let acceptor = ConnectionAcceptor::builder()
        .container_id(shared.container_id.clone())
        .max_frame_size(65_536u32)
        .sasl_acceptor(AnyCredentials)
        .build();
    let mut connection = match acceptor
        .accept(FullFrames::new(stream, peer.map_or(0, |p| p.port())))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(?peer, error = %e, "connection not opened");
            return;
        }
    };
    tracing::debug!(?peer, "connection opened");
    let sessions = SessionAcceptor::new();
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            session = sessions.accept(&mut connection) => match session {
                Ok(session) => {
                    tokio::spawn(serve_session(session, shared.clone()));
                }
                Err(e) => {
                    tracing::debug!(?peer, reason = %e, "connection ends");
                    break;
                }
            },
            _ = until_stopped(&mut stopping) => break,
        }
    }
    let _ = connection.close().await;
}

/// The reply links of one session's request/response nodes, by the address the client gave
/// them (its `reply-to`) and by node. Each reply link is driven by its own task, which also
/// answers the client's detach at once.
#[derive(Debug, Default)]
struct ReplyLinks {
    links: Mutex<HashMap<String, mpsc::Sender<Message<Body<Value>>>>>,
    attached: Notify,
}

impl ReplyLinks {
    fn insert(self: &Arc<Self>, keys: Vec<String>, mut sender: Sender) {
        let (tx, mut replies) = mpsc::channel::<Message<Body<Value>>>(16);
        {
            let mut links = self.links.lock().expect("reply links lock");
            for key in &keys {
                links.insert(key.clone(), tx.clone());
            }
        }
        self.attached.notify_waiters();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    reply = replies.recv() => {
                        let Some(reply) = reply else { break };
                        // Sent settled, the outcome not awaited: the Python client never
                        // settles replies.
                        let sendable = Sendable::builder().message(reply).settled(true).build();
                        if let Err(e) = sender.send_batchable(sendable).await {
                            tracing::info!(error = %e, "reply not sent");
                            break;
                        }
                    }
                    reason = sender.on_detach() => {
                        tracing::debug!(%reason, "reply link detached");
                        break;
                    }
                }
            }
            let mut links = this.links.lock().expect("reply links lock");
            links.retain(|_, link| !link.same_channel(&tx));
        });
    }

    /// The link to answer on: the one attached with the request's `reply-to`, else the one
    /// on the same node; waits a little for it, since a client may attach it just after
    /// sending.
    async fn get(&self, keys: &[String]) -> Option<mpsc::Sender<Message<Body<Value>>>> {
        let wait = async {
            loop {
                let attached = self.attached.notified();
                {
                    let links = self.links.lock().expect("reply links lock");
                    if let Some(link) = keys.iter().find_map(|k| links.get(k)) {
                        return link.clone();
                    }
                }
                attached.await;
            }
        };
        tokio::time::timeout(REPLY_LINK_WAIT, wait).await.ok()
    }
}

/// Resolves once the server stops.
pub async fn until_stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

fn node_key(node: RequestNode) -> String {
    format!("node:{node:?}")
}

async fn serve_session(mut session: ListenerSessionHandle, shared: Arc<Shared>) {
    let links = LinkAcceptor::builder()
        .max_message_size(MAX_MESSAGE_BYTES)
        // Event Hubs settles a producer's message with its first disposition. The Python
        // client asks for `second` but then waits for a settled outcome, so the endpoint
        // answers `first` whatever is asked, as the service does.
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build();
    let replies = Arc::new(ReplyLinks::default());
    let mut stopping = shared.stopping.clone();
    loop {
        let attach = tokio::select! {
            attach = session.next_incoming_attach() => match attach {
                Some(attach) => attach,
                None => break,
            },
            _ = until_stopped(&mut stopping) => break,
        };
        let role = attach.role.clone();
        let (address, filter, owner_level) = match role {
            // The client receives: the address is the source.
            Role::Receiver => {
                let source = attach.source.as_deref();
                (
                    source.and_then(|s| s.address.clone()),
                    source.and_then(|s| s.filter.as_ref()).and_then(selector),
                    attach
                        .properties
                        .as_ref()
                        .and_then(|p| p.get(&Symbol::from("com.microsoft:epoch")))
                        .and_then(owner_level),
                )
            }
            Role::Sender => {
                let target = attach.target.as_deref().and_then(|t| match t {
                    TargetArchetype::Target(t) => t.address.clone(),
                    #[allow(unreachable_patterns)]
                    _ => None,
                });
                (target, None, None)
            }
        };
        // A reply link is known by its target (the client's reply-to address).
        let reply_to = attach.target.as_deref().and_then(|t| match t {
            TargetArchetype::Target(t) => t.address.clone(),
            #[allow(unreachable_patterns)]
            _ => None,
        });
        let address = address.unwrap_or_default();
        tracing::debug!(name = %attach.name, ?role, %address, ?filter, ?owner_level, "attach");
        let endpoint = match links.accept_incoming_attach(attach, &mut session).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::info!(%address, error = %e, "attach failed");
                continue;
            }
        };
        let shared = shared.clone();
        match (address::parse(&address), endpoint) {
            (Some(Node::Cbs), LinkEndpoint::Receiver(rx)) => {
                tokio::spawn(serve_requests(
                    rx,
                    RequestNode::Cbs,
                    replies.clone(),
                    shared,
                ));
            }
            (Some(Node::Management), LinkEndpoint::Receiver(rx)) => {
                tokio::spawn(serve_requests(
                    rx,
                    RequestNode::Management,
                    replies.clone(),
                    shared,
                ));
            }
            (Some(Node::Cbs), LinkEndpoint::Sender(tx)) => {
                let keys: Vec<String> = reply_to
                    .into_iter()
                    .chain([node_key(RequestNode::Cbs)])
                    .collect();
                replies.insert(keys, tx);
            }
            (Some(Node::Management), LinkEndpoint::Sender(tx)) => {
                let keys: Vec<String> = reply_to
                    .into_iter()
                    .chain([node_key(RequestNode::Management)])
                    .collect();
                replies.insert(keys, tx);
            }
            (Some(Node::Hub { hub, partition }), LinkEndpoint::Receiver(rx)) => {
                tokio::spawn(async move {
                    match resolve_publish(&shared.namespace, &hub, partition.as_deref()) {
                        Ok((hub, partition)) => publish(rx, hub, partition, shared).await,
                        Err(error) => refuse_receiver(rx, error).await,
                    }
                });
            }
            (
                Some(Node::ConsumerGroup {
                    hub,
                    consumer_group,
                    partition: Some(partition),
                }),
                LinkEndpoint::Sender(tx),
            ) => {
                tokio::spawn(async move {
                    let Some(hub) = shared.namespace.hub(&hub).cloned() else {
                        return refuse_sender(tx, not_found(&format!("hub '{hub}'"))).await;
                    };
                    let Some((index, _)) = hub.partition(&partition) else {
                        return refuse_sender(tx, not_found(&format!("partition '{partition}'")))
                            .await;
                    };
                    let start = filter.unwrap_or(Start::Latest);
                    deliver(tx, hub, consumer_group, index, start, owner_level, shared).await;
                });
            }
            (_, LinkEndpoint::Sender(tx)) => {
                tokio::spawn(refuse_sender(tx, not_found(&format!("'{address}'"))));
            }
            (_, LinkEndpoint::Receiver(rx)) => {
                tokio::spawn(refuse_receiver(rx, not_found(&format!("'{address}'"))));
            }
        }
    }
    let _ = session.end().await;
}

/// The start position of a receiver's selector filter, whatever its descriptor (the Rust
/// client sends the numeric one, the Python client the symbolic one).
fn selector(filters: &fe2o3_amqp_types::messaging::FilterSet) -> Option<Start> {
    filters.iter().find_map(|(_, value)| {
        let expression = match value {
            Value::Described(d) => match &d.value {
                Value::String(s) => s.as_str(),
                _ => return None,
            },
            Value::String(s) => s.as_str(),
            _ => return None,
        };
        let start = address::parse_selector(expression);
        if start.is_none() {
            tracing::warn!(%expression, "selector filter not understood; starting at the end");
        }
        start
    })
}

fn owner_level(value: &Value) -> Option<i64> {
    match value {
        Value::Long(v) => Some(*v),
        Value::Int(v) => Some(i64::from(*v)),
        Value::Uint(v) => Some(i64::from(*v)),
        Value::Ulong(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

fn not_found(what: &str) -> definitions::Error {
    definitions::Error::new(
        AmqpError::NotFound,
        Some(format!("The messaging entity {what} could not be found.")),
        None,
    )
}

async fn refuse_sender(tx: Sender, error: definitions::Error) {
    tracing::info!(%error, "receiver refused");
    let _ = tx.close_with_error(error).await;
}

async fn refuse_receiver(rx: Receiver, error: definitions::Error) {
    tracing::info!(%error, "sender refused");
    let _ = rx.close_with_error(error).await;
}

fn resolve_publish(
    namespace: &Namespace,
    hub: &str,
    partition: Option<&str>,
) -> Result<(Arc<Hub>, Option<usize>), definitions::Error> {
    let found = namespace
        .hub(hub)
        .cloned()
        .ok_or_else(|| not_found(&format!("hub '{hub}'")))?;
    match partition {
        None => Ok((found, None)),
        Some(id) => {
            let (index, _) = found
                .partition(id)
                .ok_or_else(|| not_found(&format!("partition '{id}' of '{hub}'")))?;
            Ok((found.clone(), Some(index)))
        }
    }
}

/// Accepts a producer's delivery once it is stored, after `settle_delay`: `fe2o3-amqp`
/// before 0.18.2 (the Rust client's 0.16.2 among them) can miss a disposition that arrives
/// before it has registered the delivery, which happens on loopback; the service's network
/// latency hides it. The delay runs in its own task, so it does not slow the link down.
fn accept_later(
    disposer: fe2o3_amqp::link::receiver::ReceiverDisposer,
    info: fe2o3_amqp::link::delivery::DeliveryInfo,
    delay: Duration,
) {
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Err(e) = disposer.accept(info).await {
            tracing::debug!(error = %e, "disposition not sent");
        }
    });
}

/// Takes a producer's messages into a partition: the given one, else by partition key or
/// round-robin per message.
async fn publish(mut rx: Receiver, hub: Arc<Hub>, partition: Option<usize>, shared: Arc<Shared>) {
    let disposer = rx.disposer();
    loop {
        let delivery = match rx.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(e) => {
                tracing::debug!(hub = %hub.name, reason = %e, "producer link ends");
                return;
            }
        };
        let format = delivery.message_format().unwrap_or(0);
        let (info, envelope) = delivery.into_parts();
        match events_of(envelope, format) {
            Ok((events, key)) => {
                let index = partition.unwrap_or_else(|| hub.partition_for(key.as_deref()));
                let count = events.len();
                hub.partitions[index].append(events, key.as_deref());
                tracing::debug!(hub = %hub.name, partition = index, count, "events stored");
                accept_later(disposer.clone(), info, shared.settle_delay);
            }
            Err(reason) => {
                tracing::info!(hub = %hub.name, %reason, "message rejected");
                let error = definitions::Error::new(AmqpError::DecodeError, Some(reason), None);
                tokio::time::sleep(shared.settle_delay).await;
                if let Err(e) = rx.reject(info, Some(error)).await {
                    tracing::debug!(error = %e, "disposition not sent");
                }
            }
        }
    }
}

/// The events a message carries, each with its encoded size, and the partition key: a batch
/// (format 0x80013700) holds one encoded event per data section, anything else is one
/// event. The key is the envelope's `x-opt-partition-key`, else the first event's.
#[allow(clippy::type_complexity)]
fn events_of(
    envelope: Message<Body<Value>>,
    format: u32,
) -> Result<(Vec<(Message<Body<Value>>, usize)>, Option<String>), String> {
    let mut key = partition_key(&envelope);
    let events = if format == BATCH_FORMAT {
        let Body::Data(sections) = envelope.body else {
            return Err("a batch must carry data sections".into());
        };
        sections
            .into_iter()
            .map(|data| {
                serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(&data.0)
                    .map(|m| (m.0, data.0.len()))
                    .map_err(|e| format!("a batch entry is not an AMQP message: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let len = serde_amqp::to_vec(&Serializable(&envelope)).map_or(1, |b| b.len());
        vec![(envelope, len)]
    };
    if key.is_none() {
        key = events.first().and_then(|(m, _)| partition_key(m));
    }
    Ok((events, key))
}

fn annotation(name: &str) -> OwnedKey {
    OwnedKey::Symbol(Symbol::from(name))
}

fn partition_key(message: &Message<Body<Value>>) -> Option<String> {
    match message
        .message_annotations
        .as_ref()?
        .0
        .get(&annotation("x-opt-partition-key"))?
    {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// The index of the first event a receiver gets.
fn start_index(partition: &Partition, start: &Start) -> usize {
    match *start {
        Start::Latest => partition.event_count(),
        Start::Offset { offset, inclusive } => partition.position(|e| {
            if inclusive {
                e.offset >= offset
            } else {
                e.offset > offset
            }
        }),
        Start::SequenceNumber {
            sequence_number,
            inclusive,
        } => partition.position(|e| {
            if inclusive {
                e.sequence_number >= sequence_number
            } else {
                e.sequence_number > sequence_number
            }
        }),
        Start::EnqueuedTime { ms, inclusive } => partition.position(|e| {
            if inclusive {
                e.enqueued_ms >= ms
            } else {
                e.enqueued_ms > ms
            }
        }),
    }
}

/// The event as delivered: the stored message with the service's annotations.
fn delivered(event: &Event) -> Message<Body<Value>> {
    let mut message = event.message.clone();
    let mut annotations = message
        .message_annotations
        .take()
        .unwrap_or_else(|| MessageAnnotations(Default::default()));
    annotations.0.insert(
        annotation("x-opt-sequence-number"),
        Value::Long(event.sequence_number),
    );
    annotations.0.insert(
        annotation("x-opt-offset"),
        Value::String(event.offset.to_string()),
    );
    annotations.0.insert(
        annotation("x-opt-enqueued-time"),
        Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)),
    );
    match &event.partition_key {
        Some(key) => {
            annotations.0.insert(
                annotation("x-opt-partition-key"),
                Value::String(key.clone()),
            );
        }
        None => {
            annotations
                .0
                .swap_remove(&annotation("x-opt-partition-key"));
        }
    }
    message.message_annotations = Some(annotations);
    message
}

fn stolen(description: String) -> definitions::Error {
    definitions::Error::new(
        ErrorCondition::LinkError(LinkError::Stolen),
        Some(description),
        None,
    )
}

/// Delivers a partition to a receiver from its start position, then live, as its credit
/// allows, until it detaches, a receiver with a higher owner level takes over, or the
/// server stops.
async fn deliver(
    mut tx: Sender,
    hub: Arc<Hub>,
    consumer_group: String,
    index: usize,
    start: Start,
    owner_level: Option<i64>,
    shared: Arc<Shared>,
) {
    let mut claim = match hub.owners.claim(&consumer_group, index, owner_level) {
        Ok(claim) => claim,
        Err(description) => return refuse_sender(tx, stolen(description)).await,
    };
    let partition = &hub.partitions[index];
    let mut grown = partition.watch();
    grown.borrow_and_update();
    let mut next = start_index(partition, &start);
    let mut stopping = shared.stopping.clone();
    tracing::debug!(hub = %hub.name, %consumer_group, partition = index, ?start, next, "receiver attached");
    loop {
        let events = partition.events_from(next);
        if events.is_empty() {
            tokio::select! {
                changed = grown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    grown.borrow_and_update();
                }
                displaced = &mut claim.disconnected => {
                    if let Ok(description) = displaced {
                        let _ = tx.close_with_error(stolen(description)).await;
                    }
                    return;
                }
                reason = tx.on_detach() => {
                    tracing::debug!(hub = %hub.name, partition = index, %reason, "receiver detached");
                    return;
                }
                _ = until_stopped(&mut stopping) => return,
            }
            continue;
        }
        for event in events {
            let sendable = Sendable::builder().message(delivered(&event)).build();
            tokio::select! {
                sent = tx.send_batchable(sendable) => match sent {
                    // The outcome is not awaited: a consumer's position is its offset, as in
                    // Event Hubs, not its dispositions.
                    Ok(_outcome) => next += 1,
                    Err(e) => {
                        tracing::debug!(hub = %hub.name, partition = index, reason = %e, "receiver gone");
                        return;
                    }
                },
                displaced = &mut claim.disconnected => {
                    if let Ok(description) = displaced {
                        let _ = tx.close_with_error(stolen(description)).await;
                    }
                    return;
                }
                _ = until_stopped(&mut stopping) => return,
            }
        }
    }
}

/// Answers the requests of one `$cbs` or `$management` link on the session's reply link.
async fn serve_requests(
    mut rx: Receiver,
    node: RequestNode,
    replies: Arc<ReplyLinks>,
    shared: Arc<Shared>,
) {
    loop {
        let delivery = match rx.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(e) => {
                tracing::debug!(?node, reason = %e, "request link ends");
                return;
            }
        };
        if !shared.settle_delay.is_zero() {
            tokio::time::sleep(shared.settle_delay).await;
        }
        if let Err(e) = rx.accept(&delivery).await {
            tracing::debug!(?node, error = %e, "request not settled");
        }
        let request = delivery.into_message();
        let reply = nodes::answer(node, &request, &shared.namespace);
        let reply_to: Vec<String> = request
            .properties
            .as_ref()
            .and_then(|p| p.reply_to.clone())
            .into_iter()
            .chain([node_key(node)])
            .collect();
        let Some(link) = replies.get(&reply_to).await else {
            tracing::info!(?node, "no reply link attached; request dropped");
            continue;
        };
        if link.send(reply).await.is_err() {
            tracing::info!(?node, "reply link gone; reply dropped");
        }
    }
}
