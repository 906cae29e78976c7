use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_apply_when_unset() {
    let s = Settings::from_map(&env(&[])).unwrap();
    assert_eq!(s.concurrency, defaults::CONCURRENCY);
    assert_eq!(s.lookahead, Duration::from_secs(defaults::LOOKAHEAD_SECS));
    assert!(s.queue_url.is_none());
}

#[test]
fn invalid_numbers_name_the_variable() {
    let err = Settings::from_map(&env(&[("SUNDIAL_CONCURRENCY", "lots")])).unwrap_err();
    assert!(err.to_string().contains("SUNDIAL_CONCURRENCY"), "{err}");
    let err = Settings::from_map(&env(&[("SUNDIAL_PAGE_SIZE", "0")])).unwrap_err();
    assert!(err.to_string().contains("between 1 and 10000"), "{err}");
    let err = Settings::from_map(&env(&[("SUNDIAL_CONCURRENCY", "1.5")])).unwrap_err();
    assert!(err.to_string().contains("not a whole number"), "{err}");
    // A fractional setting is not asked to be whole.
    let err = Settings::from_map(&env(&[("SUNDIAL_RETRY_BUDGET", "lots")])).unwrap_err();
    assert!(err.to_string().contains("SUNDIAL_RETRY_BUDGET"), "{err}");
    assert!(err.to_string().contains("not a number"), "{err}");
    let s = Settings::from_map(&env(&[("SUNDIAL_RETRY_BUDGET", "0.25")])).unwrap();
    assert_eq!(s.flow.retry_budget, 0.25);
    // Slow start is on (from 4) unless turned off.
    let s = Settings::from_map(&env(&[])).unwrap();
    assert_eq!(s.flow.initial_limit, 4);
    assert!(s.flow.initial_limit < s.flow.per_flow_cap);
    let s = Settings::from_map(&env(&[("SUNDIAL_FLOW_SLOW_START", "16")])).unwrap();
    assert_eq!(s.flow.initial_limit, 16);
    let s = Settings::from_map(&env(&[("SUNDIAL_FLOW_SLOW_START", " Off ")])).unwrap();
    assert!(s.flow.initial_limit >= s.flow.per_flow_cap);
    let err = Settings::from_map(&env(&[("SUNDIAL_FLOW_SLOW_START", "0")])).unwrap_err();
    assert!(err.to_string().contains("SUNDIAL_FLOW_SLOW_START"), "{err}");
    let s = Settings::from_map(&env(&[
        ("SUNDIAL_MIGRATE_ON_START", "yes"),
        ("SUNDIAL_BREAKER_WINDOW_SECS", "7"),
        ("SUNDIAL_FLOW_SYNC_MS", "250"),
    ]))
    .unwrap();
    assert!(s.migrate_on_start);
    assert_eq!(s.flow.breaker_window, Duration::from_secs(7));
    assert_eq!(s.flow.sync_every, Duration::from_millis(250));
    let err = Settings::from_map(&env(&[("SUNDIAL_MIGRATE_ON_START", "maybe")])).unwrap_err();
    assert!(
        err.to_string().contains("SUNDIAL_MIGRATE_ON_START"),
        "{err}"
    );
}

#[test]
fn missing_required_settings_are_named() {
    let s = Settings::from_map(&env(&[])).unwrap();
    assert!(s
        .require_database_url()
        .unwrap_err()
        .to_string()
        .contains("DATABASE_URL"));
    assert!(s
        .require_queue_url()
        .unwrap_err()
        .to_string()
        .contains("SUNDIAL_QUEUE_URL"));
}

#[test]
fn lists_are_split_and_trimmed() {
    let s = Settings::from_map(&env(&[(
        "SUNDIAL_ALLOW_TARGETS",
        " 127.0.0.1/32 , ::1/128,",
    )]))
    .unwrap();
    assert_eq!(s.allow_targets, vec!["127.0.0.1/32", "::1/128"]);
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sundial-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn extra_ca_file_is_read_at_start() {
    let ca = sundial_target::tls::TestCa::generate().unwrap();
    let two = format!("{}{}", ca.cert_pem(), ca.cert_pem());
    let path = temp_file("two-certs.pem", two.as_bytes());
    let s = Settings::from_map(&env(&[("SUNDIAL_EXTRA_CA_FILE", path.to_str().unwrap())])).unwrap();
    let extra = s.extra_ca.unwrap();
    assert_eq!(extra.certs.len(), 2);
    assert_eq!(extra.path, path);
    assert!(Settings::from_map(&env(&[])).unwrap().extra_ca.is_none());
}

#[test]
fn unusable_extra_ca_file_is_named() {
    let missing = std::env::temp_dir().join("sundial-no-such-ca.pem");
    let garbage = temp_file("garbage.pem", b"-----BEGIN CERTIFICATE-----\n!!!\n");
    let empty = temp_file("empty.pem", b"just text\n");
    for path in [missing, garbage, empty] {
        let err = Settings::from_map(&env(&[("SUNDIAL_EXTRA_CA_FILE", path.to_str().unwrap())]))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("SUNDIAL_EXTRA_CA_FILE"), "{text}");
        assert!(text.contains(path.to_str().unwrap()), "{text}");
    }
}
