//! Loading every built-in profile, round trips through YAML, layering, and
//! each class of bad input.

use caxton_profiles::{load, ProfileErrorKind, BUILTIN_NAMES};

fn write_profile(directory: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = directory.path().join(name);
    std::fs::write(&path, text).expect("write profile");
    path.to_str().expect("utf-8 path").to_owned()
}

fn load_text(text: &str) -> Result<caxton_profiles::LoadedProfile, caxton_profiles::ProfileError> {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = write_profile(&directory, "profile.yaml", text);
    load(&[path], &[])
}

#[test]
fn every_builtin_loads_and_round_trips() {
    let mut on_tcp = 0;
    for name in BUILTIN_NAMES {
        let loaded =
            load(&[name.to_owned()], &[]).unwrap_or_else(|error| panic!("{name}: {error}"));
        let yaml = loaded.to_yaml();
        let reloaded = load_text(&yaml).unwrap_or_else(|error| {
            panic!("{name} shown as YAML does not load back: {error}\n{yaml}")
        });
        assert_eq!(
            reloaded.profile, loaded.profile,
            "{name} changed through YAML"
        );
        assert_eq!(reloaded.to_yaml(), yaml, "{name}: showing is stable");
        // Switched to TCP, a built-in's QUIC tuning is shown at its
        // defaults, since it changes nothing: the file loads back.
        let Ok(tcp) = load(&[name.to_owned()], &["transport.type=tcp".into()]) else {
            continue;
        };
        let yaml = tcp.to_yaml();
        let reloaded = load_text(&yaml).unwrap_or_else(|error| {
            panic!("{name} on TCP shown as YAML does not load back: {error}\n{yaml}")
        });
        assert_eq!(
            reloaded.profile,
            caxton_profiles::without_idle_transport_keys(&tcp.profile),
            "{name} on TCP changed through YAML"
        );
        on_tcp += 1;
    }
    assert!(on_tcp >= 2, "low-latency and default at least load on TCP");
}

#[test]
fn builtins_carry_the_guides_values() {
    let low = load(&["low-latency".into()], &[])
        .expect("low-latency")
        .profile;
    assert_eq!(
        (
            low.runtime.agent_pool_size,
            low.messaging.batch_size,
            low.messaging.queue_size
        ),
        (200, 1, 10_000)
    );
    assert!(low.messaging.priority_routing.enabled);
    assert_eq!(low.transport.quic.idle_timeout.to_string(), "100ms");
    assert!(
        low.runtime.spin_before_park.is_some(),
        "low latency spins before parking"
    );

    let high = load(&["high-throughput".into()], &[])
        .expect("high-throughput")
        .profile;
    assert_eq!(
        high.runtime.worker_threads,
        Some(16),
        "the guide writes messaging.worker_threads"
    );
    assert_eq!(
        high.transport.quic.max_concurrent_streams, 1000,
        "the guide writes transport.max_streams"
    );
    assert_eq!(
        high.transport.quic.congestion_control,
        caxton_profiles::CongestionControl::Bbr
    );
    assert_eq!(
        high.runtime.spin_before_park.map(|spin| spin.get()),
        Some(std::time::Duration::from_micros(100)),
        "a loaded shard polls rather than parks between messages"
    );

    let memory = load(&["memory-optimized".into()], &[])
        .expect("memory-optimized")
        .profile;
    assert_eq!(memory.runtime.max_memory_per_agent.bytes(), 10 << 20);
    assert_eq!(memory.runtime.agent_stack_size.bytes(), 512 << 10);
    assert_eq!(
        memory.storage.auto_vacuum,
        caxton_profiles::AutoVacuum::Full
    );
    assert_eq!(
        memory.messaging.message_ttl.map(|ttl| ttl.get().as_secs()),
        Some(60)
    );

    let overlays = load(
        &[
            "low-latency".into(),
            "cluster-medium".into(),
            "network-unreliable".into(),
        ],
        &[],
    )
    .expect("stack");
    let cluster = &overlays.profile.coordination.cluster;
    assert_eq!(
        (
            cluster.gossip_fanout,
            cluster.suspicion_multiplier,
            cluster.gossip_to_dead
        ),
        (4, 6, 5)
    );
    assert_eq!(overlays.layers.len(), 3);
}

