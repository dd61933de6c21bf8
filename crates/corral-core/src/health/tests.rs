use super::*;

fn tracker(cfg: HealthConfig) -> HealthTracker {
    HealthTracker::new(cfg).unwrap()
}

fn weight(t: &HealthTracker, node: &str) -> f64 {
    t.view().get(node).unwrap().weight
}

#[test]
fn signal_names_round_trip() {
    for (n, s) in NAMED {
        assert_eq!(Signal::parse(n).as_ref(), Some(s));
        assert_eq!(s.name(), *n);
    }
    assert_eq!(
        Signal::parse("custom.fan_rpm"),
        Some(Signal::Custom("fan_rpm".into()))
    );
    assert_eq!(Signal::parse("custom."), None);
    assert_eq!(Signal::parse("custom.a b"), None);
    assert_eq!(Signal::parse("cpuu"), None);
}

#[test]
fn dash_and_underscore_spellings_are_the_same_signal() {
    for (n, s) in NAMED {
        let dashed = n.replace('_', "-");
        assert_eq!(Signal::parse(&dashed).as_ref(), Some(s), "{dashed}");
        // The canonical name stays the underscore one.
        assert_eq!(Signal::parse(&dashed).unwrap().name(), *n);
    }
    assert_eq!(Signal::parse("net-util"), Some(Signal::NetUtil));
    assert_eq!(Signal::parse("net-drops"), Some(Signal::NetDrops));
    assert_eq!(Signal::parse("net-errors"), Some(Signal::NetErrors));
    assert_eq!(Signal::parse("net_util"), Some(Signal::NetUtil));
    // Only `-` for `_`: other spellings stay unknown.
    assert_eq!(Signal::parse("net.util"), None);
    assert_eq!(Signal::parse("netutil"), None);
    assert_eq!(Signal::parse("net--util"), None);
    // Custom names are verbatim.
    assert_eq!(
        Signal::parse("custom.fan-rpm"),
        Some(Signal::Custom("fan-rpm".into()))
    );
    assert_eq!(
        validate("memory-available", 0.25),
        Ok((Signal::Memory, 75.0))
    );
    // Rules may use either spelling.
    let mut cfg = HealthConfig::default();
    cfg.rules.insert(
        "net-drops".into(),
        serde_json::from_value(serde_json::json!({"degraded": 5.0})).unwrap(),
    );
    assert_eq!(cfg.resolve().unwrap()[&Signal::NetDrops].degraded, 5.0);
    // Both spellings feed the same signal state.
    let mut t = tracker(HealthConfig::default());
    assert_eq!(t.observe(0.0, "n", "net-util", 10.0), None);
    assert_eq!(t.observe(1.0, "n", "net_util", 10.0), None);
    assert!(
        t.observe(1.0, "n", "net-util", 10.0).is_some(),
        "same time twice"
    );
    assert!(t.signal("n", &Signal::NetUtil).is_some());
}

