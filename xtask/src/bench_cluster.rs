//! `cargo xtask bench --cluster`: one three-node cluster run of
//! `tests/vm/scenarios/bench-wbp.sh` (4k random writes at QD1 and QD16 on node0: raw NVMe, the
//! raw delayed SAN, peerflash wt, wb, wbp with one and with two replica hosts, beside the 4 KiB
//! TCP round trip between the nodes), then a table on stdout, `target/bench/cluster.json` and
//! the chart `target/bench/cluster.svg`. Absolute numbers under TCG mean little: the ratios
//! compare configurations measured in the same run.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::bench::{bar_panel, parse, Sample};
use crate::build::Built;
use crate::env;
use crate::setup::Kernel;

/// The configurations in the order node0 runs them: (file stem, label).
const CONFIGS: [(&str, &str); 6] = [
    ("nvme", "raw NVMe"),
    ("san", "raw SAN (dm-delay 3 ms)"),
    ("wt", "peerflash wt"),
    ("wb", "peerflash wb"),
    ("wbp1", "peerflash wbp, 1 replica"),
    ("wbp2", "peerflash wbp, 2 replicas"),
];
const DEPTHS: [u32; 2] = [1, 16];

#[derive(Serialize)]
struct Row {
    config: &'static str,
    label: &'static str,
    qd: u32,
    iops: f64,
    mean_us: f64,
    p99_us: f64,
}

#[derive(Serialize)]
struct Ratio {
    what: String,
    ratio: f64,
    /// The target, if it sets one, and whether the run meets it.
    target: Option<String>,
    met: Option<bool>,
}

/// `--count-insns`: guest instructions per write of one run, on the primary and on each member.
#[derive(Serialize, Clone)]
struct Insns {
    config: &'static str,
    qd: u32,
    /// node0's instructions per write it completed (net of the marker and the idle background).
    primary: f64,
    /// Each member's (node1, node2) instructions per record it wrote, for the wbp runs that
    /// place replicas there.
    members: Vec<(u32, f64)>,
    /// Instructions of the whole cluster per write: the primary's and every member's.
    total: f64,
}

/// A line of a node's `windows.txt`: `NAME W0 W1 T0 T1` (device writes and the guest's clock at
/// both ends of the window).
#[derive(Debug, Clone, PartialEq)]
struct WindowLine {
    name: String,
    writes: f64,
    secs: f64,
}

fn parse_windows(text: &str) -> Result<Vec<WindowLine>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| -> Result<f64> {
                w.get(i).and_then(|v| v.parse::<f64>().ok()).with_context(|| format!("a bad window line {l:?}"))
            };
            let name = w.first().with_context(|| format!("a bad window line {l:?}"))?.to_string();
            Ok(WindowLine { name, writes: num(2)? - num(1)?, secs: num(4)? - num(3)? })
        })
        .collect()
}

/// Members of each wbp run (host id, node index).
fn members_of(config: &str) -> &'static [(u32, usize)] {
    match config {
        "wbp1" => &[(2, 1)],
        "wbp2" => &[(2, 1), (3, 2)],
        _ => &[],
    }
}

