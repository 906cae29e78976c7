//! Robustness: no input makes parsing panic, and evaluation of anything that
//! parses terminates, never panics and yields strictly increasing instants.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use crate::schedule::{Schedule, Tz};

/// Tokens that look like cron, plus the characters that tend to break it.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,2}",
        Just("*".to_owned()),
        Just("?".to_owned()),
        Just("L".to_owned()),
        "\\*/[0-9]{1,2}",
        "[0-9]{1,2}-[0-9]{1,2}",
        "[0-9]{1,2}-[0-9]{1,2}/[0-9]{1,2}",
        "[0-9]{1,2}/[0-9]{1,2}",
        "[0-9]{1,2},[0-9]{1,2},L",
        "(MON|fri|Sun|JAN|dec|jul)(-(TUE|sat|FEB|nov))?",
        "[#LW/,*?0-9-]{1,5}",
        "20[0-9]{2}(-21[0-9]{2})?",
    ]
}

/// A whole expression in one of the supported shapes (or nearly).
fn expression() -> impl Strategy<Value = String> {
    let fields = || prop::collection::vec(token(), 1..8).prop_map(|t| t.join(" "));
    prop_oneof![
        3 => fields(),
        2 => fields().prop_map(|f| format!("cron({f})")),
        1 => ("[0-9]{1,7}", "(second|minutes|HOURS|day|weeks)").prop_map(|(n, u)| format!("rate({n} {u})")),
        1 => "[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]".prop_map(|t| format!("at({t})")),
        1 => "@[a-zA-Z]{0,9}",
    ]
}

fn any_zone() -> impl Strategy<Value = Tz> {
    (0..chrono_tz::TZ_VARIANTS.len()).prop_map(|i| chrono_tz::TZ_VARIANTS[i])
}

/// Instants from 1900 to 2300, sub-second included.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-2_208_988_800i64..10_413_792_000, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,60}") {
        let _ = Schedule::parse(&text);
    }

    #[test]
    fn evaluation_terminates_and_is_consistent(expr in expression(), tz in any_zone(), after in any_instant()) {
        let Ok(parsed) = Schedule::parse(&expr) else { return Ok(()); };
        let reparsed = Schedule::parse(&parsed.to_string());
        prop_assert_eq!(reparsed.as_ref(), Ok(&parsed));
        let upcoming = parsed.upcoming(after, tz, 4);
        let mut previous = after;
        for occurrence in upcoming {
            prop_assert!(occurrence > previous, "{} not after {}", occurrence, previous);
            // Asking from just before an occurrence finds that occurrence.
            let just_before = occurrence - TimeDelta::milliseconds(500);
            if just_before > previous {
                prop_assert_eq!(parsed.next_after(just_before, tz), Some(occurrence));
            }
            previous = occurrence;
        }
    }
}