#[test]
fn the_guides_block_forms_load() {
    let loaded = load_text(
        "runtime:\n  cpu_affinity:\n    enabled: true\n    strategy: numa_aware\n    pinned_agents:\n      - agent_id: router\n        cpu_cores: [0, 1]\n  numa:\n    enabled: true\n    memory_policy: local_alloc\n    cpu_bind: true\n    interleave_memory: false\n\
         messaging:\n  priority_routing:\n    enabled: true\n    queues:\n      - name: critical\n        priority: 0\n        max_latency: 10ms\n\
         agents:\n  default_limits:\n    memory: 50MB\n    cpu_shares: 100m\n    max_execution_time: 10s\n  overrides:\n    - agent_id: quick-responder\n      memory: 10MB\n      cpu_shares: 50m\n      max_execution_time: 100ms\n\
         transport:\n  tcp:\n    nodelay: true\n    send_buffer_size: 256KB\n    linger: 0\n  connection_pool:\n    min_idle: 10\n    max_idle: 100\n    max_lifetime: 300s\n",
    )
    .expect("the guide's blocks load");
    let profile = loaded.profile;
    assert_eq!(profile.runtime.cpu_affinity.pinned_agents[0].pus, [0, 1]);
    assert_eq!(profile.messaging.priority_routing.queues.len(), 1);
    let quick = profile.agents.limits_for("quick-responder");
    assert_eq!(
        (quick.memory.bytes(), quick.cpu_shares.millicores()),
        (10 << 20, 50)
    );
    assert_eq!(
        profile
            .agents
            .limits_for("anyone")
            .max_execution_time
            .get()
            .as_secs(),
        10
    );
    assert_eq!(profile.transport.tcp.send_buffer_size.bytes(), 256 << 10);
}

#[test]
fn overlays_in_the_wrong_order_are_told_which_layer_to_move() {
    // network-wan's 2s probe timeout needs its own 5s probe interval, which
    // cluster-small, listed after it, sets back to 500ms.
    let error =
        load(&["network-wan".into(), "cluster-small".into()], &[]).expect_err("the wrong order");
    assert_eq!(
        error.key.as_deref(),
        Some("coordination.cluster.probe_timeout")
    );
    let hint = error.hint.clone().unwrap_or_default();
    assert!(
        hint.contains(
            "comes from built-in profile cluster-small, listed after built-in profile network-wan"
        ),
        "{error}"
    );
    // A layer that writes only the timeout gains nothing from moving: the
    // hint says only to set the interval after both.
    let directory = tempfile::tempdir().expect("temp dir");
    let timeout_only = write_profile(
        &directory,
        "timeout.yaml",
        "coordination:\n  cluster:\n    probe_timeout: 700ms\n",
    );
    let error = load(&[timeout_only, "cluster-small".into()], &[]).expect_err("wrong order");
    let hint = error.hint.clone().unwrap_or_default();
    assert!(
        hint.contains("set `coordination.cluster.probe_interval` after both")
            && !hint.contains("after it"),
        "{error}"
    );
    // The right order loads; a contradiction within one layer has no such hint.
    load(&["cluster-small".into(), "network-wan".into()], &[]).expect("the right order");
    let within = load(
        &[],
        &[
            "coordination.cluster.probe_interval=1s".into(),
            "coordination.cluster.probe_timeout=2s".into(),
        ],
    )
    .expect_err("a probe timeout over the interval written before it");
    assert!(
        !within.hint.unwrap_or_default().contains("listed after"),
        "the interval is a default"
    );
}

#[test]
fn set_overrides_apply_last() {
    let loaded = load(
        &["low-latency".into()],
        &[
            "messaging.batch_size=8".into(),
            "runtime.cpu_affinity.strategy=compact".into(),
        ],
    )
    .expect("loads");
    assert_eq!(loaded.profile.messaging.batch_size, 8);
    assert_eq!(
        loaded.profile.runtime.cpu_affinity.strategy,
        caxton_profiles::PlacementStrategy::Compact
    );
    assert_eq!(
        loaded
            .location_of("messaging.batch_size")
            .map(|location| location.source),
        Some("--set messaging.batch_size=8".to_owned())
    );
}

#[test]
fn a_set_of_a_text_key_takes_the_text_as_written() {
    // YAML reads these as a number, a boolean, a big number and a year:
    // on the command line, for keys that take text, they are the text.
    let loaded = load(
        &["cluster-small".into()],
        &[
            "coordination.cluster.node_name=1".into(),
            "observability.admin.access_token=12345678901234567890".into(),
            "storage.data_directory=2024".into(),
            "coordination.cluster.node_name=off".into(),
        ],
    )
    .expect("loads");
    assert_eq!(
        loaded.profile.coordination.cluster.node_name.as_deref(),
        Some("off"),
        "the last --set of a key wins, as written"
    );
    assert_eq!(
        loaded.profile.observability.admin.access_token.as_deref(),
        Some("12345678901234567890")
    );
    assert_eq!(loaded.profile.storage.data_directory, "2024");
    // Null is no name: refused, not taken as the directory `~`.
    let null = load(&[], &["storage.data_directory=~".into()]).expect_err("null");
    assert!(
        null.to_string().contains("storage.data_directory"),
        "{null}"
    );
    // A key that takes a number still refuses text, naming the key.
    let wrong = load(&[], &["messaging.batch_size=many".into()]).expect_err("not a number");
    assert!(
        wrong.to_string().contains("messaging.batch_size"),
        "{wrong}"
    );
    // In a file, YAML's reading stands: quoting is how to write a name "1".
    let file = load_text("coordination:\n  cluster:\n    node_name: 1\n").expect_err("a number");
    assert!(
        file.to_string().contains("node_name") && file.to_string().contains("quotes"),
        "{file}"
    );
}

