//! `watch`: counter rates, refreshed every interval, like `watch` on
//! `stackdump stats`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::collect::{self, Unreadable};
use super::report::Render;

#[derive(Serialize, Clone)]
pub struct RateRow {
    pub name: String,
    pub value: u64,
    /// Change since the previous read.
    pub delta: u64,
    pub per_sec: f64,
}

/// One refresh of one stack.
#[derive(Serialize, Clone)]
pub struct WatchSample {
    pub stack: String,
    /// Refresh number, from 1.
    pub refresh: u64,
    /// Time between the two reads, ms.
    pub elapsed_ms: f64,
    pub counters: Vec<RateRow>,
}

#[derive(Serialize)]
pub struct WatchReport {
    pub interval_ms: u64,
    pub samples: Vec<WatchSample>,
    pub unreadable: Vec<Unreadable>,
}

fn sample_table(s: &mut String, w: &WatchSample) {
    let _ = writeln!(
        s,
        "stack {}: refresh {}, rates over {:.0} ms",
        w.stack, w.refresh, w.elapsed_ms
    );
    let _ = writeln!(
        s,
        "  {:<24} {:>14} {:>10} {:>12}",
        "COUNTER", "VALUE", "DELTA", "RATE/S"
    );
    let mut any = false;
    for c in w.counters.iter().filter(|c| c.value != 0 || c.delta != 0) {
        any = true;
        let _ = writeln!(
            s,
            "  {:<24} {:>14} {:>10} {:>12.1}",
            c.name, c.value, c.delta, c.per_sec
        );
    }
    if !any {
        let _ = writeln!(s, "  (every counter is zero)");
    }
}

impl Render for WatchReport {
    fn table(&self) -> String {
        let mut s = String::new();
        for w in &self.samples {
            sample_table(&mut s, w);
        }
        for u in &self.unreadable {
            let _ = writeln!(s, "{}", u.message());
        }
        s
    }
}

/// Refreshes every `interval_ms`, `count` times (forever without it). A
/// table is printed at each refresh; JSON is one document at the end with
/// `count`, else one document per refresh, one per line.
pub fn watch(
    json: bool,
    interval_ms: u64,
    count: Option<u64>,
    only: Option<&str>,
) -> Result<(), String> {
    let (arenas, unreadable) = collect::split(collect::targets(only)?);
    if !json {
        for u in &unreadable {
            super::out(&format!("{}\n", u.message()));
        }
    }
    let mut prev: Vec<(Instant, Vec<(&'static str, u64)>)> = arenas
        .iter()
        .map(|(_, a)| (Instant::now(), collect::counter_values(a)))
        .collect();
    let mut all = vec![];
    let mut refresh = 0;
    while count.is_none_or(|c| refresh < c) {
        std::thread::sleep(Duration::from_millis(interval_ms.max(1)));
        refresh += 1;
        let mut batch = vec![];
        for ((name, a), p) in arenas.iter().zip(prev.iter_mut()) {
            let now = Instant::now();
            let cur = collect::counter_values(a);
            let secs = now.duration_since(p.0).as_secs_f64().max(1e-9);
            let counters = cur
                .iter()
                .map(|&(n, v)| {
                    let old = p.1.iter().find(|(m, _)| *m == n).map_or(v, |(_, o)| *o);
                    let delta = v.wrapping_sub(old);
                    RateRow {
                        name: n.into(),
                        value: v,
                        delta,
                        per_sec: delta as f64 / secs,
                    }
                })
                .collect();
            batch.push(WatchSample {
                stack: name.clone(),
                refresh,
                elapsed_ms: secs * 1000.0,
                counters,
            });
            *p = (now, cur);
        }
        if json && count.is_none() {
            let doc = WatchReport {
                interval_ms,
                samples: batch,
                unreadable: unreadable.clone(),
            };
            super::out(&format!(
                "{}\n",
                serde_json::to_string(&doc).map_err(|e| e.to_string())?
            ));
        } else if json {
            all.extend(batch);
        } else {
            let mut s = String::new();
            for w in &batch {
                sample_table(&mut s, w);
            }
            if batch.is_empty() {
                s += "no stacks\n";
            }
            super::out(&s);
        }
    }
    if json && count.is_some() {
        let doc = WatchReport {
            interval_ms,
            samples: all,
            unreadable,
        };
        super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        ));
    }
    Ok(())
}
