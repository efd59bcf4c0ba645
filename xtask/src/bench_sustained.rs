//! `cargo xtask bench --sustained`: one VM run of `tests/vm/bench-sustained.sh`, sustained 4k
//! random writes of three times a cache's share over a SAN that destages slower than flash
//! (QEMU write throttling and dm-delay), for peerflash wb with flow control, dm-writecache and
//! bcache, beside the raw SAN; then a table on stdout, `target/bench/sustained.json` and the chart
//! `target/bench/sustained.svg` (one panel per configuration and depth: IOPS, fill and the worst
//! latency of each second, each relative to the raw SAN of the same run). Issue 16's goals are
//! reported as ratios against the raw SAN of the same run.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::build::Built;
use crate::env;
use crate::setup::Kernel;
use crate::vm::VmConfig;

/// The caches, in the order the guest runs them: (file stem, label).
const CACHES: [(&str, &str); 3] = [
    ("pf-wb", "peerflash wb (flow control)"),
    ("writecache", "dm-writecache"),
    ("bcache", "bcache writeback"),
];
const DEPTHS: [u32; 2] = [1, 16];
/// The SAN's write IOPS under QEMU's throttling (and dm-delay's 3 ms in the guest).
const SAN_WRITE_IOPS: u32 = 1000;
/// Each cache's share of the NVMe device.
const SHARE_MIB: u64 = 64;

/// fio's whole-run figures of one run.
#[derive(Serialize, Clone, Copy, Default, Debug, PartialEq)]
pub(crate) struct Whole {
    pub(crate) iops: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

/// One run of a cache.
#[derive(Serialize, Clone, Debug, Default)]
struct Run {
    config: &'static str,
    qd: u32,
    whole: Whole,
    /// Per second: IOPS, the worst latency (us), the fill (percent of the share).
    iops: Vec<f64>,
    max_lat_us: Vec<f64>,
    fill_pct: Vec<f64>,
    /// Mean and coefficient of variation of the per-second IOPS over the second half of the run.
    steady_iops: f64,
    steady_cv: f64,
    /// Dirty bytes when fio ended, and the ms until the cache was clean.
    dirty_bytes: u64,
    clean_ms: u64,
    /// Dirty bytes left when the wait for clean gave up (5 min; 0: it got clean).
    dirty_left: u64,
    /// peerflash's counters (write_waits, paced_writes, ...), empty for the others.
    counters: Vec<(String, u64)>,
    /// The goals, as ratios against the raw SAN at the same depth.
    max_lat_vs_san_p99: f64,
    p99_vs_san_p99: f64,
    steady_vs_san_iops: f64,
    /// Time to clean over (dirty bytes / the raw SAN's QD16 write bandwidth).
    clean_vs_predicted: f64,
}

#[derive(Serialize)]
struct Report {
    san_write_iops_throttle: u32,
    share_mib: u64,
    san: Vec<(u32, Whole)>,
    runs: Vec<Run>,
}

/// fio's JSON: write IOPS, p99 and max of the completion-to-submission latency.
pub(crate) fn parse_whole(path: &Path) -> Result<Whole> {
    let w = &crate::bench::fio_write(path)?;
    let iops = w["iops"].as_f64().context("no write iops")?;
    let p99 = w["lat_ns"]["percentile"]["99.000000"].as_f64().context("no write lat_ns p99")?;
    let max = w["lat_ns"]["max"].as_f64().context("no write lat_ns max")?;
    if iops <= 0.0 {
        bail!("{}: no writes completed", path.display());
    }
    Ok(Whole { iops, p99_us: p99 / 1000.0, max_us: max / 1000.0 })
}

/// A fio per-second log (`msec, value, direction, bs, offset[, prio]`): the values by second.
pub(crate) fn parse_log(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("no log {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split(',').map(str::trim);
        let (Some(_), Some(v)) = (f.next(), f.next()) else { bail!("{}: bad line {line:?}", path.display()) };
        out.push(v.parse::<f64>().with_context(|| format!("{}: bad value in {line:?}", path.display()))?);
    }
    Ok(out)
}

/// Mean and coefficient of variation.
pub(crate) fn mean_cv(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, if mean > 0.0 { var.sqrt() / mean } else { 0.0 })
}

/// A `.clean` file: ms to clean, dirty bytes when the writes ended, dirty bytes left when the
/// wait for clean ended (0: clean).
pub(crate) fn parse_clean(path: &Path) -> Result<(u64, u64, u64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("no {}", path.display()))?;
    let n: Vec<u64> = text.split_whitespace().map(|w| w.parse::<u64>()).collect::<Result<_, _>>().with_context(|| format!("{}: not numbers", path.display()))?;
    match n[..] {
        [ms, dirty] => Ok((ms, dirty, 0)),
        [ms, dirty, left] => Ok((ms, dirty, left)),
        _ => bail!("{}: expected two or three numbers", path.display()),
    }
}

