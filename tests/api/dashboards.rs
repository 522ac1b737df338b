//! Static checks of the Grafana provisioning under `grafana/`.
//!
//! Grafana loads a broken dashboard without complaint (overlapping panels, an
//! undefined `$variable`, a target pointing at a datasource that does not exist),
//! so these tests read the JSON and assert what Grafana does not. They need no
//! Grafana and no network: only the files.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// Variables Grafana defines itself; anything else must be in `templating.list`.
const BUILTIN_VARIABLES: &[&str] = &[
    "__all",
    "__auto_interval",
    "__cell",
    "__dashboard",
    "__data",
    "__field",
    "__from",
    "__interval",
    "__interval_ms",
    "__name",
    "__org",
    "__range",
    "__range_ms",
    "__range_s",
    "__rate_interval",
    "__rate_interval_ms",
    "__series",
    "__timeFilter",
    "__timezone",
    "__to",
    "__url",
    "__url_time_range",
    "__user",
    "__value",
];

const GRID_COLUMNS: i64 = 24;

struct Dashboard {
    file: String,
    json: Value,
}

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = grafana_dir().join("dashboards");
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn load_dashboards() -> Vec<Dashboard> {
    dashboard_files()
        .into_iter()
        .map(|path| {
            let file = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let json = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{file}: not valid JSON: {e}"));
            Dashboard { file, json }
        })
        .collect()
}

/// `value[key]` as a slice, empty when absent.
fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn describe(panel: &Value) -> String {
    let id = panel
        .get("id")
        .map_or_else(|| "?".to_string(), Value::to_string);
    let title = str_at(panel, "/title").unwrap_or("");
    format!("panel {id} {title:?}")
}

fn is_row(panel: &Value) -> bool {
    str_at(panel, "/type") == Some("row")
}

/// The panels that share one grid: the top level (rows included), then the
/// children of each collapsed row, which Grafana lays out when it expands the row.
fn panel_groups(dashboard: &Value) -> Vec<(String, Vec<&Value>)> {
    let top: Vec<&Value> = array(dashboard, "panels").iter().collect();
    let mut groups = Vec::new();
    for &panel in &top {
        let children: Vec<&Value> = array(panel, "panels").iter().collect();
        if !children.is_empty() {
            groups.push((format!("collapsed row {}", describe(panel)), children));
        }
    }
    groups.insert(0, ("top level".to_string(), top));
    groups
}

/// Every panel, rows and the children of collapsed rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    panel_groups(dashboard)
        .into_iter()
        .flat_map(|(_, panels)| panels)
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

impl Rect {
    fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }
}

fn grid_pos(file: &str, panel: &Value) -> Rect {
    let pos = panel
        .get("gridPos")
        .unwrap_or_else(|| panic!("{file}: {} has no gridPos", describe(panel)));
    let field = |key: &str| {
        pos.get(key).and_then(Value::as_i64).unwrap_or_else(|| {
            panic!(
                "{file}: {} gridPos.{key} is not an integer",
                describe(panel)
            )
        })
    };
    Rect {
        x: field("x"),
        y: field("y"),
        w: field("w"),
        h: field("h"),
    }
}

/// The uids of the provisioned datasources: every `uid:` line of datasources.yml
/// (a line scan, as there is no YAML parser among the test dependencies).
fn provisioned_uids() -> BTreeSet<String> {
    let path = grafana_dir().join("provisioning/datasources/datasources.yml");
    let uids: BTreeSet<String> = read(&path)
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
            let value = line.strip_prefix("uid:")?;
            let value = value.split('#').next().unwrap_or("").trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            (!value.is_empty()).then(|| value.to_string())
        })
        .collect();
    assert!(!uids.is_empty(), "{}: no `uid:` line found", path.display());
    uids
}

/// Names of the variables a string refers to: `$name`, `${name}`, `${name:format}`,
/// `${__data.fields.x}` (root `__data`) and `[[name]]`. `$1` or a lone `$` are not variables.
fn referenced_variables(text: &str) -> Vec<String> {
    fn root(inner: &str) -> String {
        inner
            .split([':', '.', '['])
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(['$', '[']) {
        let after = &rest[pos + 1..];
        if rest[pos..].starts_with("${") {
            if let Some(end) = after.find('}') {
                names.push(root(&after[1..end]));
                rest = &after[end + 1..];
                continue;
            }
        } else if rest[pos..].starts_with("[[") {
            if let Some(end) = after.find("]]") {
                names.push(root(&after[1..end]));
                rest = &after[end + 2..];
                continue;
            }
        } else if rest[pos..].starts_with('$') {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..len];
            if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                names.push(name.to_string());
            }
        }
        rest = after;
    }
    names
}

