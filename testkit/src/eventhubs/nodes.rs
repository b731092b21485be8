//! The request/response nodes: `$cbs` (put-token, answered 202 as the service does; tokens
//! are not checked) and `$management` (READ of `com.microsoft:eventhub` and
//! `com.microsoft:partition`, answered 200 with the service's keys and AMQP types).

use fe2o3_amqp_types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};

use super::store::Namespace;

/// Which request/response node a link belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestNode {
    Cbs,
    Management,
}

/// The reply to one request: status code, description and body.
#[derive(Debug)]
struct Reply {
    status: i32,
    description: String,
    body: Value,
}

impl Reply {
    fn error(status: i32, description: impl Into<String>) -> Self {
        Self {
            status,
            description: description.into(),
            body: Value::Null,
        }
    }
}

/// Answers a request on `$cbs` or `$management`. The reply's `correlation-id` is the
/// request's `message-id` and its `to` the request's `reply-to`, as the service sets them.
pub fn answer(
    node: RequestNode,
    request: &Message<Body<Value>>,
    namespace: &Namespace,
) -> Message<Body<Value>> {
    let property = |key: &str| -> Option<String> {
        match request.application_properties.as_ref()?.0.get(key)? {
            SimpleValue::String(s) => Some(s.clone()),
            SimpleValue::Symbol(s) => Some(s.0.clone()),
            _ => None,
        }
    };
    let operation = property("operation").unwrap_or_default();
    let reply = match node {
        RequestNode::Cbs if operation == "put-token" => Reply {
            status: 202,
            description: "Accepted".into(),
            body: Value::Null,
        },
        RequestNode::Cbs => Reply::error(400, format!("Unknown CBS operation '{operation}'.")),
        RequestNode::Management if operation != "READ" => Reply::error(
            400,
            format!("The management operation '{operation}' is not supported."),
        ),
        RequestNode::Management => read(
            namespace,
            &property("type").unwrap_or_default(),
            &property("name").unwrap_or_default(),
            property("partition").as_deref(),
        ),
    };
    tracing::debug!(?node, %operation, status = reply.status, "request answered");
    let mut message = Message::builder()
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(reply.status))
                .insert("status-description", reply.description)
                .build(),
        )
        .body(Body::Value(AmqpValue(reply.body)))
        .build();
    let request_properties = request.properties.as_ref();
    message.properties = Some(Properties {
        correlation_id: request_properties
            .and_then(|p| p.message_id.clone().or_else(|| p.correlation_id.clone())),
        to: request_properties.and_then(|p| p.reply_to.clone()),
        ..Default::default()
    });
    message
}