#[test]
fn per_signal_default_mappings() {
    let rules: HashMap<Signal, Rule> = default_rules().into_iter().collect();
    // (signal, healthy value, degraded-threshold value, critical value or None)
    let cases: &[(Signal, f64, f64, Option<f64>)] = &[
        (Signal::Cpu, 40.0, 80.0, Some(95.0)),
        (Signal::Memory, 50.0, 90.0, Some(97.0)),
        (Signal::MemoryPsi, 1.0, 20.0, Some(50.0)),
        (Signal::NetUtil, 30.0, 80.0, Some(95.0)),
        (Signal::NetDrops, 0.0, 100.0, Some(1000.0)),
        (Signal::NetErrors, 0.0, 10.0, Some(100.0)),
        (Signal::TcpRetrans, 1.0, 50.0, Some(500.0)),
        (Signal::Gpu, 50.0, 95.0, None),
        (Signal::Vram, 50.0, 95.0, None),
        (Signal::GpuTemp, 60.0, 85.0, Some(95.0)),
        (Signal::GpuXid, 0.0, 1.0, Some(1.0)),
        (Signal::GpuEcc, 0.0, 1.0, Some(1.0)),
        (Signal::GpuMissing, 0.0, 1.0, Some(1.0)),
        (Signal::DiskLatency, 5.0, 50.0, Some(500.0)),
        (Signal::HeartbeatAge, 10.0, 40.0, Some(120.0)),
    ];
    assert_eq!(cases.len(), NAMED.len());
    for (sig, ok, deg, crit) in cases {
        let r = &rules[sig];
        assert_eq!(r.soft_score(*ok), 100.0, "{sig} healthy");
        assert!(r.soft_score(*deg) <= 50.0, "{sig} at degraded threshold");
        if let Some(c) = crit {
            assert!(r.soft_score(*c) <= 10.0, "{sig} at critical");
            assert_eq!(r.soft_score(c * 2.0 + 1.0), 0.0, "{sig} beyond critical");
        }
    }
    // Requirements' alert thresholds and durations.
    assert_eq!(
        (
            rules[&Signal::Cpu].degraded,
            rules[&Signal::Cpu].for_seconds
        ),
        (80.0, 300.0)
    );
    assert_eq!(
        (
            rules[&Signal::Memory].degraded,
            rules[&Signal::Memory].for_seconds
        ),
        (90.0, 300.0)
    );
    assert_eq!(
        (
            rules[&Signal::Gpu].degraded,
            rules[&Signal::Gpu].for_seconds
        ),
        (95.0, 300.0)
    );
    assert_eq!(rules[&Signal::Vram].degraded, 95.0);
    assert_eq!(rules[&Signal::DiskLatency].degraded, 50.0);
}

#[test]
fn duration_gates_the_degraded_state() {
    let mut t = tracker(HealthConfig {
        ewma_half_life_seconds: 0.0,
        ..HealthConfig::default()
    });
    for s in 0..=290 {
        t.observe(s as f64, "n", "cpu", 85.0);
    }
    assert_eq!(t.signal("n", &Signal::Cpu).unwrap().1, Level::Healthy);
    for s in 291..=300 {
        t.observe(s as f64, "n", "cpu", 85.0);
    }
    assert_eq!(t.signal("n", &Signal::Cpu).unwrap().1, Level::Degraded);
}

#[test]
fn gpu_missing_is_critical_at_once_and_filters() {
    let mut t = tracker(HealthConfig::default());
    t.observe(0.0, "g", "gpu_missing", 1.0);
    t.advance(0.0);
    let v = t.view();
    assert_eq!(v.get("g").unwrap().critical.as_deref(), Some("gpu_missing"));
    assert_eq!(v.get("g").unwrap().score(), 0);
    // filterCritical: false keeps the node feasible (score still 0).
    let mut t = tracker(HealthConfig {
        filter_critical: false,
        ..HealthConfig::default()
    });
    t.observe(0.0, "g", "gpu_missing", 1.0);
    t.advance(0.0);
    assert_eq!(t.view().get("g").unwrap().critical, None);
}

/// EWMA: a 20 s spike to 100 % must not push the smoothed CPU past the degraded
/// threshold; without smoothing (half-life 0) it does.
#[test]
fn ewma_absorbs_spikes() {
    let run = |half: f64| {
        let mut t = tracker(HealthConfig {
            ewma_half_life_seconds: half,
            ..HealthConfig::default()
        });
        let mut max = 0.0f64;
        for s in 0..120 {
            let v = if (60..80).contains(&s) { 100.0 } else { 40.0 };
            t.observe(s as f64, "n", "cpu", v);
            max = max.max(t.signal("n", &Signal::Cpu).unwrap().0);
        }
        max
    };
    assert!(run(30.0) < 80.0, "smoothed max {}", run(30.0));
    assert!(run(0.0) >= 80.0);
}