/// Every string inside `value`, with where it is, skipping the key `skip`.
fn strings<'a>(value: &'a Value, path: String, skip: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((path, s.as_str())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), skip, out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.as_str() != skip {
                    strings(item, format!("{path}.{key}"), skip, out);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn dashboards_exist_and_have_unique_uids() {
    let dashboards = load_dashboards();
    assert!(
        !dashboards.is_empty(),
        "no dashboard JSON in {}",
        grafana_dir().join("dashboards").display()
    );
    let mut seen: HashMap<String, String> = HashMap::new();
    for d in &dashboards {
        let uid = str_at(&d.json, "/uid")
            .filter(|uid| !uid.is_empty())
            .unwrap_or_else(|| panic!("{}: no uid", d.file));
        if let Some(other) = seen.insert(uid.to_string(), d.file.clone()) {
            panic!("uid {uid:?} is used by both {other} and {}", d.file);
        }
        assert!(
            str_at(&d.json, "/title").is_some_and(|t| !t.is_empty()),
            "{}: no title",
            d.file
        );
    }
}

#[test]
fn dashboards_are_valid_json_objects_with_panels() {
    for d in load_dashboards() {
        assert!(
            d.json.is_object(),
            "{}: the top level is not a JSON object",
            d.file
        );
        assert!(
            !array(&d.json, "panels").is_empty(),
            "{}: no panels",
            d.file
        );
    }
}

#[test]
fn dashboards_carry_the_tag_their_links_use() {
    for d in load_dashboards() {
        let tags: Vec<&str> = array(&d.json, "tags")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for link in array(&d.json, "links") {
            if str_at(link, "/type") == Some("dashboards") {
                for tag in array(link, "tags").iter().filter_map(Value::as_str) {
                    assert!(
                        tags.contains(&tag),
                        "{}: links to dashboards tagged {tag:?} but is not tagged so itself (tags {tags:?})",
                        d.file
                    );
                }
            }
        }
    }
}

#[test]
fn panel_ids_are_unique_within_each_dashboard() {
    for d in load_dashboards() {
        let mut seen: HashMap<i64, String> = HashMap::new();
        for panel in all_panels(&d.json) {
            let id = panel
                .get("id")
                .and_then(Value::as_i64)
                .unwrap_or_else(|| panic!("{}: {} has no integer id", d.file, describe(panel)));
            if let Some(other) = seen.insert(id, describe(panel)) {
                panic!(
                    "{}: id {id} is used by both {other} and {}",
                    d.file,
                    describe(panel)
                );
            }
        }
    }
}

#[test]
fn panels_fit_the_grid_without_overlapping() {
    for d in load_dashboards() {
        for (group, panels) in panel_groups(&d.json) {
            let placed: Vec<(String, Rect)> = panels
                .iter()
                .map(|p| (describe(p), grid_pos(&d.file, p)))
                .collect();
            for (name, r) in &placed {
                assert!(
                    r.x >= 0 && r.y >= 0 && r.w > 0 && r.h > 0 && r.x + r.w <= GRID_COLUMNS,
                    "{}: {name} ({group}) has gridPos {r:?}, outside the {GRID_COLUMNS}-column grid",
                    d.file
                );
            }
            for (i, (name_a, a)) in placed.iter().enumerate() {
                for (name_b, b) in &placed[i + 1..] {
                    assert!(
                        !a.overlaps(b),
                        "{}: {name_a} {a:?} overlaps {name_b} {b:?} ({group})",
                        d.file
                    );
                }
            }
        }
    }
}

#[test]
fn every_target_uses_the_datasource_variable_or_a_provisioned_uid() {
    let uids = provisioned_uids();
    let allowed = |uid: &str| uid == "${datasource}" || uids.contains(uid);
    for d in load_dashboards() {
        for panel in all_panels(&d.json) {
            if let Some(uid) = str_at(panel, "/datasource/uid") {
                assert!(
                    allowed(uid),
                    "{}: {} uses datasource uid {uid:?}; provisioned: {uids:?}",
                    d.file,
                    describe(panel)
                );
            }
            for target in array(panel, "targets") {
                let ref_id = str_at(target, "/refId").unwrap_or("?");
                let uid = str_at(target, "/datasource/uid").unwrap_or_else(|| {
                    panic!(
                        "{}: {} target {ref_id} has no datasource uid",
                        d.file,
                        describe(panel)
                    )
                });
                assert!(
                    allowed(uid),
                    "{}: {} target {ref_id} uses datasource uid {uid:?}; expected \"${{datasource}}\" or one of {uids:?}",
                    d.file,
                    describe(panel)
                );
            }
        }
        for variable in array(&d.json["templating"], "list") {
            if let Some(uid) = str_at(variable, "/datasource/uid") {
                let name = str_at(variable, "/name").unwrap_or("?");
                assert!(
                    allowed(uid),
                    "{}: variable {name} uses datasource uid {uid:?}; provisioned: {uids:?}",
                    d.file
                );
            }
        }
    }
}

#[test]
fn every_referenced_variable_is_defined_or_built_in() {
    for d in load_dashboards() {
        let defined: BTreeSet<&str> = array(&d.json["templating"], "list")
            .iter()
            .filter_map(|v| str_at(v, "/name"))
            .collect();

        // Panels (their own strings; a collapsed row's children are checked on their own),
        // then the dashboard's title and links.
        let mut places: Vec<(String, Vec<(String, &str)>)> = Vec::new();
        for panel in all_panels(&d.json) {
            let mut found = Vec::new();
            strings(panel, String::new(), "panels", &mut found);
            places.push((describe(panel), found));
        }
        let mut found = Vec::new();
        strings(&d.json["title"], ".title".to_string(), "", &mut found);
        strings(&d.json["links"], ".links".to_string(), "", &mut found);
        places.push(("the dashboard".to_string(), found));

        for (place, found) in &places {
            for (path, text) in found {
                for name in referenced_variables(text) {
                    assert!(
                        defined.contains(name.as_str()) || BUILTIN_VARIABLES.contains(&name.as_str()),
                        "{}: {place} refers to undefined variable {name:?} at {path}: {text:?} (defined: {defined:?})",
                        d.file
                    );
                }
            }
        }
    }
}

#[test]
fn every_panel_has_a_unit() {
    for d in load_dashboards() {
        for panel in all_panels(&d.json).into_iter().filter(|p| !is_row(p)) {
            let unit = str_at(panel, "/fieldConfig/defaults/unit");
            assert!(
                unit.is_some_and(|u| !u.is_empty()),
                "{}: {} has no fieldConfig.defaults.unit",
                d.file,
                describe(panel)
            );
        }
    }
}

#[test]
fn variable_references_are_parsed() {
    assert_eq!(
        referenced_variables(r#"rate(x{job=~"$job"}[$__rate_interval])"#),
        ["job", "__rate_interval"]
    );
    assert_eq!(
        referenced_variables("${job:queryparam}&${__data.fields.http_route}"),
        ["job", "__data"]
    );
    assert_eq!(
        referenced_variables("[[instance]] ${__data.fields[\"x\"]}"),
        ["instance", "__data"]
    );
    assert!(referenced_variables(r#"label_replace(v, "a", "$1", "b", "(.*)$") [5m]"#).is_empty());
}

fn dashboard(file: &str) -> Value {
    load_dashboards()
        .into_iter()
        .find(|d| d.file == file)
        .unwrap_or_else(|| panic!("no grafana/dashboards/{file}"))
        .json
}

/// The top-level panels in reading order (top to bottom, left to right).
fn in_reading_order(dashboard: &Value) -> Vec<&Value> {
    let mut panels: Vec<&Value> = array(dashboard, "panels").iter().collect();
    panels.sort_by_key(|p| {
        let r = grid_pos("", p);
        (r.y, r.x)
    });
    panels
}

/// (row title, panel) for every panel under a row, in reading order.
fn by_row(dashboard: &Value) -> Vec<(String, &Value)> {
    let mut row = String::new();
    let mut out = Vec::new();
    for panel in in_reading_order(dashboard) {
        if is_row(panel) {
            row = str_at(panel, "/title").unwrap_or("").to_string();
        } else {
            out.push((row.clone(), panel));
        }
    }
    out
}

fn exprs(panel: &Value) -> Vec<&str> {
    array(panel, "targets")
        .iter()
        .filter_map(|t| str_at(t, "/expr"))
        .collect()
}

/// Threshold steps as (value, colour); the base step has value None.
fn steps(panel: &Value) -> Vec<(Option<f64>, String)> {
    array(&panel["fieldConfig"]["defaults"]["thresholds"], "steps")
        .iter()
        .map(|s| {
            (
                s["value"].as_f64(),
                str_at(s, "/color").unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The production overview brief: rows Traffic, Errors, Latency, System, 10 s refresh,
/// and these panels of these types in these rows.
#[test]
fn api_production_overview_has_the_briefs_rows_stats_and_time_series() {
    let d = dashboard("api-overview.json");
    assert_eq!(str_at(&d, "/title"), Some("API Production Overview"));
    assert_eq!(str_at(&d, "/refresh"), Some("10s"));
    let rows: Vec<&str> = in_reading_order(&d)
        .into_iter()
        .filter(|p| is_row(p))
        .filter_map(|p| str_at(p, "/title"))
        .collect();
    assert_eq!(rows, ["Traffic", "Errors", "Latency", "System"]);

    let panels = by_row(&d);
    let find = |title: &str| {
        panels
            .iter()
            .find(|(_, p)| str_at(p, "/title") == Some(title))
            .unwrap_or_else(|| panic!("api-overview.json has no panel {title:?}"))
    };
    for (title, kind, row) in [
        ("Requests per Second", "stat", "Traffic"),
        ("In-Progress Requests", "stat", "Traffic"),
        ("Requests per Endpoint", "timeseries", "Traffic"),
        ("Error Rate (%)", "stat", "Errors"),
        ("4xx Rate", "stat", "Errors"),
        ("5xx Rate", "stat", "Errors"),
        ("Errors per Endpoint", "timeseries", "Errors"),
        ("Latency p50", "timeseries", "Latency"),
        ("Latency p95", "timeseries", "Latency"),
        ("Latency p99", "timeseries", "Latency"),
        ("CPU", "timeseries", "System"),
        ("Memory", "timeseries", "System"),
    ] {
        let (in_row, panel) = find(title);
        assert_eq!(str_at(panel, "/type"), Some(kind), "{title}: type");
        assert_eq!(in_row, row, "{title}: row");
    }
    // One summed value, not a series per method or instance.
    let in_progress = exprs(find("In-Progress Requests").1);
    assert_eq!(
        in_progress,
        ["sum(http_server_active_requests{job=~\"$job\", instance=~\"$instance\"})"]
    );
    // 5xx / all x 100, in percent.
    let (_, error_rate) = find("Error Rate (%)");
    assert_eq!(
        str_at(error_rate, "/fieldConfig/defaults/unit"),
        Some("percent")
    );
    let expr = exprs(error_rate)[0];
    assert!(
        expr.starts_with("100 * (") && expr.contains("http_response_status_code=~\"5..\""),
        "{expr}"
    );
    for (title, status) in [("4xx Rate", "4.."), ("5xx Rate", "5..")] {
        let (_, panel) = find(title);
        assert_eq!(str_at(panel, "/fieldConfig/defaults/unit"), Some("reqps"));
        assert!(exprs(panel)[0].contains(&format!("http_response_status_code=~\"{status}\"")));
    }
}

/// The FastAPI brief's four guided panels open the HTTP Overview, the others follow.
#[test]
fn http_overview_starts_with_the_fastapi_briefs_guided_panels() {
    let d = dashboard("http-overview.json");
    assert_eq!(str_at(&d, "/title"), Some("HTTP Overview"));
    let first: Vec<(&str, &str)> = in_reading_order(&d)
        .into_iter()
        .take(4)
        .map(|p| {
            (
                str_at(p, "/title").unwrap_or(""),
                str_at(p, "/type").unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        first,
        [
            ("Total requests per second", "timeseries"),
            ("Response time p95", "timeseries"),
            ("Error rate", "stat"),
            ("Active requests", "gauge"),
        ]
    );
    let panels = in_reading_order(&d);
    assert!(exprs(panels[1])[0].starts_with("histogram_quantile(0.95, "));
    // Green under 1 %, yellow from 1 %, red from 5 %.
    let error_rate = panels[2];
    assert_eq!(
        str_at(error_rate, "/fieldConfig/defaults/unit"),
        Some("percent")
    );
    assert_eq!(
        steps(error_rate),
        [
            (None, "green".to_string()),
            (Some(1.0), "yellow".to_string()),
            (Some(5.0), "red".to_string())
        ]
    );
    assert!(exprs(error_rate)[0].starts_with("100 * ("));
    assert!(exprs(panels[3])[0].starts_with("sum(http_server_active_requests{"));
    // The panels that were there before stay, below.
    assert!(panels.len() > 4 + 10, "the existing panels follow");
    assert_eq!(str_at(panels[4], "/type"), Some("row"));
}