/// Runs the benchmark (or, with `report_only`, reports the last run again).
pub fn run(k: &Kernel, b: &Built, report_only: bool) -> Result<()> {
    let repo = env::repo_root();
    let dir = repo.join("target/bench-sustained");
    let mut cfg = VmConfig::new("pf-sustained", &dir);
    if !report_only {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // Flash on a RAM file; the SAN image on disk, its writes throttled by QEMU.
        let shm = Path::new("/dev/shm/peerflash-sustained-cache.img");
        let _ = std::fs::remove_file(shm);
        cfg.cache_image = shm.to_path_buf();
        cfg.cache_size = 1 << 30;
        cfg.san_drive_opts = Some(format!("throttling.iops-write={SAN_WRITE_IOPS}"));
        cfg.env.push(("PF_SUSTAINED_SHARE_MIB".into(), SHARE_MIB.to_string()));
        let script = repo.join("tests/vm/bench-sustained.sh").display().to_string();
        eprintln!("==> booting a VM to run {script} (3 caches x 2 depths, each writing {} MiB)", 3 * SHARE_MIB);
        crate::bench::run_vm(k, b, &cfg, &dir, script, Duration::from_secs(5400), shm)?;
    }
    let out = cfg.run_dir.join("sustained");
    let report = collect(&out)?;
    print(&report);
    let bench = repo.join("target/bench");
    std::fs::create_dir_all(&bench)?;
    std::fs::write(bench.join("sustained.json"), serde_json::to_string_pretty(&report)?)?;
    chart(&report, &bench.join("sustained.svg"))?;
    eprintln!("wrote target/bench/sustained.json and target/bench/sustained.svg");
    Ok(())
}

