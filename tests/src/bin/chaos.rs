//! `chaos`: the long fault-injection run (`scripts/chaos --minutes N --seed S`). Starts a
//! cluster, injects random faults for N minutes, checks the history, prints the summary, and
//! exits 1 if the checker found anything fatal. `--faults a,b,c` runs those kinds in order
//! instead. See `docs/reliability.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrymq_e2e::chaos::nemesis::FaultKind;
use ferrymq_e2e::chaos::{run, ChaosOptions, Feature, Schedule};

const USAGE: &str = "usage: chaos [--minutes N] [--seed S] [--nodes 3|5] [--faults kind,kind...] \
[--idempotence auto|on|off] [--groups auto|on|off] [--rate VALUES_PER_S] [--dir DIR] [--keep]
fault kinds: kill-leader kill-follower kill-controller pause isolate-leader split-minority \
one-way-loss netem rolling-restart kill-two disk-full corrupt-segment";

fn feature(v: &str) -> Result<Feature> {
    Ok(match v {
        "auto" => Feature::Auto,
        "on" => Feature::On,
        "off" => Feature::Off,
        _ => bail!("expected auto, on or off, got {v}\n{USAGE}"),
    })
}

fn parse() -> Result<ChaosOptions> {
    let mut opts = ChaosOptions::soak(1, 10);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--minutes" => {
                let m: u64 = val()?.parse()?;
                opts.schedule = Schedule::Random {
                    duration: Duration::from_secs(m * 60),
                };
            }
            "--seed" => opts.seed = val()?.parse()?,
            "--nodes" => opts.nodes = val()?.parse()?,
            "--faults" => {
                let kinds = val()?
                    .split(',')
                    .map(|k| {
                        FaultKind::parse(k).with_context(|| format!("unknown fault {k}\n{USAGE}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                opts.schedule = Schedule::Kinds(kinds);
            }
            "--idempotence" => opts.idempotence = feature(&val()?)?,
            "--groups" => opts.groups = feature(&val()?)?,
            "--rate" => opts.rate_per_s = val()?.parse()?,
            "--dir" => opts.dir = Some(PathBuf::from(val()?)),
            "--keep" => opts.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a}\n{USAGE}"),
        }
    }
    anyhow::ensure!(opts.nodes == 3 || opts.nodes == 5, "--nodes must be 3 or 5");
    Ok(opts)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let opts = parse()?;
    let report = run(&opts).await?;
    println!("{}", report.text);
    if !report.verdict.ok() {
        eprintln!("run directory kept: {}", report.dir.display());
        std::process::exit(1);
    }
    Ok(())
}