/// Reads every node's plugin log and window lines and works out the instructions per write.
fn count(script: &Path) -> Result<Vec<Insns>> {
    let repo = env::repo_root();
    let mut per_node = Vec::new();
    for i in 0..3 {
        let log_path = crate::scenario::plugin_log(script, i);
        let log = std::fs::read_to_string(&log_path).with_context(|| format!("no plugin log {}", log_path.display()))?;
        let w = crate::insns::windows(&log)?;
        let lines_path = repo.join(format!("target/vm/cluster-bench-wbp/node{i}/run/bench/windows.txt"));
        let lines = parse_windows(&std::fs::read_to_string(&lines_path).with_context(|| format!("no {}", lines_path.display()))?)?;
        let runs = CONFIGS.len() * DEPTHS.len();
        if w.len() != 2 + runs || lines.len() != runs {
            bail!("node{i}: {} windows and {} window lines, expected {} and {runs}", w.len(), lines.len(), 2 + runs);
        }
        per_node.push((w, lines));
    }
    let mut out = Vec::new();
    let mut k = 0;
    for (config, _) in CONFIGS {
        for qd in DEPTHS {
            // A node's instructions per write of its own device in its window, net.
            let net = |node: usize| -> f64 {
                let (w, lines) = &per_node[node];
                let l = &lines[k];
                crate::insns::per_write(w[2 + k], w[0], w[1], 2.0, l.secs, l.writes).1
            };
            let primary = net(0);
            let members: Vec<(u32, f64)> = members_of(config).iter().map(|&(host, node)| (host, net(node))).collect();
            let total = primary + members.iter().map(|m| m.1).sum::<f64>();
            out.push(Insns { config, qd, primary, members, total });
            k += 1;
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Report {
    /// `--count-insns` only.
    insns: Option<Vec<Insns>>,
    seconds_per_run: u64,
    kernel: &'static str,
    workload: &'static str,
    /// 4 KiB TCP request/response between node0 and node1, microseconds.
    rtt_mean_us: f64,
    rtt_p50_us: f64,
    /// The modules' authenticated ping (a 56-byte frame each way, kernel to kernel), microseconds.
    module_ping_mean_us: Option<f64>,
    module_ping_min_us: Option<f64>,
    results: Vec<Row>,
    ratios: Vec<Ratio>,
}

/// `MEAN P50` of the round trip file.
fn parse_rtt(path: &Path) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("no round trip in {}", path.display()))?;
    let v: Vec<f64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()
        .with_context(|| format!("{}: not two numbers", path.display()))?;
    match v[..] {
        [mean, p50] if mean > 0.0 => Ok((mean, p50)),
        _ => anyhow::bail!("{}: not a mean and a median", path.display()),
    }
}

/// `mean_us` and `min_us` of the probe's line `pings N mean_us M min_us K`, if it is there.
fn parse_probe(path: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let w: Vec<&str> = text.split_whitespace().collect();
    let at = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1)).and_then(|v| v.parse().ok());
    Some((at("mean_us")?, at("min_us")?))
}

/// The ratios the issue asks for, from the rows and the round trip.
fn ratios(rows: &[Row], rtt_mean: f64) -> Vec<Ratio> {
    let get = |c: &str, qd: u32| rows.iter().find(|r| r.config == c && r.qd == qd);
    let mut out = Vec::new();
    if let (Some(w), Some(n)) = (get("wbp1", 1), get("nvme", 1)) {
        let floor = n.mean_us.max(rtt_mean);
        let r = w.mean_us / floor;
        out.push(Ratio {
            what: "wbp p=1 QD1 mean latency / max(raw NVMe QD1 mean, 4 KiB round trip)".into(),
            ratio: r,
            target: Some("<= 1.1".into()),
            met: Some(r <= 1.1),
        });
    }
    for qd in DEPTHS {
        if let (Some(w), Some(t)) = (get("wbp1", qd), get("wt", qd)) {
            let r = w.iops / t.iops;
            out.push(Ratio {
                what: format!("wbp p=1 / wt IOPS, QD{qd}"),
                ratio: r,
                target: Some(">= 2".into()),
                met: Some(r >= 2.0),
            });
        }
        for (num, den) in [("wbp2", "wbp1"), ("wbp1", "wb"), ("wb", "nvme"), ("wt", "san")] {
            if let (Some(a), Some(b)) = (get(num, qd), get(den, qd)) {
                out.push(Ratio { what: format!("{num} / {den} IOPS, QD{qd}"), ratio: a.iops / b.iops, target: None, met: None });
            }
        }
    }
    out
}

