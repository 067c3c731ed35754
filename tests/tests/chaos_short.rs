//! The short fault-injection schedule CI runs: every fault kind once against a 3-node cluster
//! (network faults in namespaces when run as root; skipped with a message otherwise), then the
//! checker over the whole history. `scripts/chaos` runs the long version; `docs/reliability.md`
//! has the results.

use ferrymq_e2e::chaos::{run, ChaosOptions};

/// Fixed, so a failure replays the same decisions: `scripts/chaos --seed 20261126 --faults ...`.
const SEED: u64 = 20261126;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_loses_duplicates_and_reorders_nothing_acknowledged() {
    let seed = std::env::var("FERRYMQ_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let report = run(&ChaosOptions::short(seed)).await.expect("chaos run");
    eprintln!("{}", report.text);
    assert!(
        report.verdict.ok(),
        "the checker found anomalies (run directory kept: {}):\n{}",
        report.dir.display(),
        report.text
    );
}