/// Hysteresis: a value oscillating 78..82 around the 80 % threshold changes the
/// level once with hysteresis (exit 70) and many times without.
#[test]
fn hysteresis_prevents_state_flapping() {
    let count = |hyst: bool| {
        let mut cfg = HealthConfig {
            ewma_half_life_seconds: 0.0,
            hysteresis: hyst,
            ..HealthConfig::default()
        };
        let mut r = default_rules()
            .into_iter()
            .find(|(s, _)| *s == Signal::Cpu)
            .unwrap()
            .1;
        r.for_seconds = 0.0;
        r.exit_for_seconds = 0.0;
        cfg.rules.insert("cpu".into(), r);
        let mut t = tracker(cfg);
        let mut changes = 0;
        let mut last = Level::Healthy;
        for s in 0..600 {
            let v = if (s / 20) % 2 == 0 { 82.0 } else { 78.0 };
            t.observe(s as f64, "n", "cpu", v);
            let l = t.signal("n", &Signal::Cpu).unwrap().1;
            if l != last {
                changes += 1;
                last = l;
            }
        }
        changes
    };
    assert_eq!(count(true), 1);
    assert!(count(false) > 10, "{}", count(false));
}

/// Slew limit: a step in the target moves the weight by at most rate×dt per update,
/// in both directions; without a limit it jumps.
#[test]
fn slew_limits_both_directions() {
    let cfg = |rise: f64, fall: f64| {
        let mut c = HealthConfig {
            ewma_half_life_seconds: 0.0,
            max_rise_per_second: rise,
            max_fall_per_second: fall,
            ..HealthConfig::default()
        };
        let mut r = default_rules()
            .into_iter()
            .find(|(s, _)| *s == Signal::Cpu)
            .unwrap()
            .1;
        r.for_seconds = 0.0;
        r.exit_for_seconds = 0.0;
        c.rules.insert("cpu".into(), r);
        c
    };
    let mut t = tracker(cfg(1.0, 2.0));
    t.observe(0.0, "n", "cpu", 10.0);
    t.advance(0.0);
    assert_eq!(weight(&t, "n"), 100.0);
    t.observe(10.0, "n", "cpu", 99.0);
    t.advance(10.0);
    assert_eq!(weight(&t, "n"), 80.0, "fall limited to 2/s");
    t.observe(20.0, "n", "cpu", 10.0);
    t.advance(20.0);
    assert_eq!(weight(&t, "n"), 90.0, "rise limited to 1/s");
    let mut u = tracker(cfg(0.0, 0.0));
    u.observe(0.0, "n", "cpu", 10.0);
    u.advance(0.0);
    u.observe(10.0, "n", "cpu", 99.0);
    u.advance(10.0);
    assert_eq!(weight(&u, "n"), 0.0);
    u.observe(20.0, "n", "cpu", 10.0);
    u.advance(20.0);
    assert_eq!(weight(&u, "n"), 100.0);
}

#[test]
fn bad_inputs_are_ignored_and_never_improve_health() {
    let mut t = tracker(HealthConfig {
        ewma_half_life_seconds: 0.0,
        ..HealthConfig::default()
    });
    t.observe(0.0, "n", "gpu_missing", 1.0);
    t.observe(0.0, "n", "cpu", 90.0);
    t.advance(10.0);
    let before = t.view().get("n").unwrap().clone();
    assert!(t.observe(11.0, "n", "cpu", f64::NAN).is_some());
    assert!(t.observe(11.0, "n", "cpu", f64::INFINITY).is_some());
    assert!(t.observe(11.0, "n", "cpu", -5.0).is_some());
    assert!(t.observe(11.0, "n", "gpu_missing", -1.0).is_some());
    assert!(t.observe(11.0, "n", "no_such_signal", 0.0).is_some());
    assert!(t.observe(11.0, "n", "custom.unconfigured", 0.0).is_some());
    assert!(t.observe(f64::NAN, "n", "cpu", 0.0).is_some());
    // Out of order and stale samples.
    assert!(t.observe(-1.0, "n", "cpu", 0.0).is_some());
    t.advance(1000.0);
    assert!(t.observe(500.0, "m", "cpu", 0.0).is_some(), "stale");
    assert!(t.view().get("m").is_none());
    let after = t.view().get("n").unwrap().clone();
    assert!(after.weight <= before.weight);
    assert_eq!(after.critical, before.critical);
    // Over-range percent reads as 100 %, not as garbage.
    assert_eq!(validate("cpu", 250.0).unwrap().1, 100.0);
    assert_eq!(
        validate("memory_available", 0.25).unwrap(),
        (Signal::Memory, 75.0)
    );
    assert!(validate("memory_available", 2.0).is_err());
}