#[test]
fn bad_input_names_cause_key_and_place() {
    let unknown_name = load(&["fast".into()], &[]).expect_err("no such profile");
    assert_eq!(unknown_name.kind, ProfileErrorKind::UnknownProfile);
    assert!(
        unknown_name.to_string().contains("low-latency"),
        "lists the known names: {unknown_name}"
    );

    let unreadable = load(&["/no/such/profile.yaml".into()], &[]).expect_err("missing file");
    assert_eq!(unreadable.kind, ProfileErrorKind::Unreadable);

    // Two of the guide's examples pasted into one file write a key twice.
    let twice = load_text("runtime:\n  max_agents: 5\nruntime:\n  max_agents: 6\n")
        .expect_err("a key written twice");
    assert!(
        twice.to_string().contains("`runtime` is written twice")
            && !twice.to_string().contains("DuplicateKeyPolicy"),
        "{twice}"
    );

    let syntax = load_text("runtime:\n  max_agents: [1\n").expect_err("broken YAML");
    assert_eq!(syntax.kind, ProfileErrorKind::Syntax);
    assert_eq!(
        syntax.location.as_ref().and_then(|location| location.line),
        Some(2)
    );
    assert!(
        syntax.to_string().contains("hint: indent with spaces"),
        "{syntax}"
    );
    let tab = load_text("runtime:\n\tmax_agents: 5\n").expect_err("a tab");
    assert_eq!(tab.kind, ProfileErrorKind::Syntax);
    assert!(tab.to_string().contains("replace the tab"), "{tab}");

    let unknown_key =
        load_text("coordination:\n  cluster:\n    gosip_fanout: 3\n").expect_err("typo");
    assert_eq!(unknown_key.kind, ProfileErrorKind::UnknownKey);
    assert_eq!(
        unknown_key.key.as_deref(),
        Some("coordination.cluster.gosip_fanout")
    );
    let location = unknown_key.location.clone().expect("located");
    assert_eq!((location.line, location.column), (Some(3), Some(5)));
    assert_eq!(
        unknown_key.hint.as_deref(),
        Some("did you mean `gossip_fanout`?")
    );

    let wrong_type =
        load_text("messaging:\n  delivery_timeout: soon\n").expect_err("not a duration");
    assert_eq!(wrong_type.kind, ProfileErrorKind::InvalidValue);
    assert_eq!(
        wrong_type.key.as_deref(),
        Some("messaging.delivery_timeout")
    );
    assert!(wrong_type.hint.is_some(), "wrong types get a hint too");
    let wrong_number = load_text("runtime:\n  max_agents: lots\n").expect_err("not a number");
    assert_eq!(
        wrong_number.hint.as_deref(),
        Some("use a whole number from 0 to 4294967295")
    );

    let contradiction = load_text("runtime:\n  max_agents: 10\n  agent_pool_size: 20\n")
        .expect_err("pool above max");
    assert_eq!(contradiction.kind, ProfileErrorKind::Contradiction);
    assert_eq!(
        contradiction.key.as_deref(),
        Some("runtime.agent_pool_size")
    );
    assert_eq!(
        contradiction
            .location
            .as_ref()
            .and_then(|location| location.line),
        Some(3)
    );
    assert!(contradiction.hint.is_some());

    let probe = load(&["network-wan".into(), "cluster-large".into()], &[])
        .expect_err("2s timeout, 2s interval");
    assert_eq!(
        probe.key.as_deref(),
        Some("coordination.cluster.probe_timeout")
    );
    assert_eq!(
        probe.location.map(|location| location.source),
        Some("built-in profile network-wan".to_owned())
    );

    let alias_clash = load_text("messaging:\n  worker_threads: 4\nruntime:\n  worker_threads: 8\n")
        .expect_err("two spellings disagree");
    assert_eq!(alias_clash.key.as_deref(), Some("messaging.worker_threads"));

    let pooled_stacks =
        load_text("runtime:\n  wasm:\n    stack_pooling: true\n    memory_pooling: false\n")
            .expect_err("no pool to take stacks from");
    assert_eq!(
        pooled_stacks.key.as_deref(),
        Some("runtime.wasm.stack_pooling")
    );
    let deep_stack =
        load(&[], &["runtime.agent_stack_size=4MB".into()]).expect_err("above the thread's stack");
    assert_eq!(deep_stack.key.as_deref(), Some("runtime.agent_stack_size"));

    let bad_set = load(&[], &["runtime.max_agents".into()]).expect_err("no value");
    assert_eq!(bad_set.kind, ProfileErrorKind::BadOverride);
    let unknown_set = load(&[], &["runtime.max_agnets=3".into()]).expect_err("typo in --set");
    assert_eq!(
        unknown_set.hint.as_deref(),
        Some("did you mean `max_agents`?")
    );
    let far_off = load(&[], &["runtime.bogus=1".into()]).expect_err("no such key");
    assert_eq!(
        far_off.hint.as_deref(),
        Some("see docs/profiles.md for every key"),
        "a key like none: pointed at the list"
    );
    for error in [
        unknown_name,
        unreadable,
        syntax,
        unknown_key,
        wrong_type,
        contradiction,
        alias_clash,
        bad_set,
        unknown_set,
    ] {
        assert_eq!(error.to_string().lines().count(), 1, "one line: {error}");
    }
}

