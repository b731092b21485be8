//! What a link's address names: `$cbs`, `$management`, a hub, a hub's partition, or a
//! consumer group's partition; and the start position a receiver's selector filter asks for.

/// The node a link attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Cbs,
    Management,
    /// `hub` (the endpoint picks the partition) or `hub/Partitions/N`.
    Hub {
        hub: String,
        partition: Option<String>,
    },
    /// `hub/ConsumerGroups/GROUP/Partitions/N` (receivers).
    ConsumerGroup {
        hub: String,
        consumer_group: String,
        partition: Option<String>,
    },
}

/// Parses a link address. The clients send `amqps://NAMESPACE/PATH` (or `amqp://…`) or the
/// bare path; the namespace is not checked, since a local endpoint serves one.
pub fn parse(address: &str) -> Option<Node> {
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => address,
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is = |i: usize, word: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(word));
    match parts.as_slice() {
        [node] if node.eq_ignore_ascii_case("$cbs") => Some(Node::Cbs),
        [node] if node.eq_ignore_ascii_case("$management") => Some(Node::Management),
        [hub] => Some(Node::Hub {
            hub: (*hub).to_owned(),
            partition: None,
        }),
        [hub, _, partition] if is(1, "Partitions") => Some(Node::Hub {
            hub: (*hub).to_owned(),
            partition: Some((*partition).to_owned()),
        }),
        [hub, _, group] if is(1, "ConsumerGroups") => Some(Node::ConsumerGroup {
            hub: (*hub).to_owned(),
            consumer_group: (*group).to_owned(),
            partition: None,
        }),
        [hub, _, group, _, partition] if is(1, "ConsumerGroups") && is(3, "Partitions") => {
            Some(Node::ConsumerGroup {
                hub: (*hub).to_owned(),
                consumer_group: (*group).to_owned(),
                partition: Some((*partition).to_owned()),
            })
        }
        _ => None,
    }
}

/// Where a receiver starts, from its `apache.org:selector-filter:string` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Only events enqueued after the receiver attached (`@latest`).
    Latest,
    /// Events whose offset is greater (or, inclusive, not less) than this.
    Offset { offset: i64, inclusive: bool },
    SequenceNumber {
        sequence_number: i64,
        inclusive: bool,
    },
    /// Milliseconds since the Unix epoch.
    EnqueuedTime { ms: i64, inclusive: bool },
}

/// Parses `amqp.annotation.x-opt-offset > '-1'` and its siblings, as both clients write them
/// (with or without a space after the operator). `None` when the expression is not one of
/// these.
pub fn parse_selector(expression: &str) -> Option<Start> {
    let expression = expression.trim();
    let rest = expression.strip_prefix("amqp.annotation.")?;
    let end = rest.find(|c: char| c == '>' || c.is_whitespace())?;
    let (annotation, rest) = (&rest[..end], rest[end..].trim_start());
    let (inclusive, rest) = if let Some(r) = rest.strip_prefix(">=") {
        (true, r)
    } else {
        (false, rest.strip_prefix('>')?)
    };
    let value = rest.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    if annotation.eq_ignore_ascii_case("x-opt-offset") && value == "@latest" {
        return Some(Start::Latest);
    }
    let n: i64 = value.parse().ok()?;
    match annotation.to_ascii_lowercase().as_str() {
        "x-opt-offset" => Some(Start::Offset {
            offset: n,
            inclusive,
        }),
        "x-opt-sequence-number" => Some(Start::SequenceNumber {
            sequence_number: n,
            inclusive,
        }),
        "x-opt-enqueued-time" => Some(Start::EnqueuedTime { ms: n, inclusive }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_node() {
        assert_eq!(parse("$cbs"), Some(Node::Cbs));
        assert_eq!(parse("$management"), Some(Node::Management));
        assert_eq!(
            parse("amqps://ns.servicebus.windows.net/glucose_readings"),
            Some(Node::Hub {
                hub: "glucose_readings".into(),
                partition: None
            })
        );
        assert_eq!(
            parse("amqp://127.0.0.1:5672/alerts/Partitions/0"),
            Some(Node::Hub {
                hub: "alerts".into(),
                partition: Some("0".into())
            })
        );
        assert_eq!(
            parse("amqps://ns/alerts/ConsumerGroups/$Default/Partitions/1"),
            Some(Node::ConsumerGroup {
                hub: "alerts".into(),
                consumer_group: "$Default".into(),
                partition: Some("1".into())
            })
        );
        assert_eq!(parse("amqps://ns/a/b/c/d/e/f"), None);
    }

    #[test]
    fn selectors_of_both_clients_parse() {
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '-1'"),
            Some(Start::Offset {
                offset: -1,
                inclusive: false
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '@latest'"),
            Some(Start::Latest)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-sequence-number >='12'"),
            Some(Start::SequenceNumber {
                sequence_number: 12,
                inclusive: true
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-enqueued-time >'1700000000000'"),
            Some(Start::EnqueuedTime {
                ms: 1_700_000_000_000,
                inclusive: false
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset>= '20'"),
            Some(Start::Offset {
                offset: 20,
                inclusive: true
            })
        );
        assert_eq!(parse_selector("amqp.annotation.x-opt-offset < '1'"), None);
        assert_eq!(parse_selector("sys.foo > '1'"), None);
    }
}
