//! The operator's view of a running broker: Prometheus metrics that match known activity, every
//! admin HTTP endpoint, every CLI subcommand with its exit code, and a three-node cluster in
//! which a paused broker shows up as fenced in the admin API, the CLI and the metrics.

use std::time::{Duration, Instant};

use ferrymq_e2e::cluster::Cluster;
use ferrymq_e2e::{ferrymq, free_port, http, http_get_ok, metric, scrape, topic, BrokerProcess};

/// Polls `f` until it returns `Some`, for at most `timeout` (external state: another process).
fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("key-{}:value-{i}\n", i % 7))
        .collect()
}

#[test]
fn metrics_follow_what_producers_and_consumers_did() {
    let b = BrokerProcess::start(&[]).unwrap();
    let t = topic("metrics");
    let create = ferrymq(&["topic", "create", &t, "-p", "2", "-b", &b.addr], "");
    assert_eq!(create.code, 0, "{create:?}");
    let before = scrape(&b.admin_addr);
    assert_eq!(
        metric(&before, "ferrymq_topic_messages_in_total", &[("topic", &t)]),
        None,
        "nothing produced yet"
    );
    let requests_before =
        metric(&before, "ferrymq_requests_total", &[("api", "Produce")]).unwrap_or(0.0);

    const N: usize = 250;
    let produce = ferrymq(
        &["produce", "-t", &t, "--key-separator", ":", "-b", &b.addr],
        &lines(N),
    );
    assert_eq!(produce.code, 0, "{produce:?}");
    let after = scrape(&b.admin_addr);
    let m = |name: &str, labels: &[(&str, &str)]| metric(&after, name, labels);
    assert_eq!(
        m("ferrymq_topic_messages_in_total", &[("topic", &t)]),
        Some(N as f64)
    );
    assert!(m("ferrymq_topic_bytes_in_total", &[("topic", &t)]).unwrap() > (N * 10) as f64);
    let produces = m("ferrymq_requests_total", &[("api", "Produce")]).unwrap() - requests_before;
    assert!(
        (1.0..=2.0).contains(&produces),
        "one request per partition: {produces}"
    );
    assert!(
        m(
            "ferrymq_request_duration_seconds_count",
            &[("api", "Produce")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        m("ferrymq_log_fsync_duration_seconds_count", &[]).unwrap() >= 1.0,
        "acks=all fsyncs"
    );
    let leo: f64 = (0..2)
        .map(|p| {
            m(
                "ferrymq_log_end_offset",
                &[("topic", &t), ("partition", &p.to_string())],
            )
            .unwrap()
        })
        .sum();
    assert_eq!(leo, N as f64, "log end offsets add up to what was produced");
    let hw: f64 = (0..2)
        .map(|p| {
            m(
                "ferrymq_high_watermark",
                &[("topic", &t), ("partition", &p.to_string())],
            )
            .unwrap()
        })
        .sum();
    assert_eq!(hw, N as f64);
    assert_eq!(
        m("ferrymq_log_segments", &[("topic", &t), ("partition", "0")]),
        Some(1.0)
    );
    assert!(
        m(
            "ferrymq_log_size_bytes",
            &[("topic", &t), ("partition", "0")]
        )
        .unwrap()
            > 0.0
    );
    assert!(m("ferrymq_partitions", &[("state", "leader")]).unwrap() >= 2.0);
    assert_eq!(m("ferrymq_partitions", &[("state", "offline")]), Some(0.0));
    assert_eq!(m("ferrymq_controller_active", &[]), Some(1.0));
    assert_eq!(
        m("ferrymq_cluster_brokers", &[("state", "live")]),
        Some(1.0)
    );
    assert_eq!(
        m("ferrymq_cluster_brokers", &[("state", "fenced")]),
        Some(0.0)
    );
    assert_eq!(m("ferrymq_node_ready", &[]), Some(1.0));
    assert!(m("ferrymq_metadata_applied_offset", &[]).unwrap() > 0.0);
    assert!(m("process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(m("process_open_fds", &[]).unwrap() > 3.0);
    assert_eq!(m("ferrymq_produce_purgatory_size", &[]), Some(0.0));

    let consume = ferrymq(
        &["consume", "-t", &t, "-n", &N.to_string(), "-b", &b.addr],
        "",
    );
    assert_eq!(consume.code, 0, "{consume:?}");
    assert_eq!(consume.stdout.lines().count(), N);
    let bad = ferrymq(
        &[
            "consume", "-t", &t, "-p", "0", "--from", "99999", "-b", &b.addr,
        ],
        "",
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("OFFSET_OUT_OF_RANGE"), "{bad:?}");
    let last = scrape(&b.admin_addr);
    assert_eq!(
        metric(&last, "ferrymq_topic_messages_out_total", &[("topic", &t)]),
        Some(N as f64)
    );
    assert_eq!(
        metric(&last, "ferrymq_topic_bytes_out_total", &[("topic", &t)]),
        m("ferrymq_topic_bytes_in_total", &[("topic", &t)]),
        "every byte produced was read once"
    );
    assert_eq!(
        metric(
            &last,
            "ferrymq_request_errors_total",
            &[("api", "Fetch"), ("error", "OFFSET_OUT_OF_RANGE")]
        ),
        Some(1.0)
    );
    let text = http_get_ok(&b.admin_addr, "/metrics").body;
    assert!(
        text.contains("# TYPE ferrymq_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# HELP ferrymq_topic_messages_in_total "),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ferrymq_topic_messages_in_total counter"),
        "{text}"
    );
}

#[test]
fn admin_port_zero_picks_a_free_port_and_logs_it() {
    // BrokerProcess passes `--admin-listen 127.0.0.1:0` and finds the port in the log line.
    let mut b = BrokerProcess::start(&[]).unwrap();
    assert!(!b.admin_addr.ends_with(":0"), "{}", b.admin_addr);
    let first = b.admin_addr.clone();
    let live = http_get_ok(&first, "/health/live").json();
    assert_eq!(live["status"], "live");
    assert_eq!(b.stop().unwrap(), 0);
    b.restart().unwrap();
    assert_eq!(
        http_get_ok(&b.admin_addr, "/health/ready").json()["status"],
        "ready"
    );
}

#[test]
fn logs_are_one_json_object_per_line_on_request() {
    let mut b = BrokerProcess::start(&["log.format=json"]).unwrap();
    let t = topic("jsonlog");
    assert_eq!(ferrymq(&["topic", "create", &t, "-b", &b.addr], "").code, 0);
    assert_eq!(b.stop().unwrap(), 0);
    let log = b.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in\n{log}"))
    };
    assert!(find("admin API listening")["fields"]["admin_listen"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert_eq!(find("FerryMQ broker ready")["level"], "INFO");
    let opened = find("partition opened");
    assert_eq!(opened["fields"]["partition"], format!("{t}-0"));
    assert_eq!(opened["fields"]["leader_epoch"], 0);
    assert_eq!(
        find("broker stopped cleanly")["target"],
        "ferrymq_broker::broker"
    );
}

#[test]
fn admin_api_answers_every_endpoint() {
    let b = BrokerProcess::start(&[]).unwrap();
    let a = b.admin_addr.as_str();
    assert_eq!(http_get_ok(a, "/health/live").json()["status"], "live");
    let ready = http_get_ok(a, "/health/ready").json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["node_id"], 1);

    // A policy first, so the topic created next takes its settings.
    let t = topic("mirrored");
    let pattern = format!("{t}*");
    let policy = format!(
        r#"{{"name":"mirror-all","pattern":"{pattern}","replicas":"all","min_insync_replicas":1}}"#
    );
    assert_eq!(http_get_ok(a, "/v1/policies").json(), serde_json::json!([]));
    let created = http(a, "POST", "/v1/policies", Some(&policy), None).unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let listed = http_get_ok(a, "/v1/policies").json();
    assert_eq!(listed[0]["name"], "mirror-all");
    assert_eq!(listed[0]["replicas"], "all");
    let bad = http(
        a,
        "POST",
        "/v1/policies",
        Some(r#"{"name":"x","pattern":"y","replicas":0}"#),
        None,
    )
    .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"], "bad_request");
    let garbage = http(a, "POST", "/v1/policies", Some("{nope"), None).unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.body);

    let produce = ferrymq(&["topic", "create", &t, "-b", &b.addr], "");
    assert_eq!(produce.code, 0, "{produce:?}");
    let out = ferrymq(&["produce", "-t", &t, "-b", &b.addr], "a\nb\nc\n");
    assert_eq!(out.code, 0, "{out:?}");

    let cluster = http_get_ok(a, "/v1/cluster").json();
    assert_eq!(cluster["controller_id"], 1);
    assert_eq!(cluster["this_node_is_controller"], true);
    assert_eq!(cluster["brokers"], 1);
    assert_eq!(cluster["fenced_brokers"], serde_json::json!([]));
    assert_eq!(cluster["offline_partitions"], 0);
    assert_eq!(cluster["policies"], 1);
    assert!(cluster["cluster_id"].as_str().unwrap().len() >= 8);

    let brokers = http_get_ok(a, "/v1/brokers").json();
    assert_eq!(brokers[0]["id"], 1);
    assert_eq!(brokers[0]["state"], "live");
    assert_eq!(brokers[0]["is_controller"], true);
    assert_eq!(
        format!(
            "{}:{}",
            brokers[0]["host"].as_str().unwrap(),
            brokers[0]["port"]
        ),
        b.addr
    );

    let topics = http_get_ok(a, "/v1/topics").json();
    let summary = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == t.as_str())
        .expect("topic listed");
    assert_eq!(summary["partitions"], 1);
    let detail = http_get_ok(a, &format!("/v1/topics/{t}")).json();
    assert_eq!(
        detail["configs"]["min.insync.replicas"], "1",
        "set by the policy"
    );
    let p0 = &detail["partitions"][0];
    assert_eq!(p0["leader"], 1);
    assert_eq!(p0["isr"], serde_json::json!([1]));
    assert_eq!(p0["local"]["role"], "leader");
    assert_eq!(p0["local"]["high_watermark"], 3);
    assert_eq!(p0["local"]["log_end_offset"], 3);
    assert_eq!(p0["local"]["log_start_offset"], 0);
    assert_eq!(p0["local"]["segments"], 1);
    let missing = http(a, "GET", "/v1/topics/no-such-topic", None, None).unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");

    assert_eq!(http_get_ok(a, "/v1/groups").json(), serde_json::json!([]));
    let unknown_group = http(a, "GET", "/v1/groups/some-group", None, None).unwrap();
    assert_eq!(unknown_group.status, 404, "{}", unknown_group.body);
    assert_eq!(unknown_group.json()["error"], "not_found");
    let elect = http(
        a,
        "POST",
        "/v1/leadership/preferred-election",
        Some("{}"),
        None,
    )
    .unwrap();
    assert_eq!(elect.status, 200, "{}", elect.body);
    let outcome = elect.json();
    let mine = outcome
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["topic"] == t.as_str())
        .expect("every partition answered");
    assert_eq!(mine["outcome"], "already_preferred");
    assert_eq!(mine["leader"], 1);
    let unknown = http(
        a,
        "POST",
        "/v1/leadership/preferred-election",
        Some(r#"{"topics":[{"topic":"nope","partitions":[0]}]}"#),
        None,
    )
    .unwrap();
    assert_eq!(unknown.status, 200, "{}", unknown.body);
    assert_eq!(unknown.json()[0]["outcome"], "unknown_partition");
    assert_eq!(
        http(a, "GET", "/v1/nothing-here", None, None)
            .unwrap()
            .status,
        404
    );

    let deleted = http(a, "DELETE", "/v1/policies/mirror-all", None, None).unwrap();
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let again = http(a, "DELETE", "/v1/policies/mirror-all", None, None).unwrap();
    assert_eq!(again.status, 404, "{}", again.body);
}

#[test]
fn mutating_admin_endpoints_need_the_token_once_set() {
    let b = BrokerProcess::start(&["admin.token=s3cret-token"]).unwrap();
    let a = b.admin_addr.as_str();
    let body = r#"{"name":"p","pattern":"x-*","replicas":1}"#;
    let none = http(a, "POST", "/v1/policies", Some(body), None).unwrap();
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.json()["error"], "unauthorized");
    let wrong = http(a, "POST", "/v1/policies", Some(body), Some("guess")).unwrap();
    assert_eq!(wrong.status, 401);
    let right = http(a, "POST", "/v1/policies", Some(body), Some("s3cret-token")).unwrap();
    assert_eq!(right.status, 201, "{}", right.body);
    assert_eq!(
        http_get_ok(a, "/v1/policies").json()[0]["name"],
        "p",
        "reads stay open"
    );
    let cli = ferrymq(&["policy", "delete", "p", "--admin", a], "");
    assert_eq!(cli.code, 1, "{cli:?}");
    assert!(cli.stderr.contains("401"), "{cli:?}");
    let cli = ferrymq(
        &[
            "policy",
            "delete",
            "p",
            "--admin",
            a,
            "--token",
            "s3cret-token",
        ],
        "",
    );
    assert_eq!(cli.code, 0, "{cli:?}");
    assert!(
        !b.log().contains("s3cret-token"),
        "the token is never logged"
    );
}

#[test]
fn cli_subcommands_work_against_a_broker() {
    let b = BrokerProcess::start(&[]).unwrap();
    let bs = b.addr.as_str();
    let run = |args: &[&str], stdin: &str| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-b", bs]);
        ferrymq(&all, stdin)
    };
    let t = topic("cli");

    let created = run(
        &[
            "topic",
            "create",
            &t,
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(created.code, 0, "{created:?}");
    assert!(created.stdout.contains("3 partitions"), "{created:?}");
    let dup = run(&["topic", "create", &t], "");
    assert_eq!(dup.code, 1, "{dup:?}");
    assert!(dup.stderr.contains("TOPIC_ALREADY_EXISTS"), "{dup:?}");
    let list = run(&["topic", "list"], "");
    assert_eq!(list.code, 0);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&t) && l.contains(" 3 ")),
        "{list:?}"
    );

    let produced = run(
        &[
            "produce",
            "-t",
            &t,
            "--key-separator",
            "=",
            "-H",
            "source=test",
            "-H",
            "n=1",
        ],
        "alpha=1\nbeta=2\ngamma=3\nalpha=4\n",
    );
    assert_eq!(produced.code, 0, "{produced:?}");
    assert!(
        produced.stderr.contains("produced 4 messages"),
        "{produced:?}"
    );
    let no_sep = run(&["produce", "-t", &t, "--key-separator", "="], "novalue\n");
    assert_eq!(no_sep.code, 1, "{no_sep:?}");

    let all = run(&["consume", "-t", &t, "-f", "%k=%v|%h|%p"], "");
    assert_eq!(all.code, 0, "{all:?}");
    let mut got: Vec<&str> = all.stdout.lines().collect();
    got.sort();
    assert_eq!(got.len(), 4, "{all:?}");
    assert!(got[0].starts_with("alpha=1|source=test,n=1|"), "{got:?}");
    let alpha_partitions: Vec<&str> = got
        .iter()
        .filter(|l| l.starts_with("alpha="))
        .map(|l| l.rsplit('|').next().unwrap())
        .collect();
    assert_eq!(
        alpha_partitions[0], alpha_partitions[1],
        "one key, one partition"
    );

    let p = alpha_partitions[0];
    let from_offset = run(
        &["consume", "-t", &t, "-p", p, "--from", "1", "-f", "%o %v"],
        "",
    );
    assert_eq!(from_offset.code, 0, "{from_offset:?}");
    assert!(
        from_offset.stdout.lines().all(|l| !l.starts_with("0 ")),
        "{from_offset:?}"
    );
    assert!(
        from_offset.stdout.lines().any(|l| l.ends_with(" 4")),
        "{from_offset:?}"
    );
    let future = format!("@{}", 4_000_000_000_000i64);
    let from_time = run(
        &[
            "consume",
            "-t",
            &t,
            "--from",
            &future,
            "--idle-timeout-ms",
            "300",
        ],
        "",
    );
    assert_eq!(from_time.code, 0, "{from_time:?}");
    assert_eq!(from_time.stdout, "", "nothing after a future timestamp");
    let from_past = run(&["consume", "-t", &t, "--from", "@0", "-n", "4"], "");
    assert_eq!(from_past.stdout.lines().count(), 4, "{from_past:?}");

    let described = run(&["topic", "describe", &t], "");
    assert_eq!(described.code, 0, "{described:?}");
    assert!(
        described.stdout.contains("retention.ms=3600000"),
        "{described:?}"
    );
    let hws: i64 = described
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| {
            l.split_whitespace()
                .nth(7)
                .and_then(|h| h.parse::<i64>().ok())
        })
        .sum();
    assert_eq!(hws, 4, "high watermarks add up: {described:?}");
    let altered = run(
        &["topic", "alter", &t, "-p", "4", "-c", "retention.ms=60000"],
        "",
    );
    assert_eq!(altered.code, 0, "{altered:?}");
    let described = run(&["topic", "describe", &t], "");
    assert!(described.stdout.contains("partitions 4"), "{described:?}");
    assert!(
        described.stdout.contains("retention.ms=60000"),
        "{described:?}"
    );
    let nothing = run(&["topic", "alter", &t], "");
    assert_eq!(nothing.code, 1);

    // A lagging consumer group, found with the CLI, the admin API and the metrics.
    let g = format!("{t}-readers");
    let first = run(&["consume", "-t", &t, "-g", &g, "-n", "3"], "");
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout.lines().count(), 3, "{first:?}");
    let more = run(&["produce", "-t", &t, "-p", "0"], "5\n6\n7\n8\n9\n");
    assert_eq!(more.code, 0, "{more:?}");
    let listed = run(&["group", "list"], "");
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        listed.stdout.lines().any(|l| l.starts_with(&g)),
        "{listed:?}"
    );
    let described = run(&["group", "describe", &g], "");
    assert_eq!(described.code, 0, "{described:?}");
    assert!(described.stdout.contains("total lag 6"), "{described:?}");
    let a = b.admin_addr.as_str();
    let view = http_get_ok(a, &format!("/v1/groups/{g}")).json();
    assert_eq!(view["total_lag"], 6, "{view}");
    assert!(http_get_ok(a, "/v1/groups")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["group_id"] == g.as_str()));
    let lag: f64 = scrape(a)
        .iter()
        .filter(|x| {
            x.name == "ferrymq_consumer_group_lag_messages" && x.labels.get("group") == Some(&g)
        })
        .map(|x| x.value)
        .sum();
    assert_eq!(lag, 6.0, "the metric agrees");
    let plan = run(&["group", "reset-offsets", &g, "-t", &t, "--to-latest"], "");
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("dry run"), "{plan:?}");
    assert!(run(&["group", "describe", &g], "")
        .stdout
        .contains("total lag 6"));
    let reset = run(
        &[
            "group",
            "reset-offsets",
            &g,
            "-t",
            &t,
            "--to-latest",
            "--execute",
        ],
        "",
    );
    assert_eq!(reset.code, 0, "{reset:?}");
    assert!(run(&["group", "describe", &g], "")
        .stdout
        .contains("total lag 0"));
    let nothing_new = run(
        &["consume", "-t", &t, "-g", &g, "--idle-timeout-ms", "300"],
        "",
    );
    assert_eq!(nothing_new.stdout, "", "{nothing_new:?}");
    let to_start = run(
        &[
            "group",
            "reset-offsets",
            &g,
            "-t",
            &t,
            "--to-earliest",
            "--execute",
        ],
        "",
    );
    assert_eq!(to_start.code, 0, "{to_start:?}");
    assert!(run(&["group", "describe", &g], "")
        .stdout
        .contains("total lag 9"));
    let deleted = run(&["group", "delete", &g], "");
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(!run(&["group", "list"], "").stdout.contains(&g));
    assert_eq!(
        http(a, "GET", &format!("/v1/groups/{g}"), None, None)
            .unwrap()
            .status,
        404
    );

    let pc = ferrymq(
        &[
            "policy",
            "create",
            "two",
            "--pattern",
            "two-*",
            "--replicas",
            "2",
            "--min-insync-replicas",
            "1",
            "--admin",
            a,
        ],
        "",
    );
    assert_eq!(pc.code, 0, "{pc:?}");
    let pl = ferrymq(&["policy", "list", "--admin", a], "");
    assert!(
        pl.stdout
            .lines()
            .any(|l| l.starts_with("two ") && l.contains("two-*")),
        "{pl:?}"
    );
    let bad = ferrymq(
        &[
            "policy",
            "create",
            "x",
            "--pattern",
            "x",
            "--replicas",
            "many",
            "--admin",
            a,
        ],
        "",
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert_eq!(
        ferrymq(&["policy", "delete", "two", "--admin", a], "").code,
        0
    );
    assert_eq!(
        ferrymq(&["policy", "delete", "two", "--admin", a], "").code,
        1
    );

    let status = run(&["cluster", "status"], "");
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("live controller"), "{status:?}");

    let deleted = run(&["topic", "delete", &t], "");
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert_eq!(run(&["topic", "describe", &t], "").code, 1);

    // Scripts can tell "cannot reach" (3) and "bad usage" (2) from a refusal (1).
    let dead = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["topic", "list", "-b", &dead],
        vec!["cluster", "status", "-b", &dead],
    ] {
        assert_eq!(ferrymq(&args, "").code, 3, "{args:?}");
    }
    assert_eq!(ferrymq(&["policy", "list", "--admin", &dead], "").code, 3);
    assert_eq!(ferrymq(&["topic", "frobnicate"], "").code, 2);
    assert_eq!(ferrymq(&["produce"], "").code, 2, "--topic is required");
    for cmd in [
        vec!["--help"],
        vec!["topic", "--help"],
        vec!["topic", "create", "--help"],
        vec!["topic", "list", "--help"],
        vec!["topic", "describe", "--help"],
        vec!["topic", "delete", "--help"],
        vec!["topic", "alter", "--help"],
        vec!["group", "--help"],
        vec!["group", "list", "--help"],
        vec!["group", "describe", "--help"],
        vec!["group", "reset-offsets", "--help"],
        vec!["group", "delete", "--help"],
        vec!["produce", "--help"],
        vec!["consume", "--help"],
        vec!["cluster", "status", "--help"],
        vec!["policy", "list", "--help"],
        vec!["policy", "create", "--help"],
        vec!["policy", "delete", "--help"],
    ] {
        let out = ferrymq(&cmd, "");
        assert_eq!(out.code, 0, "{cmd:?}");
        assert!(out.stdout.contains("Usage:"), "{cmd:?}: {out:?}");
    }
}