#[test]
fn silent_signal_keeps_its_last_state() {
    let mut t = tracker(HealthConfig::default());
    t.observe(0.0, "n", "gpu_missing", 2.0);
    for s in 1..100 {
        t.advance(s as f64 * 10.0);
    }
    assert_eq!(
        t.view().get("n").unwrap().critical.as_deref(),
        Some("gpu_missing")
    );
}

#[test]
fn node_score_is_monotone_and_worst_of_for_critical_signals() {
    let mut cfg = HealthConfig {
        ewma_half_life_seconds: 0.0,
        ..HealthConfig::default()
    };
    let mut mem = default_rules()
        .into_iter()
        .find(|(s, _)| *s == Signal::Memory)
        .unwrap()
        .1;
    mem.weight = 0.1;
    cfg.rules.insert("memory".into(), mem);
    let mut t = tracker(cfg);
    t.observe(0.0, "n", "cpu", 70.0);
    t.advance(0.0);
    let one = weight(&t, "n");
    // A new healthy signal does not raise the score.
    t.observe(0.0, "n", "net_util", 10.0);
    t.advance(0.0);
    assert_eq!(weight(&t, "n"), one);
    // Memory has a low weight but is a critical signal: worst-of applies.
    let mut u = tracker(HealthConfig {
        max_fall_per_second: 0.0,
        ..t.config().clone()
    });
    u.observe(0.0, "n", "memory", 92.0);
    u.advance(0.0);
    let w = weight(&u, "n");
    assert!(w < 50.0, "{w}");
}

#[test]
fn custom_signal_needs_a_rule() {
    let mut cfg = HealthConfig::default();
    cfg.rules.insert(
        "custom.fan_fail".into(),
        serde_json::from_value(serde_json::json!({"degraded": 1, "critical": 1, "criticalSignal": true, "smooth": false}))
            .unwrap(),
    );
    let mut t = tracker(cfg);
    assert_eq!(t.observe(0.0, "n", "custom.fan_fail", 1.0), None);
    t.advance(0.0);
    assert_eq!(
        t.view().get("n").unwrap().critical.as_deref(),
        Some("custom.fan_fail")
    );
}

#[test]
fn config_errors_name_the_field() {
    let mut cfg = HealthConfig::default();
    cfg.rules.insert(
        "bogus".into(),
        serde_json::from_value(serde_json::json!({"degraded": 1})).unwrap(),
    );
    assert!(HealthTracker::new(cfg).unwrap_err().contains("rules.bogus"));
    let cfg = HealthConfig {
        max_rise_per_second: -1.0,
        ..HealthConfig::default()
    };
    assert!(
        HealthTracker::new(cfg)
            .unwrap_err()
            .contains("maxRisePerSecond")
    );
    let mut cfg = HealthConfig::default();
    cfg.rules.insert(
        "cpu".into(),
        serde_json::from_value(serde_json::json!({"degraded": 80, "critical": 50})).unwrap(),
    );
    assert!(
        HealthTracker::new(cfg)
            .unwrap_err()
            .contains("rules.cpu.critical")
    );
}
