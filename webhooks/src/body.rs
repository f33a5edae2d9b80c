//! The JSON a subscriber receives, in Standard Webhooks' `{type, timestamp, data}` shape. Small:
//! the change and links to the api, never scorecard's full output.

use fleet_proto::v1::{WebhookDelivery, WebhookKind};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Body<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the delivery was made (the same on every retry).
    pub timestamp: String,
    pub data: Data<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Data<'a> {
    Change(Change<'a>),
    Ping { subscription_id: &'a str },
}

#[derive(Debug, Serialize)]
pub struct Change<'a> {
    pub repo: &'a str,
    pub previous_score: Option<f64>,
    pub score: Option<f64>,
    /// The checks whose score changed; a first score lists every check.
    pub checks: Vec<CheckChange<'a>>,
    pub commit: &'a str,
    pub scored_at: Option<String>,
    /// The repository's first score.
    pub first: bool,
    pub links: Links,
}

#[derive(Debug, Serialize)]
pub struct CheckChange<'a> {
    pub name: &'a str,
    pub previous: Option<i32>,
    pub score: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct Links {
    /// The repository's score, in the public Scorecard API's shape.
    pub project: String,
    pub history: String,
    pub badge: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("a score_changed delivery without its event")]
    NoEvent,
    #[error("unknown delivery kind {0}")]
    Kind(i32),
}

fn rfc3339(t: &fleet_proto::Timestamp) -> String {
    fleet_proto::datetime(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The body of `delivery`, with links under `api` (the api's public base URL).
pub fn render(delivery: &WebhookDelivery, api: &str) -> Result<Vec<u8>, BodyError> {
    let timestamp = delivery
        .created_at
        .as_ref()
        .map(rfc3339)
        .unwrap_or_default();
    let body = match WebhookKind::try_from(delivery.kind) {
        Ok(WebhookKind::Ping) => Body {
            kind: "ping",
            timestamp,
            data: Data::Ping {
                subscription_id: &delivery.subscription_id,
            },
        },
        Ok(WebhookKind::ScoreChanged) => {
            let event = delivery.event.as_ref().ok_or(BodyError::NoEvent)?;
            let project = format!("{}/projects/{}", api.trim_end_matches('/'), event.repo);
            Body {
                kind: "score_changed",
                timestamp,
                data: Data::Change(Change {
                    repo: &event.repo,
                    previous_score: event.previous_score,
                    score: event.score,
                    checks: event
                        .checks
                        .iter()
                        .map(|c| CheckChange {
                            name: &c.name,
                            previous: c.previous,
                            score: c.score,
                        })
                        .collect(),
                    commit: &event.commit,
                    scored_at: event.scored_at.as_ref().map(rfc3339),
                    first: event.first,
                    links: Links {
                        history: format!("{project}/history"),
                        badge: format!("{project}/badge"),
                        project,
                    },
                }),
            }
        }
        _ => return Err(BodyError::Kind(delivery.kind)),
    };
    Ok(serde_json::to_vec(&body).expect("a body serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::{CheckChange as Check, ScoreChanged};

    #[test]
    fn a_change_is_small_and_links_to_the_api() {
        let delivery = WebhookDelivery {
            webhook_id: "msg_1".into(),
            subscription_id: "s".into(),
            kind: WebhookKind::ScoreChanged as i32,
            event: Some(ScoreChanged {
                repo: "github.com/ossf/scorecard".into(),
                previous_score: Some(7.5),
                score: Some(6.1),
                checks: vec![Check {
                    name: "Code-Review".into(),
                    previous: Some(9),
                    score: Some(4),
                }],
                commit: "abc".into(),
                scored_at: Some(fleet_proto::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            created_at: Some(fleet_proto::Timestamp {
                seconds: 1_700_000_100,
                nanos: 5,
            }),
        };
        let body = render(&delivery, "https://scores.example/").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "score_changed");
        assert_eq!(v["timestamp"], "2023-11-14T22:15:00Z");
        assert_eq!(v["data"]["score"], 6.1);
        assert_eq!(v["data"]["previous_score"], 7.5);
        assert_eq!(v["data"]["checks"][0]["name"], "Code-Review");
        assert_eq!(
            v["data"]["links"]["project"],
            "https://scores.example/projects/github.com/ossf/scorecard"
        );
        assert!(body.len() < 1024, "{}", body.len());
        let ping = render(&fleet_runtime::webhook::ping(uuid::Uuid::nil()), "http://a").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&ping).unwrap();
        assert_eq!(v["type"], "ping");
        assert!(render(&WebhookDelivery::default(), "http://a").is_err());
    }
}
