//! `cargo xtask bench`: one VM run of `tests/vm/bench.sh` (4k random writes at QD1 and QD16 on
//! the raw delayed SAN, the raw NVMe device, peerflash wt and wb, dm-writecache and bcache on the
//! same devices), then a table on stdout, `target/bench/bench.json` and the chart
//! `target/bench/bench.svg`. Absolute numbers under TCG mean little: compare within the run.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::build::Built;
use crate::env;
use crate::setup::Kernel;
use crate::vm::{Vm, VmConfig};

/// The configurations in the order the guest runs them: (file stem, label).
const CONFIGS: [(&str, &str); 7] = [
    ("san", "raw SAN (dm-delay 3 ms)"),
    ("nvme", "raw NVMe"),
    ("pf-wt", "peerflash wt"),
    ("pf-wb", "peerflash wb"),
    ("pf-wb-lazy", "peerflash wb, delay 30 s"),
    ("writecache", "dm-writecache"),
    ("bcache", "bcache writeback"),
];
const DEPTHS: [u32; 2] = [1, 16];
/// Seconds of the idle window of `--count-insns` (bench.sh).
const IDLE_SECS: f64 = 2.0;

/// One fio run.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) iops: f64,
    pub(crate) mean_us: f64,
    pub(crate) p99_us: f64,
    /// CPU time of the whole guest per write completed, in a window of the run.
    cpu_us_per_write: f64,
    /// Share of the guest's CPUs busy in that window (1.0 = every vCPU all the time).
    cpu_busy: f64,
    /// CPU time per write in CRC32C code (`--profile` only).
    crc_us_per_write: Option<f64>,
    /// Guest instructions (all vCPUs) per write completed, in the same window (`--count-insns`
    /// only).
    insns_per_write: Option<f64>,
    /// The same before the idle background is taken off.
    insns_raw_per_write: Option<f64>,
    /// `crc32` instructions among them.
    crc32_per_write: Option<f64>,
}

/// The CPU window of a run (`CONFIG-qdN.cpu`: busy ticks, all ticks, ticks per second, writes):
/// (CPU microseconds per write, busy share, all CPU seconds, writes).
fn parse_cpu(path: &Path) -> Result<(f64, f64, f64, f64)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("no result {}", path.display()))?;
    let v: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not four numbers", path.display()))?;
    let [busy, all, hz, writes] = v[..] else {
        bail!("{}: not four numbers", path.display());
    };
    if hz <= 0.0 || all <= 0.0 || writes <= 0.0 {
        bail!("{}: no CPU time or no writes in the window", path.display());
    }
    Ok((busy / hz * 1e6 / writes, busy / all, all / hz, writes))
}

/// The share (0..1) of a perf profile's samples (`CONFIG-qdN.prof`: "P% symbol" lines) in
/// CRC32C code, whichever implementation the kernel picked.
fn parse_crc_share(path: &Path) -> Result<f64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("no profile {}", path.display()))?;
    let mut share = 0.0;
    let mut any = false;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(p), Some(sym)) = (it.next(), it.last()) else {
            continue;
        };
        let Ok(p) = p.trim_end_matches('%').parse::<f64>() else {
            continue;
        };
        any = true;
        if sym.contains("crc32c") {
            share += p / 100.0;
        }
    }
    if !any {
        bail!("{}: an empty profile", path.display());
    }
    Ok(share)
}

#[derive(Serialize)]
struct Row {
    config: &'static str,
    label: &'static str,
    qd: u32,
    #[serde(flatten)]
    sample: Sample,
}

#[derive(Serialize)]
struct Ratio {
    what: String,
    qd: u32,
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    /// The pure core's instructions per operation of the write path (host, callgrind).
    core_insns: Vec<crate::core_cost::OpCost>,
    seconds_per_run: u64,
    /// "bench" (no lock debugging) or "test" (lockdep, `--debug-kernel`).
    kernel: &'static str,
    workload: &'static str,
    results: Vec<Row>,
    ratios: Vec<Ratio>,
    /// `--count-insns`: the instructions of the marker itself (taken off every window).
    marker_insns: Option<u64>,
    /// `--count-insns`: the instructions of an idle 2 s window.
    idle_insns_2s: Option<u64>,
}