/// A management READ of a hub or of one of its partitions.
fn read(namespace: &Namespace, entity_type: &str, name: &str, partition: Option<&str>) -> Reply {
    let Some(hub) = namespace.hub(name) else {
        return Reply::error(
            404,
            format!("The messaging entity '{name}' could not be found."),
        );
    };
    let s = |v: &str| Value::String(v.to_owned());
    let mut map: OrderedMap<Value, Value> = OrderedMap::new();
    match entity_type {
        "com.microsoft:eventhub" => {
            map.insert(s("name"), s(&hub.name));
            map.insert(s("type"), s(entity_type));
            map.insert(
                s("created_at"),
                Value::Timestamp(Timestamp::from_milliseconds(hub.created_ms)),
            );
            map.insert(
                s("partition_count"),
                Value::Int(hub.partitions.len() as i32),
            );
            let ids: Vec<Value> = (0..hub.partitions.len())
                .map(|i| Value::String(i.to_string()))
                .collect();
            map.insert(s("partition_ids"), Value::Array(Array::from(ids)));
        }
        "com.microsoft:partition" => {
            let id = partition.unwrap_or_default();
            let Some((_, p)) = hub.partition(id) else {
                return Reply::error(
                    404,
                    format!("The partition '{id}' of '{}' could not be found.", hub.name),
                );
            };
            let info = p.info();
            map.insert(s("name"), s(&hub.name));
            map.insert(s("type"), s(entity_type));
            map.insert(s("partition"), s(id));
            map.insert(
                s("begin_sequence_number"),
                Value::Long(info.beginning_sequence_number),
            );
            map.insert(
                s("last_enqueued_sequence_number"),
                Value::Long(info.last_enqueued_sequence_number),
            );
            // Geo-replication epoch of the last sequence number; 0 outside geo-replication.
            map.insert(s("last_enqueued_sequence_number_epoch"), Value::Long(0));
            map.insert(
                s("last_enqueued_offset"),
                s(&info.last_enqueued_offset.to_string()),
            );
            map.insert(
                s("last_enqueued_time_utc"),
                Value::Timestamp(Timestamp::from_milliseconds(info.last_enqueued_ms)),
            );
            map.insert(s("is_partition_empty"), Value::Bool(info.is_empty));
        }
        other => {
            return Reply::error(400, format!("The entity type '{other}' is not supported."));
        }
    }
    Reply {
        status: 200,
        description: "OK".into(),
        body: Value::Map(map),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(props: &[(&str, &str)]) -> Message<Body<Value>> {
        let mut ap = ApplicationProperties::builder();
        for (k, v) in props {
            ap = ap.insert(*k, SimpleValue::String((*v).to_owned()));
        }
        let mut m = Message::builder()
            .application_properties(ap.build())
            .body(Body::Value(AmqpValue(Value::Null)))
            .build();
        m.properties = Some(Properties {
            message_id: Some(fe2o3_amqp_types::messaging::MessageId::Ulong(7)),
            reply_to: Some("reply-here".into()),
            ..Default::default()
        });
        m
    }

    fn status(m: &Message<Body<Value>>) -> &SimpleValue {
        m.application_properties
            .as_ref()
            .unwrap()
            .0
            .get("status-code")
            .unwrap()
    }

    fn body(m: &Message<Body<Value>>) -> &OrderedMap<Value, Value> {
        match &m.body {
            Body::Value(AmqpValue(Value::Map(map))) => map,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn put_token_is_answered_202_and_correlated() {
        let ns = Namespace::new([("h", 1)]);
        let reply = answer(
            RequestNode::Cbs,
            &request(&[("operation", "put-token")]),
            &ns,
        );
        assert_eq!(status(&reply), &SimpleValue::Int(202));
        let p = reply.properties.unwrap();
        assert_eq!(
            p.correlation_id,
            Some(fe2o3_amqp_types::messaging::MessageId::Ulong(7))
        );
        assert_eq!(p.to.as_deref(), Some("reply-here"));
    }

    #[test]
    fn reads_are_typed_as_the_service_types_them() {
        let ns = Namespace::new([("Hub", 2)]);
        let hub = answer(
            RequestNode::Management,
            &request(&[
                ("operation", "READ"),
                ("type", "com.microsoft:eventhub"),
                ("name", "hub"),
            ]),
            &ns,
        );
        assert_eq!(status(&hub), &SimpleValue::Int(200));
        let map = body(&hub);
        let get = |k: &str| map.get(&Value::String(k.into())).unwrap();
        assert_eq!(get("name"), &Value::String("Hub".into()));
        assert!(matches!(get("created_at"), Value::Timestamp(_)));
        assert_eq!(get("partition_count"), &Value::Int(2));
        assert_eq!(
            get("partition_ids"),
            &Value::Array(Array::from(vec![
                Value::String("0".into()),
                Value::String("1".into())
            ]))
        );

        let partition = answer(
            RequestNode::Management,
            &request(&[
                ("operation", "READ"),
                ("type", "com.microsoft:partition"),
                ("name", "Hub"),
                ("partition", "1"),
            ]),
            &ns,
        );
        let map = body(&partition);
        let get = |k: &str| map.get(&Value::String(k.into())).unwrap();
        assert_eq!(get("begin_sequence_number"), &Value::Long(-1));
        assert_eq!(get("last_enqueued_offset"), &Value::String("-1".into()));
        assert!(matches!(get("last_enqueued_time_utc"), Value::Timestamp(_)));
        assert_eq!(get("is_partition_empty"), &Value::Bool(true));

        let missing = answer(
            RequestNode::Management,
            &request(&[
                ("operation", "READ"),
                ("type", "com.microsoft:partition"),
                ("name", "Hub"),
                ("partition", "2"),
            ]),
            &ns,
        );
        assert_eq!(status(&missing), &SimpleValue::Int(404));
    }
}
