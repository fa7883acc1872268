//! What a sink's HTTP answer means: the generic status rule and the
//! `Retry-After` header. The "should we retry" half; when to retry is
//! `dispatch::retry`'s.

use std::time::{Duration, SystemTime};

use crate::domain::delivery::Verdict;

/// Classifies an HTTP status: 2xx delivered; 408, 425, 429 and 5xx retried;
/// every other status permanent.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 425 | 429 | 500..=599 => Verdict::Retry { after: retry_after },
        _ => Verdict::Permanent,
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date in any of
/// the three forms RFC 9110 says a recipient must accept (IMF-fixdate,
/// RFC 850, asctime), by the `httpdate` crate. A date in the past is now.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_as_the_contract_says() {
        assert_eq!(classify_status(200, None), Verdict::Delivered);
        assert_eq!(classify_status(204, None), Verdict::Delivered);
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert!(
                matches!(classify_status(s, None), Verdict::Retry { .. }),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(classify_status(s, None), Verdict::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = humantime::parse_rfc3339("2015-10-21T07:27:00Z").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_takes_every_http_date_form() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:27:00 GMT").unwrap();
        for form in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(
                parse_retry_after(form, now),
                Some(Duration::from_secs(60)),
                "{form}"
            );
        }
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }
}