/// Reads write IOPS, mean and p99 completion latency (submission to completion) from fio's JSON.
/// Boots the bench VM `cfg` running `script` (console in `dir`), waits at most `limit`, removes
/// the RAM-backed cache image `shm`, prints the guest's output, and fails unless the script
/// exited 0 with a clean kernel log.
pub(crate) fn run_vm(k: &Kernel, b: &Built, cfg: &VmConfig, dir: &Path, script: String, limit: Duration, shm: &Path) -> Result<()> {
    let console = dir.join("console.log");
    let mut vm = Vm::spawn(k, b, cfg, &["sh".into(), script], Some(&console))?;
    let rc = vm.wait(limit);
    let _ = std::fs::remove_file(shm);
    let output = std::fs::read_to_string(cfg.run_dir.join("output.log")).unwrap_or_default();
    eprint!("{output}");
    match rc? {
        Some(0) => {}
        other => bail!("the benchmark VM failed ({other:?}); see {}", console.display()),
    }
    if let Some(why) = crate::verdict::kernel_verdict_for(&cfg.run_dir, k.flavor) {
        bail!("benchmark run: {why}");
    }
    Ok(())
}

/// fio's JSON output in `path` (fio may print notes before it): its first job's `write`.
pub(crate) fn fio_write(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("no result {}", path.display()))?;
    let start = text.find('{').context("no JSON in fio's output")?;
    let mut v: serde_json::Value = serde_json::from_str(&text[start..])
        .with_context(|| format!("fio's JSON in {} does not parse", path.display()))?;
    Ok(v["jobs"][0]["write"].take())
}