#[test]
fn agent_names_in_profiles_follow_the_engine_rule() {
    let deployed = load_text("agents:\n  deploy:\n    - name: \"a b\"\n      module: echo.wat\n")
        .expect_err("a space in a name");
    assert_eq!(deployed.key.as_deref(), Some("agents.deploy[0].name"));
    assert!(
        deployed.to_string().contains("is not an agent name"),
        "{deployed}"
    );
    let long = "x".repeat(caxton_profiles::AGENT_NAME_BYTES_MAX + 1);
    let pinned = load_text(&format!(
        "runtime:\n  cpu_affinity:\n    enabled: true\n    pinned_agents:\n      - agent_id: {long}\n        cpu_cores: [0]\n"
    ))
    .expect_err("too long");
    assert_eq!(
        pinned.key.as_deref(),
        Some("runtime.cpu_affinity.pinned_agents[0].agent_id")
    );
}

#[test]
fn time_slices_are_checked_against_the_runs_they_slice() {
    for (text, needle) in [
        ("runtime:\n  time_slice: 0s\n", "is 0"),
        ("runtime:\n  time_slice: 10us\n", "below the engine's 50us"),
        (
            "runtime:\n  time_slice: 20s\n",
            "longer than agents.default_limits.max_execution_time",
        ),
        (
            "runtime:\n  time_slice: 5ms\nagents:\n  overrides:\n    - agent_id: quick\n      max_execution_time: 1ms\n",
            "longer than agents.overrides[0].max_execution_time",
        ),
    ] {
        let refused = load_text(text).expect_err(text);
        assert_eq!(refused.key.as_deref(), Some("runtime.time_slice"), "{text}");
        assert!(refused.to_string().contains(needle), "{refused}");
    }
    let loaded = load_text("runtime:\n  time_slice: 750us\n").expect("a valid slice");
    assert_eq!(
        loaded.profile.runtime.time_slice.get(),
        std::time::Duration::from_micros(750)
    );
    for (name, slice) in [
        ("low-latency", 500),
        ("high-throughput", 10_000),
        ("default", 2_000),
    ] {
        let profile = load(&[name.into()], &[]).expect("built-in").profile;
        assert_eq!(
            profile.runtime.time_slice.get(),
            std::time::Duration::from_micros(slice),
            "{name}"
        );
        assert!(profile.runtime.wasm.stack_pooling, "{name} slices handlers");
    }
}

#[test]
fn client_ports_must_be_a_usable_count() {
    let refused = load(&[], &["runtime.client_ports=0".into()]).expect_err("no ports");
    assert_eq!(refused.key.as_deref(), Some("runtime.client_ports"));
    let loaded = load(&[], &["runtime.client_ports=32".into()]).expect("valid");
    assert_eq!(loaded.profile.runtime.client_ports, Some(32));
    let low_latency = load(&["low-latency".into()], &[])
        .expect("built-in")
        .profile;
    assert!(low_latency.runtime.client_spin_before_park.is_some());
}

