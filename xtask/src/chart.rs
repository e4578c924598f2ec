//! The benchmark's chart (`target/bench/bench.svg`): one panel per irqchip mode, a row per
//! measurement, one bar per VMM measured, each bar the VMM's value divided by the row's
//! reference (the bare KVM loop for exits, kvmtool for boot, startup and idle, L1 itself for
//! disk reads), so the reference is the dashed 1.0 line and shorter is better everywhere.
//!
//! Written here rather than with plotters: it is one kind of chart, a few dozen SVG elements,
//! and xtask is built on every CI run (plotters with its default font stack is dozens of
//! crates more). The SVG's structure is what the test reads: `g.panel` per mode, in each a
//! `line.reference` at 1.0 and a `g.series` per VMM holding that VMM's bars.

use std::fmt::Write;

/// Who a bar measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vmm {
    /// The floor: `bare-kvm` (a KVM_RUN loop that only answers exits), or L1 itself for I/O.
    Floor,
    Rvvmm,
    Kvmtool,
}

impl Vmm {
    const ALL: [Vmm; 3] = [Vmm::Floor, Vmm::Rvvmm, Vmm::Kvmtool];

    pub fn name(self) -> &'static str {
        match self {
            Vmm::Floor => "floor",
            Vmm::Rvvmm => "rvvmm",
            Vmm::Kvmtool => "kvmtool",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Vmm::Floor => "floor (bare KVM loop; L1 itself for disk)",
            Vmm::Rvvmm => "rvvmm",
            Vmm::Kvmtool => "kvmtool",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Vmm::Floor => "#9e9e9e",
            Vmm::Rvvmm => "#1f77b4",
            Vmm::Kvmtool => "#ff7f0e",
        }
    }
}

/// One measurement: each VMM's value (in `unit`, lower is better) and which VMM is 1.0.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub unit: &'static str,
    pub reference: Vmm,
    pub values: Vec<(Vmm, f64)>,
}

impl Row {
    /// A row of the VMMs that have a value; `None` unless the reference has a positive one.
    pub fn new(
        label: impl Into<String>,
        unit: &'static str,
        reference: Vmm,
        values: &[(Vmm, Option<f64>)],
    ) -> Option<Row> {
        let values: Vec<(Vmm, f64)> = values
            .iter()
            .filter_map(|&(vmm, v)| v.filter(|v| v.is_finite() && *v >= 0.0).map(|v| (vmm, v)))
            .collect();
        let reference_value = values.iter().find(|(v, _)| *v == reference)?.1;
        (reference_value > 0.0 && values.len() > 1).then(|| Row {
            label: label.into(),
            unit,
            reference,
            values,
        })
    }

    fn ratio(&self, value: f64) -> f64 {
        let reference = self
            .values
            .iter()
            .find(|(v, _)| *v == self.reference)
            .map_or(1.0, |(_, r)| *r);
        value / reference
    }
}

/// One irqchip mode's rows.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub rows: Vec<Row>,
}

const WIDTH: f64 = 980.0;
const LABEL_W: f64 = 300.0;
const PLOT_W: f64 = 480.0;
const BAR_H: f64 = 12.0;
const ROW_GAP: f64 = 10.0;
const PANEL_HEAD: f64 = 40.0;
/// Ratios past this are drawn to it and marked; the label gives the value.
const CLIP: f64 = 3.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value with its unit, shortened (ns to us to ms).
fn show(value: f64, unit: &str) -> String {
    match unit {
        "ns" if value >= 10_000.0 => format!("{:.1} us", value / 1000.0),
        "ms" if value >= 1000.0 => format!("{:.2} s", value / 1000.0),
        _ if value >= 100.0 => format!("{value:.0} {unit}"),
        _ => format!("{value:.2} {unit}"),
    }
}