pub(crate) fn parse(path: &Path) -> Result<Sample> {
    let w = &fio_write(path)?;
    let iops = w["iops"].as_f64().context("no write iops")?;
    let mean_ns = w["lat_ns"]["mean"]
        .as_f64()
        .context("no write lat_ns.mean")?;
    let p99_ns = w["lat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .context("no write lat_ns p99 (lat_percentiles)")?;
    if iops <= 0.0 {
        bail!("{}: no writes completed", path.display());
    }
    Ok(Sample {
        iops,
        mean_us: mean_ns / 1000.0,
        p99_us: p99_ns / 1000.0,
        cpu_us_per_write: 0.0,
        cpu_busy: 0.0,
        crc_us_per_write: None,
        insns_per_write: None,
        insns_raw_per_write: None,
        crc32_per_write: None,
    })
}

/// Runs the benchmark; `secs` per fio run.
pub fn run(k: &Kernel, b: &Built, secs: u64, profile: bool, count_insns: bool) -> Result<()> {
    if secs < 4 {
        bail!("--secs must be at least 4 (the CPU window starts 2 s into a run)");
    }
    let repo = env::repo_root();
    let dir = repo.join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut cfg = VmConfig::new("pf-bench", &dir);
    // Flash on a RAM file, as fast as the host can make it; the SAN image stays on disk.
    let shm = Path::new("/dev/shm/peerflash-bench-cache.img");
    let _ = std::fs::remove_file(shm);
    cfg.cache_image = shm.to_path_buf();
    cfg.cache_size = 2 << 30;
    cfg.env
        .push(("PF_BENCH_SECS".to_string(), secs.to_string()));
    cfg.env.push((
        "PF_BENCH_PROFILE".to_string(),
        if profile { "1" } else { "0" }.to_string(),
    ));
    // The pure core's costs first (host only, a few seconds): a failure shows before the VM.
    let core = crate::core_cost::measure()?;
    let insns_log = dir.join("insns.log");
    if count_insns {
        let plugin = crate::insns::build_plugin()?;
        cfg.qemu_extra = Some(crate::insns::qemu_opts(&plugin, &insns_log));
        cfg.env.push(("PF_BENCH_MARK".to_string(), "1".to_string()));
    }
    let script = repo.join("tests/vm/bench.sh").display().to_string();
    eprintln!(
        "==> booting a VM to run {script} ({} fio runs of {secs} s)",
        CONFIGS.len() * DEPTHS.len()
    );
    run_vm(k, b, &cfg, &dir, script, Duration::from_secs(3600), shm)?;

    // With --count-insns: the marker's own cost (two markers back to back), an idle window of
    // 2 s, then one window per run, in the order the guest runs them.
    let counted = if count_insns {
        let log = std::fs::read_to_string(&insns_log)
            .with_context(|| format!("no plugin log {}", insns_log.display()))?;
        let w = crate::insns::windows(&log)?;
        let want = 2 + CONFIGS.len() * DEPTHS.len();
        if w.len() != want {
            bail!("{}: {} measurement windows, expected {want}", insns_log.display(), w.len());
        }
        Some(w)
    } else {
        None
    };
    let mut results = Vec::new();
    let mut run_index = 0;
    for (config, label) in CONFIGS {
        for qd in DEPTHS {
            let base = cfg.run_dir.join(format!("bench/{config}-qd{qd}"));
            let mut sample = parse(&base.with_extension("json"))?;
            let (cpu, busy, cpu_secs, writes) = parse_cpu(&base.with_extension("cpu"))?;
            sample.cpu_us_per_write = cpu;
            sample.cpu_busy = busy;
            if profile {
                let share = parse_crc_share(&base.with_extension("prof"))?;
                sample.crc_us_per_write = Some(share * cpu_secs * 1e6 / writes);
            }
            if let Some(w) = &counted {
                let (marker, idle, window) = (w[0], w[1], w[2 + run_index]);
                // The window: from 2 s into the run to 1 s before its end (bench.sh).
                let secs_in = secs.saturating_sub(2) as f64;
                let (raw, net) = crate::insns::per_write(window, marker, idle, IDLE_SECS, secs_in, writes);
                sample.insns_per_write = Some(net);
                sample.insns_raw_per_write = Some(raw);
                sample.crc32_per_write = Some(window.crc32.saturating_sub(marker.crc32) as f64 / writes);
            }
            run_index += 1;
            results.push(Row {
                config,
                label,
                qd,
                sample,
            });
        }
    }
    let get = |config: &str, qd: u32| {
        results
            .iter()
            .find(|r| r.config == config && r.qd == qd)
            .map(|r| r.sample)
    };
    let mut ratios = Vec::new();
    for qd in DEPTHS {
        for (num, den) in [
            ("pf-wb", "writecache"),
            ("pf-wb", "nvme"),
            ("pf-wb", "bcache"),
            ("pf-wb-lazy", "writecache"),
            ("pf-wb-lazy", "nvme"),
            ("pf-wt", "san"),
            ("writecache", "nvme"),
        ] {
            if let (Some(a), Some(b)) = (get(num, qd), get(den, qd)) {
                ratios.push(Ratio {
                    what: format!("{num} / {den} IOPS"),
                    qd,
                    ratio: a.iops / b.iops,
                });
            }
        }
    }

    if counted.is_some() {
        let per = |config: &str, qd: u32| get(config, qd).and_then(|s| s.insns_per_write);
        for qd in DEPTHS {
            for (num, den) in [("pf-wb", "writecache"), ("pf-wb-lazy", "writecache"), ("pf-wb", "bcache"), ("pf-wb", "nvme")] {
                if let (Some(a), Some(b)) = (per(num, qd), per(den, qd)) {
                    ratios.push(Ratio { what: format!("{num} / {den} insns per write"), qd, ratio: a / b });
                }
            }
            if let (Some(a), Some(s), Some(n)) = (per("pf-wt", qd), per("san", qd), per("nvme", qd)) {
                ratios.push(Ratio { what: "pf-wt / (san + nvme) insns per write".into(), qd, ratio: a / (s + n) });
            }
        }
    }
    let kernel = k.flavor.name();
    println!(
        "\n4k random write, libaio, direct, {secs} s per run (one VM, TCG, {kernel} kernel)\n"
    );
    println!(
        "{:<26} {:>4} {:>8} {:>10} {:>10} {:>10} {:>6} {:>10} {:>10} {:>9}",
        "configuration", "QD", "IOPS", "mean (us)", "p99 (us)", "CPU us/wr", "busy", "crc us/wr", "insns/wr", "crc32/wr"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |c| format!("{c:.0}"));
    for r in &results {
        println!(
            "{:<26} {:>4} {:>8.0} {:>10.0} {:>10.0} {:>10.0} {:>5.0}% {:>10} {:>10} {:>9}",
            r.label,
            r.qd,
            r.sample.iops,
            r.sample.mean_us,
            r.sample.p99_us,
            r.sample.cpu_us_per_write,
            r.sample.cpu_busy * 100.0,
            opt(r.sample.crc_us_per_write),
            opt(r.sample.insns_per_write),
            opt(r.sample.crc32_per_write),
        );
    }
    if let Some(w) = &counted {
        println!(
            "\ninsns/wr: guest instructions of all vCPUs per write completed in the same window (QEMU \
             plugin), less the marker's own {} and the idle background\n(an idle 2 s window executed \
             {}, scaled to the window; bench.json also has the figure before that), crc32/wr: crc32 \
             instructions among them.\nUnder the plugin the emulator runs slower: IOPS and CPU time \
             of this run are not comparable with a run without it.",
            w[0].insns, w[1].insns
        );
    }
    println!(
        "\nCPU us/wr: CPU time of the whole guest (all vCPUs) per write completed, busy: share of \
         the vCPUs busy,\nboth over the run from 2 s to its last second{}",
        if profile {
            "; crc us/wr: the part of it in CRC32C code (perf profile; perf slows every run)"
        } else {
            " (--profile adds the CRC32C share)"
        }
    );
    println!();
    for r in &ratios {
        println!("{:<34} QD{:<3} {:.2}x", r.what, r.qd, r.ratio);
    }
    crate::core_cost::print(&core);
    let report = Report {
        core_insns: core,
        seconds_per_run: secs,
        kernel,
        workload: "fio 4k randwrite, libaio, direct=1, 1 GiB span",
        results,
        ratios,
        marker_insns: counted.as_ref().map(|w| w[0].insns),
        idle_insns_2s: counted.as_ref().map(|w| w[1].insns),
    };
    let json = dir.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let svg = dir.join("bench.svg");
    chart(&report, &svg)?;
    println!("\nwrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// Bar charts: IOPS per configuration at QD1 and at QD16 (top row), and the CPU time per write
/// of the same runs (bottom row).
fn chart(report: &Report, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1200, 980)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let root = root
        .titled(
            "peerflash: 4k random write, one VM run (IOPS: higher is better; CPU per write: lower)",
            ("sans-serif", 22),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let panels = root.split_evenly((2, DEPTHS.len()));
    let (iops_row, cpu_row) = panels.split_at(DEPTHS.len());
    for (panel, qd) in iops_row.iter().zip(DEPTHS) {
        bars(panel, report, qd, "IOPS", |s| s.iops)?;
    }
    let counted = report.results.iter().all(|r| r.sample.insns_per_write.is_some());
    for (panel, qd) in cpu_row.iter().zip(DEPTHS) {
        if counted {
            bars(panel, report, qd, "k guest instructions per write", |s| {
                s.insns_per_write.unwrap_or(0.0) / 1000.0
            })?;
        } else {
            bars(panel, report, qd, "CPU us per write", |s| s.cpu_us_per_write)?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// One panel: `metric` of every configuration at depth `qd`, peerflash's bars in blue.
fn bars(
    panel: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    report: &Report,
    qd: u32,
    what: &str,
    metric: impl Fn(&Sample) -> f64,
) -> Result<()> {
    let items: Vec<(&str, f64, bool)> = report
        .results
        .iter()
        .filter(|r| r.qd == qd)
        .map(|r| (r.config, metric(&r.sample), r.config.starts_with("pf-")))
        .collect();
    bar_panel(panel, &format!("{what}, QD{qd}"), what, &items)
}

/// A bar chart panel titled `title`: one bar per `(name, value, highlighted)`, highlighted ones
/// in blue, each with its value above it.
pub(crate) fn bar_panel(
    panel: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    items: &[(&str, f64, bool)],
) -> Result<()> {
    let top = items.iter().map(|i| i.1).fold(1.0, f64::max) * 1.15;
    let n = items.len() as u32;
    let mut c = ChartBuilder::on(panel)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let names: Vec<&str> = items.iter().map(|i| i.0).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(items.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).copied().unwrap_or("").into(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.draw_series(items.iter().enumerate().map(|(i, &(_, v, hi))| {
        let color = if hi {
            RGBColor(0x1f, 0x77, 0xb4)
        } else {
            RGBColor(0x99, 0x99, 0x99)
        };
        let i = i as u32;
        Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), v)],
            color.filled(),
        )
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.draw_series(items.iter().enumerate().map(|(i, &(_, v, _))| {
        Text::new(
            format!("{v:.0}"),
            (SegmentValue::CenterOf(i as u32), v + top * 0.02),
            ("sans-serif", 13),
        )
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of one test, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("pf-bench-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cpu_window_is_parsed_and_checked() {
        let d = Scratch::new("cpu");
        let tmp = |n: &str, t: &str| d.file(n, t);
        // 300 busy ticks of 1000 at 100 per second, 6000 writes: 3 s / 6000 = 500 us a write.
        let (us, busy, secs, writes) = parse_cpu(&tmp("a.cpu", "300 1000 100 6000\n")).unwrap();
        assert!((us - 500.0).abs() < 1e-9);
        assert!((busy - 0.3).abs() < 1e-9);
        assert!((secs - 10.0).abs() < 1e-9);
        assert!((writes - 6000.0).abs() < 1e-9);
        assert!(parse_cpu(&tmp("b.cpu", "300 1000 100 0\n")).is_err());
        assert!(parse_cpu(&tmp("c.cpu", "300 1000 100\n")).is_err());
        assert!(parse_cpu(&tmp("d.cpu", "x 1000 100 5\n")).is_err());
    }

    #[test]
    fn crc_share_sums_every_crc32c_symbol() {
        let d = Scratch::new("crc");
        let tmp = |n: &str, t: &str| d.file(n, t);
        let prof = "50.00% pv_native_safe_halt\n15.00% crc32c_x86_3way\n1.00% crc32c\n\
                    2.50% nvme_write_sq_db\n";
        let share = parse_crc_share(&tmp("a.prof", prof)).unwrap();
        assert!((share - 0.16).abs() < 1e-9);
        assert!(parse_crc_share(&tmp("b.prof", "")).is_err());
    }

    #[test]
    fn chart_has_both_rows() {
        let d = Scratch::new("chart");
        let sample = |iops: f64, cpu: f64| Sample {
            iops,
            mean_us: 1.0,
            p99_us: 2.0,
            cpu_us_per_write: cpu,
            cpu_busy: 0.5,
            crc_us_per_write: None,
            insns_per_write: None,
            insns_raw_per_write: None,
            crc32_per_write: None,
        };
        let mut results = Vec::new();
        for qd in DEPTHS {
            results.push(Row {
                config: "nvme",
                label: "raw NVMe",
                qd,
                sample: sample(1234.0, 71.0),
            });
            results.push(Row {
                config: "pf-wb",
                label: "peerflash wb",
                qd,
                sample: sample(987.0, 193.0),
            });
        }
        let report = Report {
            core_insns: Vec::new(),
            seconds_per_run: 8,
            kernel: "bench",
            workload: "test",
            results,
            ratios: Vec::new(),
            marker_insns: None,
            idle_insns_2s: None,
        };
        let path = d.file("chart.svg", "");
        chart(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for want in [
            "IOPS, QD16",
            "CPU us per write, QD1",
            "1234",
            "193",
            "pf-wb",
        ] {
            assert!(svg.contains(want), "the chart lacks {want}");
        }
    }
}
