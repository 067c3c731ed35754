//! What every run that starts its own servers shares: the broker binary, a scratch directory
//! for their data and logs (removed afterwards unless something went wrong), broker overrides,
//! and a way to let earlier writes settle between measurements.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// Command-line options of a run that starts brokers.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The `ferrymq` binary [default: $CARGO_TARGET_DIR/release/ferrymq, else
    /// target/release/ferrymq].
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// Where to make the run's scratch directory (broker data, sink files, logs); it should be
    /// on the disk being measured [default: the system temporary directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// A Kafka-named broker setting, passed to every broker as `--override KEY=VALUE`.
    #[arg(long = "broker-override", value_name = "KEY=VALUE")]
    pub broker_overrides: Vec<String>,
    /// Keep the scratch directory even when everything went well.
    #[arg(long)]
    pub keep_work_dir: bool,
}

impl RunArgs {
    /// The broker binary, which must exist.
    pub fn broker_bin(&self) -> anyhow::Result<PathBuf> {
        let path = self.broker_bin.clone().unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from);
            target.join("release").join("ferrymq")
        });
        if !path.is_file() {
            bail!(
                "broker binary {} not found; build it or pass --broker-bin",
                path.display()
            );
        }
        Ok(path)
    }

    /// Creates `<work dir>/<prefix>-<pid>` and says so on stderr.
    pub fn create_work_dir(&self, prefix: &str) -> anyhow::Result<PathBuf> {
        let parent = self.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = parent.join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!("scratch directory {}", dir.display());
        Ok(dir)
    }

    /// The overrides as one report cell.
    pub fn overrides_label(&self) -> String {
        if self.broker_overrides.is_empty() {
            "none".to_string()
        } else {
            self.broker_overrides.join(", ")
        }
    }
}

/// The end of a run that started servers in a scratch directory.
pub struct FinishedRun<'a> {
    /// The report, printed on stdout.
    pub markdown: String,
    /// Problems the report lists.
    pub problems: usize,
    /// The scratch directory, removed unless there were problems or it is to be kept.
    pub work_dir: &'a Path,
    /// Keep the scratch directory even without problems.
    pub keep_work_dir: bool,
    /// Where in the kept directory to look, for the message saying it was kept.
    pub logs: &'a str,
}

impl FinishedRun<'_> {
    /// Prints the report, removes or keeps the scratch directory, and fails if the run met
    /// problems (after the report, so its figures are not lost).
    pub fn publish(self) -> anyhow::Result<()> {
        println!("{}", self.markdown);
        if self.problems == 0 && !self.keep_work_dir {
            std::fs::remove_dir_all(self.work_dir)
                .with_context(|| format!("removing {}", self.work_dir.display()))?;
        } else {
            eprintln!("kept {} ({})", self.work_dir.display(), self.logs);
        }
        if self.problems > 0 {
            bail!(
                "{} problem(s) during the run; see the report",
                self.problems
            );
        }
        Ok(())
    }
}

/// Writes back dirty pages left by earlier measurements so that their writeback does not land
/// in the middle of the next one.
pub async fn settle_disk() {
    let synced = tokio::task::spawn_blocking(|| Command::new("sync").status()).await;
    if !matches!(synced, Ok(Ok(status)) if status.success()) {
        eprintln!("`sync` failed; earlier writes may still be flushing");
    }
}
