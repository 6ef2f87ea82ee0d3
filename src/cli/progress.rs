//! Rendering build progress: the one [`Reporter`] the CLI installs.
//!
//! On a terminal: a bar with done/total and the cached count, one line per running build
//! with its name and elapsed time, and a bar per download. Otherwise: one plain line per
//! finished (built or failed) derivation, so logs of CI runs stay readable (cached
//! derivations are only counted), and for a download one line when it starts and one per
//! 10% (at least 1 MiB; per 16 MiB without a length), so a small file prints one line.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::{Event, Reporter};
use crate::store::Hash;

/// The CLI's progress display (stderr).
#[derive(Debug)]
pub struct Progress {
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    Bars {
        multi: MultiProgress,
        main: ProgressBar,
        running: HashMap<Hash, ProgressBar>,
        /// One bar per running download, by URL.
        downloads: HashMap<String, ProgressBar>,
        cached: usize,
        built: usize,
    },
    Plain {
        /// Bytes at the last line printed, per URL (downloads run concurrently).
        downloads: HashMap<String, u64>,
    },
    Quiet,
}

impl Progress {
    /// Bars if stderr is a terminal, plain lines otherwise; nothing if `quiet`.
    pub fn new(quiet: bool) -> Progress {
        let state = if quiet {
            State::Quiet
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let main = multi.add(ProgressBar::new(0));
            main.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            State::Bars {
                multi,
                main,
                running: HashMap::new(),
                downloads: HashMap::new(),
                cached: 0,
                built: 0,
            }
        } else {
            State::Plain {
                downloads: HashMap::new(),
            }
        };
        Progress {
            state: Mutex::new(state),
        }
    }

    /// Clear the bars (before printing results).
    pub fn finish(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Bars {
            multi,
            main,
            running,
            downloads,
            ..
        } = &*state
        {
            for bar in running.values().chain(downloads.values()) {
                bar.finish_and_clear();
            }
            main.finish_and_clear();
            let _ = multi.clear();
        }
    }

    /// Print a line without tearing the bars.
    pub fn println(&self, line: &str) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            State::Plain { .. } | State::Quiet => eprintln!("{line}"),
        }
    }
}

impl Reporter for Progress {
    fn event(&self, mut event: Event) {
        // Names come from `.bramble` files and DAO documents.
        match &mut event {
            Event::Built { name, .. }
            | Event::Failed { name, .. }
            | Event::BuiltElsewhere { name, .. }
            | Event::Spliced { name, .. }
            | Event::Started { name, .. }
            | Event::Cached { name, .. } => {
                if let std::borrow::Cow::Owned(clean) = super::terminal::sanitise(name) {
                    *name = clean;
                }
            }
            Event::Download { url, .. } => {
                if let std::borrow::Cow::Owned(clean) = super::terminal::sanitise(url) {
                    *url = clean;
                }
            }
            Event::Planned { .. } => {}
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Quiet => {}
            State::Plain { downloads } => match event {
                Event::Built { name, elapsed, .. } => {
                    // One write (an unbuffered `eprintln!` makes one per piece): the
                    // scheduler reports from its loop, between a build and its dependents.
                    let line = format!("built {name} in {}\n", seconds(elapsed));
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                }
                Event::Failed { name, elapsed, .. } => {
                    eprintln!("failed {name} after {}", seconds(elapsed));
                }
                Event::BuiltElsewhere { name, .. } => {
                    eprintln!("reused {name}, built meanwhile by another process");
                }
                Event::Spliced {
                    name,
                    generated,
                    new,
                    ..
                } => {
                    eprintln!("spliced {name}: {generated} derivations generated, {new} new");
                }
                Event::Download { url, done, total } => {
                    let step = total.map_or(16 << 20, |t| (t / 10).max(1 << 20));
                    let last = downloads.entry(url.clone()).or_insert(0);
                    if done == 0 {
                        *last = 0;
                        eprintln!("downloading `{url}`");
                    } else if done >= *last + step {
                        *last = done;
                        match total {
                            Some(t) => eprintln!("  {} of {} KiB", done >> 10, t >> 10),
                            None => eprintln!("  {} KiB", done >> 10),
                        }
                    }
                }
                Event::Planned { .. } | Event::Cached { .. } | Event::Started { .. } => {}
            },
            State::Bars {
                multi,
                main,
                running,
                downloads,
                cached,
                built,
            } => {
                match event {
                    Event::Download { url, done, total } => {
                        let bar = downloads.entry(url.clone()).or_insert_with(|| {
                            let bar = multi.add(ProgressBar::no_length());
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "  {msg} {bytes}/{total_bytes} {bytes_per_sec}",
                                )
                                .expect("static template"),
                            );
                            bar.set_message(url.clone());
                            bar
                        });
                        if let Some(total) = total {
                            bar.set_length(total);
                        }
                        bar.set_position(done);
                        if total.is_some_and(|t| done >= t)
                            && let Some(bar) = downloads.remove(&url)
                        {
                            bar.finish_and_clear();
                            multi.remove(&bar);
                        }
                        return;
                    }
                    Event::Planned { total } => main.set_length(total as u64),
                    Event::Cached { .. } | Event::BuiltElsewhere { .. } => {
                        *cached += 1;
                        main.inc(1);
                    }
                    Event::Started { drv, name } => {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                                .expect("static template"),
                        );
                        bar.set_message(name);
                        bar.enable_steady_tick(Duration::from_millis(120));
                        running.insert(drv, bar);
                    }
                    Event::Built { drv, .. } => {
                        *built += 1;
                        main.inc(1);
                        if let Some(bar) = running.remove(&drv) {
                            bar.finish_and_clear();
                            multi.remove(&bar);
                        }
                    }
                    Event::Failed { drv, name, .. } => {
                        main.inc(1);
                        if let Some(bar) = running.remove(&drv) {
                            bar.finish_and_clear();
                            multi.remove(&bar);
                        }
                        let _ = multi.println(format!("failed {name}"));
                    }
                    Event::Spliced {
                        name,
                        generated,
                        new,
                        ..
                    } => {
                        let _ = multi.println(format!(
                            "spliced {name}: {generated} derivations generated, {new} new"
                        ));
                    }
                }
                main.set_message(format!("built {built}, cached {cached}"));
            }
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
