//! A progress bar for long jobs: on a terminal only (never in a log, a pipe or `--json`
//! output), fed from the job's own counters by a thread until it is finished.

use std::io::IsTerminal;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the bar shows at one moment.
pub struct Sample {
    /// Items done (files, keys, versions), and how many there are, once known.
    pub done: u64,
    pub total: Option<u64>,
    /// Bytes done, for the rate; None for a job without a size.
    pub bytes: Option<u64>,
}

pub struct Bar {
    bar: indicatif::ProgressBar,
    feeder: JoinHandle<()>,
}

impl Bar {
    /// A bar counting `unit` (files, keys) from `sample`, or None when stderr is not a
    /// terminal or `quiet` (a `--json` run).
    pub fn start(
        quiet: bool,
        unit: &str,
        sample: impl Fn() -> Sample + Send + 'static,
    ) -> Option<Bar> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let template =
            format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit}  {{msg}}  ETA {{eta}}");
        let style = indicatif::ProgressStyle::with_template(&template).ok()?;
        let bar = indicatif::ProgressBar::new(0).with_style(style);
        let b = bar.clone();
        let start = Instant::now();
        let feeder = std::thread::spawn(move || {
            while !b.is_finished() {
                let s = sample();
                if let Some(t) = s.total {
                    b.set_length(t.max(s.done));
                }
                b.set_position(s.done);
                if let Some(bytes) = s.bytes {
                    let rate = bytes as f64 / start.elapsed().as_secs_f64().max(0.001);
                    b.set_message(format!(
                        "{}  {}/s",
                        indicatif::HumanBytes(bytes),
                        indicatif::HumanBytes(rate as u64)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Some(Bar { bar, feeder })
    }

    /// A bar fed from a library job's `Progress` (items and bytes).
    pub fn of(quiet: bool, unit: &str, p: &Arc<crate::progress::Progress>) -> Option<Bar> {
        let p = p.clone();
        Bar::start(quiet, unit, move || {
            let (done, total, bytes) = p.get();
            Sample {
                done,
                total,
                bytes: (bytes > 0).then_some(bytes),
            }
        })
    }

    /// Print `line` on stderr (or stdout) above the bar.
    pub fn println(&self, line: &str, err: bool) {
        self.bar.suspend(|| match err {
            true => eprintln!("{line}"),
            false => println!("{line}"),
        });
    }

    /// Take the bar off the screen and stop feeding it.
    pub fn finish(self) {
        self.bar.finish_and_clear();
        let _ = self.feeder.join();
    }
}
