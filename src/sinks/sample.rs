//! Built-in sample deliveries: what `hookrelay send-test` sends, and what
//! every template is test-rendered with at start, so a template that
//! breaks on a real event is a config error rather than a dead letter.

use crate::domain::event::Event;
use crate::domain::pattern::Pattern;
use crate::store::{Claimed, Millis};

/// A Portal item-share payload, shaped like Esri's documented example.
pub const PORTAL_SAMPLE: &str = r#"{"info":{"webhookName":"hookrelay send-test","webhookId":"00000000000000000000000000000000","portalURL":"https://portal.example.org/portal/","when":1730385704521},"events":[{"username":"hookrelay-test","userId":"00000000000000000000000000000001","when":1730385704000,"operation":"share","source":"item","id":"6cd80cb32d4a4b4d858a020e57fba7b1","properties":{"sharedToGroups":["Everyone"]}}]}"#;

/// An ArcGIS Server feature-service payload.
pub const SERVICE_SAMPLE: &str = r#"{"serviceType":"FeatureServer","changesUrl":"https://server.example.org/server/rest/services/Hosted/Sample/FeatureServer/extractChanges?serverGens=%5B1,2%5D","name":"hookrelay send-test","id":"00000000-0000-0000-0000-000000000000","folderName":"Hosted","serviceName":"Sample","events":[{"eventType":"FeaturesCreated","when":1730385704000}]}"#;

/// Which sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// [`PORTAL_SAMPLE`].
    Portal,
    /// [`SERVICE_SAMPLE`].
    Service,
}

impl Sample {
    /// Both samples.
    pub const ALL: [Sample; 2] = [Sample::Portal, Sample::Service];

    /// The payload bytes.
    pub fn body(self) -> &'static str {
        match self {
            Sample::Portal => PORTAL_SAMPLE,
            Sample::Service => SERVICE_SAMPLE,
        }
    }

    /// The normalised events of the payload.
    pub fn events(self) -> Vec<Event> {
        crate::arcgis::payload::parse_json(self.body().as_bytes())
            .and_then(|doc| crate::arcgis::payload::normalise(&doc, false))
            .unwrap_or_default()
    }

    /// The sample a sink's `events` filter takes: Portal unless the filter
    /// only names service change types.
    pub fn for_patterns(patterns: Option<&[String]>) -> Sample {
        let Some(patterns) = patterns else {
            return Sample::Portal;
        };
        let parsed: Vec<Pattern> = patterns
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .collect();
        let takes = |s: Sample| {
            s.events()
                .iter()
                .any(|e| parsed.iter().any(|p| p.matches(e)))
        };
        if !takes(Sample::Portal) && takes(Sample::Service) {
            Sample::Service
        } else {
            Sample::Portal
        }
    }
}

/// A claimed delivery of `sample` from `source`, with every event matched.
/// Times are fixed so renderings are reproducible.
pub fn claimed(sample: Sample, source: &str, id: &str) -> Claimed {
    let events = sample.events();
    Claimed {
        id: id.into(),
        lease_token: "".into(),
        sink: "".into(),
        attempts: 0,
        cycle_started_at: Millis(1_730_385_705_000),
        message_id: format!("{id}-message").into(),
        source: source.into(),
        received_at: Millis(1_730_385_705_000),
        content_type: "application/json".to_string(),
        body: sample.body().as_bytes().to_vec(),
        matched: (0..events.len()).collect(),
        events,
        defect: None,
        fetch: None,
        changes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_normalise() {
        assert_eq!(Sample::Portal.events().len(), 1);
        assert_eq!(Sample::Service.events()[0].operation, "FeaturesCreated");
        let only_features = vec!["FeaturesCreated".to_string()];
        assert_eq!(Sample::for_patterns(Some(&only_features)), Sample::Service);
        assert_eq!(Sample::for_patterns(None), Sample::Portal);
    }
}