#[test]
fn shown_module_paths_load_back_from_anywhere() {
    let directory = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(directory.path().join("sub")).expect("sub");
    let path = directory.path().join("sub/p.yaml");
    std::fs::write(
        &path,
        "agents:\n  deploy:\n    - name: echo\n      module: echo.wat\n",
    )
    .expect("written");
    let loaded = load(&[path.display().to_string()], &[]).expect("loads");
    let module = directory.path().join("sub/echo.wat");
    assert_eq!(loaded.module_path(0), module, "relative to its profile");
    // Saved elsewhere, the shown profile still names the same module.
    let shown = loaded.to_yaml();
    let elsewhere = write_profile(&directory, "shown.yaml", &shown);
    let reloaded = load(&[elsewhere], &[]).expect("loads back");
    assert_eq!(reloaded.module_path(0), module, "{shown}");
    assert_eq!(reloaded.to_yaml(), shown, "a fixed point");
}

#[test]
fn the_admin_address_takes_a_host_name_and_names_a_bad_port() {
    let loaded =
        load(&[], &["observability.admin.listen=localhost:1589".into()]).expect("a host name");
    let listen = loaded.profile.observability.admin.listen;
    assert!(
        listen.ip().is_loopback() && listen.port() == 1589,
        "{listen}"
    );
    for (value, says) in [
        (
            "127.0.0.1:99999",
            "the port `99999` is not a number from 0 to 65535",
        ),
        ("127.0.0.1", "no port"),
        (":1476", "names no host"),
    ] {
        let refused = load(&[], &[format!("observability.admin.listen={value}")]).expect_err(value);
        assert_eq!(
            refused.key.as_deref(),
            Some("observability.admin.listen"),
            "{refused}"
        );
        assert!(refused.to_string().contains(says), "{value}: {refused}");
    }
}

#[test]
fn a_log_level_that_is_no_level_is_refused_not_read_as_a_target() {
    let refused = load(&[], &["observability.log_level=inof".into()]).expect_err("a typo");
    assert_eq!(refused.key.as_deref(), Some("observability.log_level"));
    let text = refused.to_string();
    assert!(
        text.contains("`inof`") && text.contains("did you mean `info`?"),
        "{text}"
    );
    let refused = load(&[], &["observability.log_level=warn,caxton_shards".into()])
        .expect_err("a target without its level");
    assert!(
        refused.to_string().contains("`caxton_shards=debug`"),
        "{refused}"
    );
    for filter in [
        "info",
        "WARN",
        "caxton_shards=debug,warn",
        "off",
        "info,caxton_cluster[remote]=trace",
    ] {
        let loaded = load(&[], &[format!("observability.log_level={filter}")])
            .unwrap_or_else(|error| panic!("{filter}: {error}"));
        assert_eq!(loaded.profile.observability.log_level, filter);
    }
}

#[test]
fn connection_pool_values_that_cannot_work_are_refused_by_key() {
    let cases = [
        (
            "transport.connection_pool.max_connections_per_node=0",
            "transport.connection_pool.max_connections_per_node",
            "at least 1",
        ),
        (
            "transport.connection_pool.max_connections_per_node=200",
            "transport.connection_pool.max_connections_per_node",
            "max_concurrent_streams",
        ),
        (
            "transport.connection_pool.idle_timeout=0s",
            "transport.connection_pool.idle_timeout",
            "above zero",
        ),
        (
            "transport.connection_pool.max_lifetime=0s",
            "transport.connection_pool.max_lifetime",
            "above zero",
        ),
    ];
    for (set, key, says) in cases {
        let error = load(&["default".into()], &[set.into()]).expect_err(set);
        assert_eq!(error.key.as_deref(), Some(key), "{set}: {error}");
        assert!(error.to_string().contains(says), "{set}: {error}");
    }
    // The pool is QUIC streams: with TCP its keys would change nothing.
    let tcp = load(
        &["default".into()],
        &[
            "transport.type=tcp".into(),
            "transport.connection_pool.max_idle=20".into(),
        ],
    )
    .expect_err("the pool's keys with TCP");
    assert_eq!(
        tcp.key.as_deref(),
        Some("transport.connection_pool"),
        "{tcp}"
    );
    assert!(tcp.to_string().contains("QUIC"), "{tcp}");
    // TCP with the pool untouched, and QUIC with it changed, load.
    load(&["default".into()], &["transport.type=tcp".into()]).expect("plain TCP");
    load(
        &["default".into()],
        &["transport.connection_pool.max_idle=20".into()],
    )
    .expect("a changed pool on QUIC");
}

