//! Throttling policies: WSO2's defaults, seeded into every state, and the rules for
//! custom ones.

use gatehouse_proto::events::{ThrottlePolicy, throttle_policy::Level};

/// The name every level has for "no limit".
pub const UNLIMITED: &str = "Unlimited";

/// The aggregate id of a policy: `<level>-<name>`, e.g. `subscription-Gold`.
pub fn policy_id(level: Level, name: &str) -> String {
    let level = match level {
        Level::Subscription => "subscription",
        Level::Application => "application",
        Level::Api => "api",
        Level::Unspecified => "unspecified",
    };
    format!("{level}-{name}")
}

fn limited(name: &str, level: Level, count: u64, description: &str) -> ThrottlePolicy {
    ThrottlePolicy {
        name: name.to_string(),
        level: level as i32,
        request_count: count,
        unit_seconds: 60,
        unlimited: false,
        description: description.to_string(),
        built_in: true,
        aggregate_version: 0,
        last_sequence: 0,
    }
}

fn unlimited(level: Level) -> ThrottlePolicy {
    ThrottlePolicy {
        name: UNLIMITED.to_string(),
        level: level as i32,
        unlimited: true,
        description: "Allows unlimited requests".to_string(),
        built_in: true,
        ..Default::default()
    }
}

/// WSO2 API Manager's default policies.
pub fn built_in() -> Vec<ThrottlePolicy> {
    use Level::*;
    vec![
        limited(
            "Bronze",
            Subscription,
            1000,
            "Allows 1000 requests per minute",
        ),
        limited(
            "Silver",
            Subscription,
            2000,
            "Allows 2000 requests per minute",
        ),
        limited(
            "Gold",
            Subscription,
            5000,
            "Allows 5000 requests per minute",
        ),
        unlimited(Subscription),
        limited("10PerMin", Application, 10, "Allows 10 requests per minute"),
        limited("20PerMin", Application, 20, "Allows 20 requests per minute"),
        limited("50PerMin", Application, 50, "Allows 50 requests per minute"),
        unlimited(Application),
        limited("10KPerMin", Api, 10_000, "Allows 10000 requests per minute"),
        limited("20KPerMin", Api, 20_000, "Allows 20000 requests per minute"),
        limited("50KPerMin", Api, 50_000, "Allows 50000 requests per minute"),
        unlimited(Api),
    ]
}

/// Human-readable limit, e.g. `1000/60s` or `unlimited`.
pub fn describe_limit(policy: &ThrottlePolicy) -> String {
    if policy.unlimited {
        "unlimited".to_string()
    } else {
        format!("{}/{}s", policy.request_count, policy.unit_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wso2_defaults_are_seeded_with_their_limits() {
        let all = built_in();
        let find = |level: Level, name: &str| {
            all.iter()
                .find(|p| p.level() == level && p.name == name)
                .unwrap_or_else(|| panic!("{name} at {level:?} missing"))
        };
        assert_eq!(find(Level::Subscription, "Bronze").request_count, 1000);
        assert_eq!(find(Level::Subscription, "Silver").request_count, 2000);
        assert_eq!(find(Level::Subscription, "Gold").request_count, 5000);
        assert_eq!(find(Level::Application, "10PerMin").request_count, 10);
        assert_eq!(find(Level::Application, "20PerMin").request_count, 20);
        assert_eq!(find(Level::Application, "50PerMin").request_count, 50);
        assert_eq!(find(Level::Api, "10KPerMin").request_count, 10_000);
        assert_eq!(find(Level::Api, "20KPerMin").request_count, 20_000);
        assert_eq!(find(Level::Api, "50KPerMin").request_count, 50_000);
        for level in [Level::Subscription, Level::Application, Level::Api] {
            assert!(find(level, UNLIMITED).unlimited);
        }
        assert!(
            all.iter()
                .filter(|p| !p.unlimited)
                .all(|p| p.unit_seconds == 60)
        );
        assert_eq!(all.len(), 12);
    }

    #[test]
    fn limits_read_well() {
        assert_eq!(describe_limit(&built_in()[0]), "1000/60s");
        assert_eq!(describe_limit(&unlimited(Level::Api)), "unlimited");
    }
}