/// Sum over `nodes` of the series `name` for topic `t`.
fn sum_for_topic(nodes: &[BrokerProcess], name: &str, t: &str) -> f64 {
    nodes
        .iter()
        .flat_map(|n| scrape(&n.admin_addr))
        .filter(|x| x.name == name && x.labels.get("topic").map(String::as_str) == Some(t))
        .map(|x| x.value)
        .sum()
}

#[test]
fn a_paused_broker_shows_as_fenced_in_the_api_the_cli_and_the_metrics() {
    let cluster = Cluster::start(3, 3, &[]).unwrap();
    let nodes = &cluster.nodes;
    let bootstrap = cluster.bootstrap();
    let a = nodes[0].admin_addr.as_str();
    eventually(Duration::from_secs(20), "three live brokers", || {
        let c = http_get_ok(a, "/v1/cluster").json();
        (c["brokers"] == 3 && c["fenced_brokers"] == serde_json::json!([])).then_some(())
    });
    let t = topic("replicated");
    let created = ferrymq(
        &[
            "topic", "create", &t, "-p", "3", "-r", "3", "-b", &bootstrap,
        ],
        "",
    );
    assert_eq!(created.code, 0, "{created:?}");
    let produced = ferrymq(&["produce", "-t", &t, "-b", &bootstrap], &lines(30));
    assert_eq!(produced.code, 0, "{produced:?}");
    let healthy = ferrymq(&["cluster", "status", "-b", &bootstrap], "");
    assert_eq!(healthy.code, 0, "{healthy:?}");
    for n in nodes {
        assert_eq!(
            http_get_ok(&n.admin_addr, "/health/ready").json()["status"],
            "ready"
        );
    }
    // Followers caught up: every leader reports its two followers with no lag.
    eventually(Duration::from_secs(20), "followers caught up", || {
        let lags: Vec<f64> = nodes
            .iter()
            .flat_map(|n| scrape(&n.admin_addr))
            .filter(|x| {
                x.name == "ferrymq_replica_lag_messages" && x.labels.get("topic") == Some(&t)
            })
            .map(|x| x.value)
            .collect();
        (lags.len() == 6 && lags.iter().all(|l| *l == 0.0)).then_some(())
    });

    nodes[2].signal("STOP");
    eventually(
        Duration::from_secs(20),
        "node 3 fenced in /v1/brokers",
        || {
            let brokers = http_get_ok(a, "/v1/brokers").json();
            (brokers[2]["id"] == 3 && brokers[2]["state"] == "fenced").then_some(())
        },
    );
    let overview = eventually(
        Duration::from_secs(20),
        "partitions moved off node 3",
        || {
            let c = http_get_ok(a, "/v1/cluster").json();
            (c["under_replicated_partitions"] == 3 && c["offline_partitions"] == 0).then_some(c)
        },
    );
    assert_eq!(overview["fenced_brokers"], serde_json::json!([3]));
    let detail = http_get_ok(a, &format!("/v1/topics/{t}")).json();
    for p in detail["partitions"].as_array().unwrap() {
        assert_ne!(p["leader"], 3, "{p}");
        assert_eq!(p["offline_replicas"], serde_json::json!([3]), "{p}");
        assert!(
            !p["isr"].as_array().unwrap().contains(&serde_json::json!(3)),
            "{p}"
        );
    }

    let status = ferrymq(&["cluster", "status", "-b", &nodes[0].addr], "");
    assert_eq!(status.code, 2, "unhealthy: {status:?}");
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with('3') && l.contains("fenced")),
        "{status:?}"
    );

    // Cluster-wide gauges come from the active controller (a live one: 1 or 2).
    let controller = overview["controller_id"].as_i64().unwrap() as usize;
    assert!(controller == 1 || controller == 2, "{overview}");
    let samples = eventually(Duration::from_secs(10), "controller metrics", || {
        let s = scrape(&nodes[controller - 1].admin_addr);
        (metric(&s, "ferrymq_cluster_brokers", &[("state", "fenced")]) == Some(1.0)).then_some(s)
    });
    assert_eq!(
        metric(&samples, "ferrymq_controller_active", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric(&samples, "ferrymq_cluster_brokers", &[("state", "live")]),
        Some(2.0)
    );
    assert_eq!(
        metric(&samples, "ferrymq_cluster_under_replicated_partitions", &[]),
        Some(3.0)
    );
    assert_eq!(
        metric(&samples, "ferrymq_cluster_offline_partitions", &[]),
        Some(0.0)
    );
    let other = 3 - controller;
    assert_eq!(
        metric(
            &scrape(&nodes[other - 1].admin_addr),
            "ferrymq_cluster_brokers",
            &[("state", "fenced")]
        ),
        Some(0.0),
        "only the active controller reports cluster-wide counts"
    );
    // Leader-side counts: the two live brokers lead all three partitions, each under-replicated.
    eventually(Duration::from_secs(10), "leader-side counts", || {
        let under: f64 = nodes[..2]
            .iter()
            .map(|n| {
                metric(
                    &scrape(&n.admin_addr),
                    "ferrymq_partitions",
                    &[("state", "under_replicated")],
                )
                .unwrap_or(0.0)
            })
            .sum();
        let shrinks = sum_for_topic(&nodes[..2], "ferrymq_isr_shrinks_total", &t);
        (under == 3.0 && shrinks >= 3.0).then_some(())
    });
    let logs = format!("{}{}", nodes[0].log(), nodes[1].log());
    assert!(
        logs.lines()
            .any(|l| l.contains("ISR changed") && l.contains(&t) && l.contains("leader_epoch=")),
        "an ISR change is logged with partition and epoch"
    );
    assert!(logs
        .lines()
        .any(|l| l.contains("became leader") && l.contains(&t)));

    // Back: node 3 is unfenced, catches up, rejoins every ISR.
    nodes[2].signal("CONT");
    eventually(Duration::from_secs(30), "node 3 back in every ISR", || {
        let c = http_get_ok(a, "/v1/cluster").json();
        (c["fenced_brokers"] == serde_json::json!([]) && c["under_replicated_partitions"] == 0)
            .then_some(())
    });
    eventually(Duration::from_secs(30), "node 3 ready again", || {
        let r = http(&nodes[2].admin_addr, "GET", "/health/ready", None, None).ok()?;
        (r.status == 200).then_some(())
    });
    assert!(sum_for_topic(nodes, "ferrymq_isr_expands_total", &t) >= 3.0);

    // Preferred leader election puts each partition's first replica back in the lead.
    let elected = http(
        a,
        "POST",
        "/v1/leadership/preferred-election",
        Some(&format!(r#"{{"topics":[{{"topic":"{t}"}}]}}"#)),
        None,
    )
    .unwrap();
    assert_eq!(elected.status, 200, "{}", elected.body);
    for r in elected.json().as_array().unwrap() {
        assert!(
            r["outcome"] == "elected" || r["outcome"] == "already_preferred",
            "{r}"
        );
    }
    let detail = http_get_ok(a, &format!("/v1/topics/{t}")).json();
    for p in detail["partitions"].as_array().unwrap() {
        assert_eq!(p["leader"], p["replicas"][0], "{p}");
    }
}