/// Runs the cluster benchmark; `secs` per fio run. With `report_only`, only the report of the
/// last run's results (left in node0's run directory) is made again.
pub fn run(k: &Kernel, b: &Built, secs: u64, report_only: bool, count_insns: bool) -> Result<()> {
    let repo = env::repo_root();
    let script = repo.join("tests/vm/scenarios/bench-wbp.sh");
    if !report_only {
        let mut vars = vec![("PF_BENCH_SECS", secs.to_string())];
        let plugin = if count_insns {
            if secs < 10 {
                bail!("--cluster --count-insns needs --secs 10 or more (a window runs from 3 s into a run to 2 s before its end)");
            }
            vars.push(("PF_BENCH_MARK", "1".to_string()));
            Some(crate::insns::build_plugin()?)
        } else {
            None
        };
        crate::scenario::run_with(k, b, 3, &script, &vars, plugin.as_deref())?;
    }
    let dir = repo.join("target/vm/cluster-bench-wbp/node0/run/bench");
    let (rtt_mean_us, rtt_p50_us) = parse_rtt(&dir.join("rtt.txt"))?;
    let (module_ping_mean_us, module_ping_min_us) = parse_probe(&dir.join("probe.txt")).unzip();
    let mut results = Vec::new();
    for (config, label) in CONFIGS {
        for qd in DEPTHS {
            let s: Sample = parse(&dir.join(format!("{config}-qd{qd}.json")))?;
            results.push(Row { config, label, qd, iops: s.iops, mean_us: s.mean_us, p99_us: s.p99_us });
        }
    }
    let ratios = ratios(&results, rtt_mean_us);
    let kernel = k.flavor.name();
    println!("\n4k random write on node0, libaio, direct, {secs} s per run (three TCG VMs, {kernel} kernel)");
    println!("4 KiB TCP round trip node0 -> node1: mean {rtt_mean_us:.0} us, median {rtt_p50_us:.0} us");
    if let (Some(m), Some(n)) = (module_ping_mean_us, module_ping_min_us) {
        println!("the modules' authenticated ping node0 -> node1: mean {m:.0} us, min {n:.0} us");
    }
    println!();
    println!("{:<28} {:>4} {:>8} {:>10} {:>10}", "configuration", "QD", "IOPS", "mean (us)", "p99 (us)");
    for r in &results {
        println!("{:<28} {:>4} {:>8.0} {:>10.0} {:>10.0}", r.label, r.qd, r.iops, r.mean_us, r.p99_us);
    }
    println!();
    for r in &ratios {
        let t = match (&r.target, r.met) {
            (Some(t), Some(m)) => format!(" (target {t}: {})", if m { "met" } else { "NOT met" }),
            _ => String::new(),
        };
        println!("{:<72} {:.2}x{t}", r.what, r.ratio);
    }
    println!("\nQD16 runs are bound by the submitting vCPU under TCG (emulated crc32 and frame tags): their ratios measure the emulator as much as peerflash.");
    let insns = if count_insns { Some(count(&script)?) } else { None };
    if let Some(rows) = &insns {
        println!("\nguest instructions per write (QEMU plugin; net of the marker and each node's idle background):");
        println!("{:<8} {:>4} {:>12} {:>24} {:>12}", "config", "QD", "primary", "member(s), per record", "cluster");
        for r in rows {
            let m: Vec<String> = r.members.iter().map(|(h, v)| format!("host {h}: {v:.0}")).collect();
            println!("{:<8} {:>4} {:>12.0} {:>24} {:>12.0}", r.config, r.qd, r.primary, m.join(", "), r.total);
        }
        println!("(the IOPS of a counting run are not comparable with a run without the plugin)");
    }
    let report = Report {
        insns,
        seconds_per_run: secs,
        kernel,
        workload: "fio 4k randwrite, libaio, direct=1, 1 GiB span, on node0 of three",
        rtt_mean_us,
        rtt_p50_us,
        module_ping_mean_us,
        module_ping_min_us,
        results,
        ratios,
    };
    let out = repo.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let json = out.join("cluster.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let svg = out.join("cluster.svg");
    chart(&report, &svg)?;
    println!("\nwrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// IOPS at QD1 and QD16, and the mean latency at QD1 with the round trip as a bar of its own.
fn chart(report: &Report, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1500, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let root = root
        .titled("peerflash wbp: 4k random write on a three-node cluster, one run", ("sans-serif", 22))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let panels = root.split_evenly((1, 3));
    for (panel, qd) in panels.iter().zip(DEPTHS) {
        let items: Vec<(&str, f64, bool)> = report
            .results
            .iter()
            .filter(|r| r.qd == qd)
            .map(|r| (r.config, r.iops, r.config.starts_with("w")))
            .collect();
        bar_panel(panel, &format!("IOPS, QD{qd}"), "IOPS", &items)?;
    }
    let mut lat: Vec<(&str, f64, bool)> = report
        .results
        .iter()
        .filter(|r| r.qd == 1 && r.config != "san")
        .map(|r| (r.config, r.mean_us, r.config.starts_with("w")))
        .collect();
    lat.push(("rtt 4K", report.rtt_mean_us, false));
    if let Some(p) = panels.get(2) {
        bar_panel(p, "mean latency (us), QD1", "us", &lat)?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &'static str, qd: u32, iops: f64, mean_us: f64) -> Row {
        Row { config, label: config, qd, iops, mean_us, p99_us: mean_us * 2.0 }
    }

    #[test]
    fn ratios_hold_the_targets_to_the_run() {
        let rows = vec![
            row("nvme", 1, 3000.0, 300.0),
            row("wt", 1, 200.0, 4000.0),
            row("wt", 16, 1000.0, 16000.0),
            row("wbp1", 1, 500.0, 1900.0),
            row("wbp1", 16, 1500.0, 10000.0),
        ];
        let r = ratios(&rows, 1800.0);
        let lat = r.iter().find(|r| r.what.starts_with("wbp p=1 QD1 mean")).unwrap();
        assert!((lat.ratio - 1900.0 / 1800.0).abs() < 1e-9);
        assert_eq!(lat.met, Some(true));
        let qd1 = r.iter().find(|r| r.what == "wbp p=1 / wt IOPS, QD1").unwrap();
        assert_eq!(qd1.met, Some(true));
        let qd16 = r.iter().find(|r| r.what == "wbp p=1 / wt IOPS, QD16").unwrap();
        assert_eq!(qd16.met, Some(false));
        // The slower of flash and network is the floor.
        let r = ratios(&rows, 100.0);
        let lat = r.iter().find(|r| r.what.starts_with("wbp p=1 QD1 mean")).unwrap();
        assert!((lat.ratio - 1900.0 / 300.0).abs() < 1e-9);
        assert_eq!(lat.met, Some(false));
    }

    #[test]
    fn chart_has_iops_and_latency_panels() {
        let results = vec![row("nvme", 1, 1800.0, 535.0), row("nvme", 16, 5000.0, 3000.0), row("wbp1", 1, 198.0, 4996.0), row("wbp1", 16, 416.0, 38301.0)];
        let report = Report {
            insns: None,
            seconds_per_run: 8,
            kernel: "bench",
            workload: "test",
            rtt_mean_us: 1660.0,
            rtt_p50_us: 1361.0,
            module_ping_mean_us: None,
            module_ping_min_us: None,
            ratios: ratios(&results, 1660.0),
            results,
        };
        let path = std::env::temp_dir().join(format!("pf-cluster-chart-{}.svg", std::process::id()));
        chart(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for want in ["IOPS, QD1", "IOPS, QD16", "mean latency (us), QD1", "rtt 4K", "4996", "wbp1"] {
            assert!(svg.contains(want), "the chart lacks {want}");
        }
    }

    #[test]
    fn window_lines_give_writes_and_seconds() {
        let l = parse_windows("wbp1-qd1 100 350 10.5 15.0\n\n").unwrap();
        assert_eq!(l, [WindowLine { name: "wbp1-qd1".into(), writes: 250.0, secs: 4.5 }]);
        assert!(parse_windows("wbp1-qd1 100\n").is_err());
        assert_eq!(members_of("wbp2"), &[(2, 1), (3, 2)]);
        assert!(members_of("wb").is_empty());
    }

    #[test]
    fn probe_line_is_read() {
        let d = std::env::temp_dir().join(format!("pf-probe-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("p"), "pings 200 mean_us 2500 min_us 1200\n").unwrap();
        assert_eq!(parse_probe(&d.join("p")), Some((2500.0, 1200.0)));
        assert_eq!(parse_probe(&d.join("none")), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn round_trip_file_is_checked() {
        let d = std::env::temp_dir().join(format!("pf-rtt-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a"), "1520 1400\n").unwrap();
        std::fs::write(d.join("b"), "x\n").unwrap();
        std::fs::write(d.join("c"), "0 0\n").unwrap();
        assert_eq!(parse_rtt(&d.join("a")).unwrap(), (1520.0, 1400.0));
        assert!(parse_rtt(&d.join("b")).is_err());
        assert!(parse_rtt(&d.join("c")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