#[test]
fn one_transports_settings_are_refused_on_the_other_by_key() {
    let refused = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
        load(&["default".into()], &sets).expect_err(&sets.join(" "))
    };
    // QUIC is the default transport: a TCP setting would change nothing.
    let error = refused(&["transport.tcp.nodelay=false"]);
    assert_eq!(
        error.key.as_deref(),
        Some("transport.tcp.nodelay"),
        "{error}"
    );
    assert!(error.to_string().contains("TCP transport only"), "{error}");
    assert!(error.to_string().contains("transport.type: tcp"), "{error}");
    let error = refused(&["transport.tcp.connect_timeout=1s"]);
    assert_eq!(
        error.key.as_deref(),
        Some("transport.tcp.connect_timeout"),
        "{error}"
    );
    // On TCP, a QUIC setting, whether written in full or in its short form.
    let error = refused(&["transport.type=tcp", "transport.quic.enable_0rtt=true"]);
    assert_eq!(
        error.key.as_deref(),
        Some("transport.quic.enable_0rtt"),
        "{error}"
    );
    assert!(error.to_string().contains("QUIC transport only"), "{error}");
    let error = refused(&["transport.type=tcp", "transport.congestion_control=bbr"]);
    assert_eq!(
        error.key.as_deref(),
        Some("transport.quic.congestion_control"),
        "{error}"
    );
    // Every such key is named at once.
    let error = refused(&["transport.tcp.nodelay=false", "transport.tcp.linger=5"]);
    assert!(
        error.to_string().contains(
            "transport.tcp.linger, transport.tcp.nodelay apply to the TCP transport only"
        ),
        "{error}"
    );
    // A built-in profile's QUIC tuning (low-latency's) is let through when a
    // later layer picks TCP: the user did not write it, and the engine names
    // it at boot. What the user writes is still refused.
    let tcp =
        load(&["low-latency".into()], &["transport.type=tcp".into()]).expect("low-latency on TCP");
    let idle = caxton_profiles::idle_transport_keys(&tcp.profile);
    assert!(
        idle.contains(&"transport.quic.keep_alive_interval".to_owned()),
        "{idle:?}"
    );
    // The loaded profile's list adds the other transport's keys a layer
    // wrote at their defaults; the datagram size, read on both, is never one.
    let written = load(
        &["low-latency".into()],
        &[
            "transport.type=tcp".into(),
            "transport.quic.enable_0rtt=false".into(),
            "transport.quic.max_datagram_size=1200".into(),
        ],
    )
    .expect("defaults of the other transport load");
    let listed = written.idle_transport_keys();
    assert!(
        listed.contains(&"transport.quic.enable_0rtt".to_owned())
            && listed.contains(&"transport.quic.keep_alive_interval".to_owned())
            && !listed.contains(&"transport.quic.max_datagram_size".to_owned()),
        "{listed:?}"
    );
    // A key the user set back to its default changes nothing either way;
    // the rules between QUIC's keys do not apply on TCP.
    load(
        &["low-latency".into()],
        &[
            "transport.type=tcp".into(),
            "transport.quic.keep_alive_interval=30s".into(),
        ],
    )
    .expect("a QUIC key at its default on TCP");
    // Written inside a mapping, a key is still the user's.
    let error = load(
        &["low-latency".into()],
        &[
            "transport.type=tcp".into(),
            "transport.quic={keep_alive_interval: 10ms}".into(),
        ],
    )
    .expect_err("a QUIC key written in a mapping on TCP");
    assert_eq!(
        error.key.as_deref(),
        Some("transport.quic.keep_alive_interval"),
        "{error}"
    );
    let error = load(
        &["low-latency".into()],
        &[
            "transport.type=tcp".into(),
            "transport.quic.enable_0rtt=true".into(),
        ],
    )
    .expect_err("a QUIC key written on TCP");
    assert_eq!(
        error.key.as_deref(),
        Some("transport.quic.enable_0rtt"),
        "{error}"
    );
    // Each transport with its own settings loads, and the datagram size
    // (which also bounds SWIM's packets) is read on either.
    load(
        &["default".into()],
        &[
            "transport.type=tcp".into(),
            "transport.tcp.nodelay=false".into(),
            "transport.quic.max_datagram_size=1400".into(),
        ],
    )
    .expect("TCP settings on TCP");
    load(&["low-latency".into()], &[]).expect("QUIC settings on QUIC");
}

#[test]
fn no_agent_gets_more_memory_than_the_ceiling() {
    let profile = load(
        &["default".into()],
        &[
            "runtime.max_memory_per_agent=32MB".into(),
            "agents.default_limits.memory=50MB".into(),
            "agents.overrides=[{agent_id: small, memory: 10MB}]".into(),
        ],
    )
    .expect("loads")
    .profile;
    // The default is over the ceiling: capped. An override under it holds.
    assert_eq!(profile.agent_limits("anyone").memory.bytes(), 32 << 20);
    assert_eq!(profile.agent_limits("small").memory.bytes(), 10 << 20);
    // What the profile says, before the cap.
    assert_eq!(profile.agents.limits_for("anyone").memory.bytes(), 50 << 20);
}