/// The chart of `panels` under `title` (a line saying what was run where).
pub fn svg(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let scale = panels
        .iter()
        .flat_map(|p| &p.rows)
        .flat_map(|r| r.values.iter().map(|(_, v)| r.ratio(*v)))
        .fold(1.0_f64, f64::max)
        .min(CLIP)
        * 1.05;
    let x_of = |ratio: f64| LABEL_W + PLOT_W * ratio.min(CLIP) / scale;
    let present: Vec<Vmm> = Vmm::ALL
        .into_iter()
        .filter(|vmm| {
            panels
                .iter()
                .flat_map(|p| &p.rows)
                .any(|r| r.values.iter().any(|(v, _)| v == vmm))
        })
        .collect();
    let row_h = |r: &Row| r.values.len() as f64 * BAR_H + ROW_GAP;
    let height = 70.0
        + panels
            .iter()
            .map(|p| PANEL_HEAD + p.rows.iter().map(row_h).sum::<f64>() + 20.0)
            .sum::<f64>();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">{}</text>"##,
        escape(subtitle)
    );
    let mut lx = 10.0;
    for vmm in &present {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="48" width="12" height="12" fill="{}"/><text x="{}" y="58">{}</text>"#,
            vmm.color(),
            lx + 16.0,
            escape(vmm.legend())
        );
        lx += 30.0 + 7.0 * vmm.legend().len() as f64;
    }
    let mut y = 70.0;
    for panel in panels {
        let top = y;
        let bottom = top + PANEL_HEAD + panel.rows.iter().map(row_h).sum::<f64>();
        let _ = writeln!(
            s,
            r#"<g class="panel" data-title="{}">"#,
            escape(&panel.title)
        );
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            top + 20.0,
            escape(&panel.title)
        );
        let one = x_of(1.0);
        let _ = writeln!(
            s,
            r##"<line class="axis" x1="{LABEL_W}" y1="{}" x2="{LABEL_W}" y2="{bottom}" stroke="#333"/>"##,
            top + PANEL_HEAD - 6.0
        );
        let _ = writeln!(
            s,
            r##"<line class="reference" data-ratio="1.0" x1="{one}" y1="{}" x2="{one}" y2="{bottom}" stroke="#d62728" stroke-dasharray="4 3"/><text x="{}" y="{}" fill="#d62728" text-anchor="middle">1.0 = reference</text>"##,
            top + PANEL_HEAD - 6.0,
            one,
            top + PANEL_HEAD - 10.0
        );
        // Row labels, then one group per VMM with its bars and their value labels.
        let mut ry = top + PANEL_HEAD;
        let mut row_tops = Vec::new();
        for row in &panel.rows {
            row_tops.push(ry);
            let _ = writeln!(
                s,
                r#"<text class="row" x="{}" y="{}" text-anchor="end">{}</text>"#,
                LABEL_W - 8.0,
                ry + row_h(row) / 2.0,
                escape(&format!("{} (vs {})", row.label, row.reference.name()))
            );
            ry += row_h(row);
        }
        for vmm in &present {
            let _ = writeln!(s, r#"<g class="series" data-vmm="{}">"#, vmm.name());
            for (row, &rtop) in panel.rows.iter().zip(&row_tops) {
                let Some(index) = row.values.iter().position(|(v, _)| v == vmm) else {
                    continue;
                };
                let value = row.values[index].1;
                let ratio = row.ratio(value);
                let by = rtop + index as f64 * BAR_H;
                let bw = x_of(ratio) - LABEL_W;
                let clipped = if ratio > CLIP { " (clipped)" } else { "" };
                let _ = writeln!(
                    s,
                    r#"<rect class="bar" data-ratio="{ratio:.4}" x="{LABEL_W}" y="{by}" width="{bw:.2}" height="{}" fill="{}"><title>{}: {}, {ratio:.3}x{clipped}</title></rect>"#,
                    BAR_H - 2.0,
                    vmm.color(),
                    vmm.name(),
                    escape(&show(value, row.unit))
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" font-size="10">{ratio:.2}x  {}{}</text>"#,
                    LABEL_W + bw + 4.0,
                    by + BAR_H - 3.0,
                    escape(&show(value, row.unit)),
                    if clipped.is_empty() { "" } else { " >>" }
                );
            }
            let _ = writeln!(s, "</g>");
        }
        let _ = writeln!(s, "</g>");
        y = bottom + 20.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panels() -> Vec<Panel> {
        let exits = |k: &str, b: f64, r: f64| {
            Row::new(
                k,
                "ns",
                Vmm::Floor,
                &[(Vmm::Floor, Some(b)), (Vmm::Rvvmm, Some(r))],
            )
        };
        let vs_kvmtool = |k: &str, r: f64, l: f64| {
            Row::new(
                k,
                "s",
                Vmm::Kvmtool,
                &[(Vmm::Rvvmm, Some(r)), (Vmm::Kvmtool, Some(l))],
            )
        };
        ["plic", "aia"]
            .iter()
            .map(|m| Panel {
                title: format!("{m} <mode> & co"),
                rows: [
                    exits("hypercall", 80_000.0, 76_000.0),
                    exits("mmio_read", 84_000.0, 92_000.0),
                    vs_kvmtool("linux boot", 9.1, 10.4),
                    vs_kvmtool("idle", 0.1, 0.9),
                    Row::new(
                        "startup",
                        "ms",
                        Vmm::Kvmtool,
                        &[
                            (Vmm::Floor, Some(3.0)),
                            (Vmm::Rvvmm, Some(40.0)),
                            (Vmm::Kvmtool, Some(120.0)),
                        ],
                    ),
                ]
                .into_iter()
                .flatten()
                .collect(),
            })
            .collect()
    }

    #[test]
    fn rows_need_a_positive_reference_and_something_to_compare() {
        assert!(Row::new(
            "x",
            "s",
            Vmm::Kvmtool,
            &[(Vmm::Rvvmm, Some(1.0)), (Vmm::Kvmtool, None)]
        )
        .is_none());
        assert!(Row::new(
            "x",
            "s",
            Vmm::Kvmtool,
            &[(Vmm::Rvvmm, Some(1.0)), (Vmm::Kvmtool, Some(0.0))]
        )
        .is_none());
        assert!(Row::new("x", "s", Vmm::Floor, &[(Vmm::Floor, Some(1.0))]).is_none());
        let r = Row::new(
            "x",
            "s",
            Vmm::Floor,
            &[
                (Vmm::Floor, Some(2.0)),
                (Vmm::Rvvmm, Some(f64::NAN)),
                (Vmm::Kvmtool, Some(3.0)),
            ],
        )
        .unwrap();
        assert_eq!(r.values, vec![(Vmm::Floor, 2.0), (Vmm::Kvmtool, 3.0)]);
    }

    /// The chart parses as XML (SVG), has a panel per mode, in each the 1.0 line and one
    /// series per VMM, and every bar is as long as its ratio says, the reference's bar
    /// reaching the 1.0 line exactly.
    #[test]
    fn the_chart_is_an_svg_with_a_series_per_vmm_and_the_one_line() {
        let text = svg("rvvmm bench", "commit abc", &panels());
        let doc = roxmltree::Document::parse(&text).expect("the chart is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let class = |n: &roxmltree::Node, c: &str| n.attribute("class") == Some(c);
        let num = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
        let panels: Vec<_> = root.children().filter(|n| class(n, "panel")).collect();
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[0].attribute("data-title"), Some("plic <mode> & co"));
        for panel in panels {
            let lines: Vec<_> = panel.children().filter(|n| class(n, "reference")).collect();
            assert_eq!(lines.len(), 1, "one 1.0 line a panel");
            let one = num(&lines[0], "x1");
            let axis = panel.children().find(|n| class(n, "axis")).unwrap();
            let origin = num(&axis, "x1");
            let series: Vec<&str> = panel
                .children()
                .filter(|n| class(n, "series"))
                .map(|n| n.attribute("data-vmm").unwrap())
                .collect();
            assert_eq!(series, ["floor", "rvvmm", "kvmtool"]);
            let mut bars = 0;
            for bar in panel.descendants().filter(|n| class(n, "bar")) {
                let (ratio, width) = (num(&bar, "data-ratio"), num(&bar, "width"));
                assert!(
                    (origin + width - (origin + (one - origin) * ratio)).abs() < 0.05,
                    "a bar of ratio {ratio} is {width} wide; 1.0 is {} wide",
                    one - origin
                );
                bars += 1;
            }
            // 2 exits x 2 VMMs, boot and idle x 2, startup x 3.
            assert_eq!(bars, 11);
            let kvmtool_bars = panel
                .children()
                .find(|n| n.attribute("data-vmm") == Some("kvmtool"))
                .unwrap()
                .children()
                .filter(|n| class(n, "bar"))
                .count();
            assert_eq!(kvmtool_bars, 3);
        }
    }

    #[test]
    fn a_chart_without_kvmtool_has_no_kvmtool_series() {
        let only_exits = vec![Panel {
            title: "aia".into(),
            rows: vec![Row::new(
                "hypercall",
                "ns",
                Vmm::Floor,
                &[(Vmm::Floor, Some(1.0)), (Vmm::Rvvmm, Some(9.0))],
            )
            .unwrap()],
        }];
        let text = svg("t", "s", &only_exits);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let series: Vec<_> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-vmm"))
            .collect();
        assert_eq!(series, ["floor", "rvvmm"]);
        // 9x is past the clip: drawn to it, and said.
        assert!(text.contains("(clipped)"));
    }
}
