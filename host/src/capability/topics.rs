//! `[sandbox] topics`, `subscriptions` and `max_topics`: which topics a
//! connector may publish to or consume from, under which subscription
//! names, and how many.
//!
//! A guest names its topics and subscriptions in `open`. Unchecked, it could
//! attach to another connector's subscription (taking its messages), publish
//! into any topic, or open thousands of topics, each costing the host
//! producers, a consumer and metric series. The checks run on `open`'s
//! answer, before anything is created, and a refusal stops the connector as
//! a configuration error naming the topic and the rule.

use crate::config::SandboxConfig;
use crate::contract::{IngressSetup, Opened};

/// The patterns themselves, when the configuration is read.
pub fn check_patterns(sandbox: &SandboxConfig) -> Result<(), String> {
    for (key, patterns) in [
        ("sandbox.topics", &sandbox.topics),
        ("sandbox.subscriptions", &sandbox.subscriptions),
    ] {
        for pattern in patterns {
            glob::Pattern::new(pattern)
                .map_err(|e| format!("`{key}`: {pattern:?} is not a pattern: {e}"))?;
        }
    }
    Ok(())
}

/// Whether `sandbox` lets the connector open what `opened` names.
pub fn check_opened(sandbox: &SandboxConfig, opened: &Opened) -> Result<(), String> {
    let (kind, named): (&str, Vec<(&str, Option<&str>)>) = match opened {
        Opened::Source(producers) | Opened::Ingress(IngressSetup { producers, .. }) => (
            "publish to",
            producers.iter().map(|p| (p.topic.as_str(), None)).collect(),
        ),
        Opened::Sink(consumers) => (
            "consume",
            consumers
                .iter()
                .map(|c| (c.topic.as_str(), Some(c.subscription.as_str())))
                .collect(),
        ),
    };
    if named.len() > sandbox.max_topics as usize {
        return Err(format!(
            "the connector asks to {kind} {} topics, more than [sandbox] max_topics = {}; raise it if that many are meant",
            named.len(),
            sandbox.max_topics
        ));
    }
    for (topic, subscription) in named {
        if !matches_any(&sandbox.topics, topic) {
            return Err(format!(
                "the connector asks to {kind} {topic:?}, which [sandbox] topics = {:?} does not allow",
                sandbox.topics
            ));
        }
        if let Some(subscription) = subscription
            && !matches_any(&sandbox.subscriptions, subscription)
        {
            return Err(format!(
                "the connector asks to consume {topic:?} as subscription {subscription:?}, which [sandbox] subscriptions = {:?} does not allow",
                sandbox.subscriptions
            ));
        }
    }
    Ok(())
}

/// An empty list allows everything.
fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .any(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{ConsumerConfig, ProducerConfig, SubscriptionType};

    fn source(topics: &[&str]) -> Opened {
        Opened::Source(
            topics
                .iter()
                .map(|t| ProducerConfig {
                    topic: t.to_string(),
                    partitions: 0,
                    reliable: true,
                    schema_subject: None,
                })
                .collect(),
        )
    }

    fn sink(topic: &str, subscription: &str) -> Opened {
        Opened::Sink(vec![ConsumerConfig {
            topic: topic.into(),
            subscription: subscription.into(),
            subscription_type: SubscriptionType::Shared,
            expected_schema_subject: None,
            decode_avro: false,
        }])
    }

    #[test]
    fn topics_subscriptions_and_counts_are_checked() {
        let open = SandboxConfig::default();
        assert!(check_opened(&open, &source(&["/any/topic"])).is_ok());
        let sandbox = SandboxConfig {
            topics: vec!["/default/pg-*".into()],
            subscriptions: vec!["pg-sink".into()],
            max_topics: 2,
            ..SandboxConfig::default()
        };
        assert!(check_opened(&sandbox, &source(&["/default/pg-a", "/default/pg-b"])).is_ok());
        let refused = check_opened(&sandbox, &source(&["/default/other"])).unwrap_err();
        assert!(refused.contains("\"/default/other\""), "{refused}");
        let refused = check_opened(&sandbox, &source(&["/default/pg-a"; 3])).unwrap_err();
        assert!(refused.contains("max_topics = 2"), "{refused}");
        assert!(check_opened(&sandbox, &sink("/default/pg-a", "pg-sink")).is_ok());
        let refused = check_opened(&sandbox, &sink("/default/pg-a", "theirs")).unwrap_err();
        assert!(refused.contains("subscription \"theirs\""), "{refused}");
    }

    #[test]
    fn a_broken_pattern_is_a_configuration_error() {
        let sandbox = SandboxConfig {
            topics: vec!["/default/[".into()],
            ..SandboxConfig::default()
        };
        assert!(
            check_patterns(&sandbox)
                .unwrap_err()
                .contains("sandbox.topics")
        );
    }
}