fn collect(out: &Path) -> Result<Report> {
    let mut san = Vec::new();
    for qd in DEPTHS {
        san.push((qd, parse_whole(&out.join(format!("san-qd{qd}.json")))?));
    }
    let san_of = |qd: u32| san.iter().find(|s| s.0 == qd).map(|s| s.1).unwrap_or_default();
    let san_bw = san_of(16).iops * 4096.0;
    let mut runs = Vec::new();
    for (config, _) in CACHES {
        for qd in DEPTHS {
            let base = out.join(format!("{config}-qd{qd}"));
            let whole = parse_whole(&base.with_extension("json"))?;
            let iops = parse_log(&out.join(format!("{config}-qd{qd}_iops.1.log")))?;
            let max_lat_us: Vec<f64> = parse_log(&out.join(format!("{config}-qd{qd}_lat.1.log")))?.iter().map(|ns| ns / 1000.0).collect();
            let fill_text = std::fs::read_to_string(base.with_extension("fill")).unwrap_or_default();
            let fill_pct: Vec<f64> = fill_text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect();
            let (clean_ms, dirty_bytes, dirty_left) = parse_clean(&base.with_extension("clean"))?;
            let counters = std::fs::read_to_string(base.with_extension("counters"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect();
            let (steady_iops, steady_cv) = mean_cv(&iops[iops.len() / 2..]);
            let s = san_of(qd);
            let predicted_ms = if san_bw > 0.0 { dirty_bytes as f64 / san_bw * 1000.0 } else { 0.0 };
            runs.push(Run {
                config,
                qd,
                whole,
                max_lat_vs_san_p99: whole.max_us / s.p99_us.max(1.0),
                p99_vs_san_p99: whole.p99_us / s.p99_us.max(1.0),
                steady_vs_san_iops: steady_iops / s.iops.max(1.0),
                clean_vs_predicted: if predicted_ms > 0.0 { clean_ms as f64 / predicted_ms } else { 0.0 },
                iops,
                max_lat_us,
                fill_pct,
                steady_iops,
                steady_cv,
                dirty_bytes,
                clean_ms,
                dirty_left,
                counters,
            });
        }
    }
    Ok(Report { san_write_iops_throttle: SAN_WRITE_IOPS, share_mib: SHARE_MIB, san, runs })
}

fn print(r: &Report) {
    println!("\nsustained 4k random writes of 3 x a {} MiB share; SAN throttled to {} write IOPS behind dm-delay 3 ms", r.share_mib, r.san_write_iops_throttle);
    for (qd, s) in &r.san {
        println!("  raw SAN QD{qd}: {:.0} IOPS, p99 {:.0} us, max {:.0} us", s.iops, s.p99_us, s.max_us);
    }
    println!(
        "\n{:<11} {:>3} {:>7} {:>9} {:>9} {:>7} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "cache", "QD", "IOPS", "p99 us", "max us", "steady", "CV", "max/p99S", "p99/p99S", "st/IOPSS", "clean s", "clean/pr"
    );
    for x in &r.runs {
        println!(
            "{:<11} {:>3} {:>7.0} {:>9.0} {:>9.0} {:>7.0} {:>6.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1} {:>8.2}",
            x.config,
            x.qd,
            x.whole.iops,
            x.whole.p99_us,
            x.whole.max_us,
            x.steady_iops,
            x.steady_cv,
            x.max_lat_vs_san_p99,
            x.p99_vs_san_p99,
            x.steady_vs_san_iops,
            x.clean_ms as f64 / 1000.0,
            x.clean_vs_predicted
        );
        if x.dirty_left > 0 {
            println!("{:<15} not clean after {:.0} s: {} dirty bytes left of {}", "", x.clean_ms as f64 / 1000.0, x.dirty_left, x.dirty_bytes);
        }
        if !x.counters.is_empty() {
            let c: Vec<String> = x.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("{:<15} {}", "", c.join(", "));
        }
    }
    println!("  (S: the raw SAN at the same depth; steady: mean of the per-second IOPS over the run's second half; clean/pr: time to clean over dirty bytes / the raw SAN's QD16 bandwidth)");
    println!("  goals (issue 16): max/p99S <= 2, p99/p99S <= 1, st/IOPSS >= 1, CV <= 0.25, clean/pr within 0.8..1.2, write_waits 0");
}

/// One panel per cache and depth: per second, IOPS over the raw SAN's, the fill (fraction of the
/// share) and the worst latency over the raw SAN's p99, all on one axis (clipped at 4).
fn chart(r: &Report, path: &Path) -> Result<()> {
    let e = |e: &dyn std::fmt::Debug| anyhow::anyhow!("{e:?}");
    let root = SVGBackend::new(path, (1400, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root
        .titled("sustained 4k random writes, 3x the share: per second, relative to the raw SAN", ("sans-serif", 22))
        .map_err(|x| e(&x))?;
    let panels = root.split_evenly((CACHES.len(), DEPTHS.len()));
    for (panel, run) in panels.iter().zip(r.runs.iter()) {
        let san = r.san.iter().find(|s| s.0 == run.qd).map(|s| s.1).unwrap_or_default();
        let secs = run.iops.len().max(run.fill_pct.len()).max(1);
        let mut c = ChartBuilder::on(panel)
            .caption(format!("{} QD{}", run.config, run.qd), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0..secs, 0.0..4.0)
            .map_err(|x| e(&x))?;
        c.configure_mesh().x_desc("s").draw().map_err(|x| e(&x))?;
        let series: [(&str, RGBColor, Vec<f64>); 3] = [
            ("IOPS / SAN IOPS", RGBColor(0x1f, 0x77, 0xb4), run.iops.iter().map(|v| v / san.iops.max(1.0)).collect()),
            ("fill", RGBColor(0x2c, 0xa0, 0x2c), run.fill_pct.iter().map(|v| v / 100.0).collect()),
            ("max latency / SAN p99", RGBColor(0xd6, 0x27, 0x28), run.max_lat_us.iter().map(|v| v / san.p99_us.max(1.0)).collect()),
        ];
        for (label, color, ys) in series {
            c.draw_series(LineSeries::new(ys.iter().enumerate().map(|(i, y)| (i, y.min(4.0))), &color))
                .map_err(|x| e(&x))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_logs_and_figures_are_read() {
        let dir = std::env::temp_dir().join(format!("pf-sustained-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x_iops.1.log");
        std::fs::write(&log, "1000, 812, 1, 4096, 0\n2000, 790, 1, 4096, 0, 0\n").unwrap();
        assert_eq!(parse_log(&log).unwrap(), vec![812.0, 790.0]);
        std::fs::write(&log, "1000; 812\n").unwrap();
        assert!(parse_log(&log).is_err());
        let json = dir.join("x.json");
        std::fs::write(&json, r#"note: x
{"jobs":[{"write":{"iops":900.5,"lat_ns":{"mean":1.0,"max":9000000.0,"percentile":{"99.000000":3000000}}}}]}"#).unwrap();
        assert_eq!(parse_whole(&json).unwrap(), Whole { iops: 900.5, p99_us: 3000.0, max_us: 9000.0 });
        let clean = dir.join("x.clean");
        std::fs::write(&clean, "6890 27992064\n").unwrap();
        assert_eq!(parse_clean(&clean).unwrap(), (6890, 27992064, 0));
        std::fs::write(&clean, "300000 5 4\n").unwrap();
        assert_eq!(parse_clean(&clean).unwrap(), (300000, 5, 4));
        std::fs::write(&clean, "1\n").unwrap();
        assert!(parse_clean(&clean).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let (m, cv) = mean_cv(&[10.0, 10.0, 10.0]);
        assert_eq!((m, cv), (10.0, 0.0));
        let (m, cv) = mean_cv(&[5.0, 15.0]);
        assert!((m - 10.0).abs() < 1e-9 && (cv - 0.5).abs() < 1e-9);
    }
}