/// Values that would make a key act absurdly are refused, each naming its key.
#[test]
fn degenerate_values_are_refused_by_key() {
    for (setting, key) in [
        (
            "runtime.agent_pool.recycle_after=0s",
            "runtime.agent_pool.recycle_after",
        ),
        (
            "runtime.max_memory_per_agent=0",
            "runtime.max_memory_per_agent",
        ),
        ("runtime.agent_heap_size=32KB", "runtime.agent_heap_size"),
        (
            "messaging.parallel_routes=4097",
            "messaging.parallel_routes",
        ),
        (
            "coordination.cluster.probe_timeout=0s",
            "coordination.cluster.probe_timeout",
        ),
        // One allowed value, or a handful: anything else is named.
        ("storage.type=postgres", "storage.type"),
        ("transport.type=udp", "transport.type"),
        (
            "runtime.numa.memory_policy=anywhere",
            "runtime.numa.memory_policy",
        ),
    ] {
        let error = load(&[], &[setting.to_owned()]).expect_err(setting);
        assert_eq!(error.key.as_deref(), Some(key), "{setting}: {error}");
    }
    // At the bounds, each loads.
    for setting in [
        "runtime.agent_pool.recycle_after=1ms",
        "runtime.agent_heap_size=64KB",
        "messaging.parallel_routes=4096",
        // No gossip to a member once it is declared down.
        "coordination.cluster.gossip_to_dead=0",
    ] {
        load(&[], &[setting.to_owned()]).unwrap_or_else(|error| panic!("{setting}: {error}"));
    }
}

/// `enabled` defaults to false, but a `priority_routing:` block that leaves
/// it out asks for the classes it names.
#[test]
fn a_priority_routing_block_without_enabled_turns_it_on() {
    let unset = load(&[], &[]).expect("loads");
    assert!(!unset.profile.messaging.priority_routing.enabled);
    let block = load_text(
        "messaging:\n  priority_routing:\n    queues:\n      - name: only\n        priority: 0\n        max_latency: 5ms\n",
    )
    .expect("loads");
    let routing = &block.profile.messaging.priority_routing;
    assert!(routing.enabled);
    assert_eq!(routing.queues.len(), 1);
    let off = load_text("messaging:\n  priority_routing:\n    enabled: false\n").expect("loads");
    assert!(!off.profile.messaging.priority_routing.enabled);
}

/// Keys that one another outweigh are named at boot (`messaging_notes`).
#[test]
fn messaging_keys_outweighed_by_others_are_named() {
    let throughput = load(&["high-throughput".into()], &[])
        .expect("loads")
        .profile;
    // 10,000 concurrent messages over 16 shards: 625 each, not queue_size.
    assert_eq!(caxton_profiles::mailbox_capacity(&throughput, 16), 625);
    let notes = caxton_profiles::messaging_notes(&throughput, 16);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("holds 625 messages")
            && notes[0].contains("runtime.max_concurrent_messages")
    );
    assert!(notes[1].contains("messaging.batch_size (1000)"));
    // One shard: its share is all 10,000, still below queue_size.
    assert_eq!(caxton_profiles::mailbox_capacity(&throughput, 1), 10_000);

    // low-latency's 1s delivery_timeout comes before the normal and low classes' deadlines.
    let latency = load(&["low-latency".into()], &[]).expect("loads").profile;
    let notes = caxton_profiles::messaging_notes(&latency, 2);
    assert!(
        notes
            .iter()
            .any(|note| note.contains("normal (1s), low (10s)")),
        "{notes:?}"
    );
    let longer = load(
        &["low-latency".into()],
        &["messaging.delivery_timeout=20s".into()],
    )
    .expect("loads")
    .profile;
    assert!(caxton_profiles::messaging_notes(&longer, 2)
        .iter()
        .all(|note| !note.contains("priority_routing")));
}

/// The YAML and serde libraries' wording is said in the profile's terms,
/// and each mistake's hint fits it.
#[test]
fn library_wording_is_said_in_the_profiles_terms() {
    let negative = load(&[], &["runtime.max_agents=-5".into()]).expect_err("negative");
    assert_eq!(negative.key.as_deref(), Some("runtime.max_agents"));
    assert!(
        negative
            .message
            .contains("`-5` is not a whole number from 0 to 4294967295"),
        "{negative}"
    );
    let huge = load_text("runtime:\n  max_agents: 99999999999999999999\n").expect_err("too large");
    assert!(huge.message.contains("from 0 to 4294967295"), "{huge}");

    let two_documents = load_text("runtime:\n  max_agents: 5\n---\nruntime:\n  max_agents: 6\n")
        .expect_err("two documents");
    assert!(
        two_documents
            .message
            .contains("more than one YAML document")
            && !two_documents.to_string().contains("from_str_multiple"),
        "{two_documents}"
    );

    let section_as_value = load(&[], &["runtime=5".into()]).expect_err("a section set to 5");
    assert!(
        section_as_value.message.contains("is a section of keys")
            && !section_as_value.to_string().contains("RuntimeConfig"),
        "{section_as_value}"
    );
    let no_space = load_text("runtime:\n  max_agents:5\n").expect_err("no space after the colon");
    assert!(
        no_space
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("space after the colon"),
        "{no_space}"
    );
    let list = load_text("- runtime:\n    max_agents: 5\n").expect_err("a list");
    assert!(
        list.message.contains("not a mapping of sections")
            && list
                .hint
                .as_deref()
                .unwrap_or_default()
                .contains("not a list"),
        "{list}"
    );

    // A document with no keys sets nothing, like an empty file.
    let empty = load_text("---\n# nothing yet\n").expect("an empty document");
    assert_eq!(empty.profile, load_text("").expect("an empty file").profile);

    let fraction = load(&[], &["runtime.max_memory_per_agent=1.5MB".into()]).expect_err("1.5MB");
    assert!(fraction.message.contains("write `1536KB`"), "{fraction}");
}

/// A check between two keys, one left at its default, points at the one
/// the profile wrote and says the other has its default; an alias clash
/// names the spelling the profile used.
#[test]
fn a_rule_between_two_keys_points_at_the_one_written() {
    let pool = load_text("runtime:\n  max_agents: 7\n").expect_err("default pool above max_agents");
    assert_eq!(pool.key.as_deref(), Some("runtime.agent_pool_size"));
    let line = pool.location.as_ref().and_then(|location| location.line);
    assert_eq!(line, Some(2), "points at max_agents: {pool}");
    assert!(
        pool.hint.as_deref().unwrap_or_default().contains(
            "`runtime.agent_pool_size` is not set in any layer, so it has its default; `runtime.max_agents` is what this profile sets"
        ),
        "{pool}"
    );

    let batch =
        load_text("messaging:\n  queue_size: 10\n").expect_err("default batch above the queue");
    assert_eq!(
        batch.location.as_ref().and_then(|location| location.line),
        Some(2),
        "{batch}"
    );

    let aliases = load_text("transport:\n  max_streams: 1000\n  max_concurrent_streams: 200\n")
        .expect_err("two spellings, two values");
    assert!(
        aliases
            .message
            .contains("`transport.max_streams` in the same profile sets 1000"),
        "{aliases}"
    );
}

/// Limits past what any agent could use are refused at load; a long probe
/// timeout the guide writes alone takes an interval that fits it.
#[test]
fn unusable_limits_are_refused_and_unwritten_intervals_fit() {
    let memory = load(&[], &["runtime.max_memory_per_agent=8GiB".into()]).expect_err("above 4GiB");
    assert_eq!(memory.key.as_deref(), Some("runtime.max_memory_per_agent"));
    assert!(memory.message.contains("4GiB"), "{memory}");
    load(&[], &["runtime.max_memory_per_agent=4GiB".into()]).expect("4GiB is the most");

    let idle =
        load(&[], &["transport.quic.idle_timeout=0s".into()]).expect_err("zero idle timeout");
    assert_eq!(
        idle.key.as_deref(),
        Some("transport.quic.idle_timeout"),
        "{idle}"
    );

    // The performance tuning guide's cross-region block.
    let dir = tempfile::tempdir().expect("temp dir");
    let wan = write_profile(
        &dir,
        "wan.yaml",
        "coordination:\n  cluster:\n    probe_timeout: 2s\n    gossip_interval: 1s\n    indirect_probes: 5\n",
    );
    let loaded = load(&[wan], &[]).expect("the guide's block loads");
    let cluster = &loaded.profile.coordination.cluster;
    assert_eq!(
        cluster.probe_interval.get(),
        std::time::Duration::from_secs(4)
    );
    // A short timeout leaves the default interval alone.
    let lan = load(&[], &["coordination.cluster.probe_timeout=300ms".into()]).expect("lan");
    assert_eq!(
        lan.profile.coordination.cluster.probe_interval.get(),
        std::time::Duration::from_secs(1)
    );
}
