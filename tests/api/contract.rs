//! The contract between the service and everything that queries it (docs/DESIGN.md §6): every PromQL
//! expression in the dashboards, the rule files and the PromQL cookbook parses, and names only
//! metrics that a live `/metrics` of this app exports or that a recording rule defines.
//! A typo in a metric name anywhere fails here, without a Prometheus.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use promql_parser::{
    label::MatchOp,
    parser::{self, Expr, VectorSelector},
    util::{walk_expr, ExprVisitor},
};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::{spawn_app, Backend};
use crate::prom_text::parse;

/// Series Prometheus itself provides to every rule and dashboard.
const PROMETHEUS_BUILTINS: [&str; 3] = ["up", "ALERTS", "ALERTS_FOR_STATE"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{extension} in {dir}");
    files
}

/// An expression and where it was found, for the failure message.
struct Query {
    origin: String,
    expr: String,
}

/// Grafana's variables, replaced the way Grafana would before sending the query.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (var, value) in [
        ("${datasource}", "prometheus"),
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range_s", "3600"),
        ("$__range", "1h"),
        ("$__auto_interval_interval", "1m"),
        ("$interval", "1m"),
        ("${job}", "items-api"),
        ("$job", "items-api"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
        ("${route}", ".*"),
        ("$route", ".*"),
    ] {
        out = out.replace(var, value);
    }
    out
}

fn dashboard_queries() -> Vec<Query> {
    fn walk(panels: &[Value], file: &str, out: &mut Vec<Query>) {
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        origin: format!("{file} / {}", panel["title"].as_str().unwrap_or("?")),
                        expr: substitute_grafana_variables(expr),
                    });
                }
            }
            walk(
                panel["panels"].as_array().map_or(&[], Vec::as_slice),
                file,
                out,
            );
        }
    }
    let mut queries = Vec::new();
    for path in files("grafana/dashboards", "json") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        walk(dashboard["panels"].as_array().unwrap(), &file, &mut queries);
        // Template variables query Prometheus too: `label_values(<selector>, label)`.
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str());
            if let Some(inner) = query.and_then(|q| q.strip_prefix("label_values(")) {
                if let Some((selector, _label)) = inner.rsplit_once(',') {
                    queries.push(Query {
                        origin: format!("{file} / variable {}", variable["name"]),
                        expr: substitute_grafana_variables(selector),
                    });
                }
            }
        }
    }
    queries
}

/// Every `expr` of every rule, and the names recording rules define.
fn rule_queries() -> (Vec<Query>, BTreeSet<String>) {
    let mut queries = Vec::new();
    let mut recorded = BTreeSet::new();
    for path in files("prometheus/rules", "yml") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let docs = YamlLoader::load_from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for group in docs[0]["groups"].as_vec().unwrap() {
            for rule in group["rules"].as_vec().unwrap() {
                let name = rule["record"].as_str().or(rule["alert"].as_str()).unwrap();
                if let Yaml::String(record) = &rule["record"] {
                    recorded.insert(record.clone());
                }
                queries.push(Query {
                    origin: format!("{file} / {name}"),
                    expr: rule["expr"].as_str().unwrap().to_owned(),
                });
            }
        }
    }
    (queries, recorded)
}

fn cookbook_queries() -> Vec<Query> {
    let text = std::fs::read_to_string(repo("docs/promql.md")).unwrap();
    let mut queries = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (&mut block, line.trim()) {
            (None, "```promql") => block = Some(String::new()),
            (Some(expr), "```") => {
                queries.push(Query {
                    origin: "docs/promql.md".into(),
                    expr: std::mem::take(expr),
                });
                block = None;
            }
            (Some(expr), _) => {
                expr.push_str(line);
                expr.push('\n');
            }
            (None, _) => {}
        }
    }
    queries
}

/// The metric names an expression selects.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector: Option<&VectorSelector> = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(vs) = selector {
            match &vs.name {
                Some(name) => {
                    self.0.insert(name.clone());
                }
                None => {
                    let by_name = vs.matchers.find_matchers("__name__");
                    match by_name.iter().find(|m| m.op == MatchOp::Equal) {
                        Some(m) => {
                            self.0.insert(m.value.clone());
                        }
                        None => return Err(format!("selector without a fixed metric name: {vs}")),
                    }
                }
            }
        }
        Ok(true)
    }
}

/// Problems with one expression: it does not parse, or it names an unknown metric.
fn check(query: &Query, known: &BTreeSet<String>) -> Vec<String> {
    let expr = match parser::parse(&query.expr) {
        Ok(expr) => expr,
        Err(e) => {
            return vec![format!(
                "{}: does not parse: {e}\n    {}",
                query.origin, query.expr
            )]
        }
    };
    let mut names = Names::default();
    if let Err(e) = walk_expr(&mut names, &expr) {
        return vec![format!("{}: {e}", query.origin)];
    }
    names
        .0
        .into_iter()
        .filter(|n| !known.contains(n))
        .map(|n| format!("{}: unknown metric `{n}`", query.origin))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_rule_and_cookbook_query_names_real_metrics() {
    // A live exposition with every series present: each CRUD verb (counters appear once
    // incremented), an unknown path, DB calls.
    let app = spawn_app(Backend::Sqlite).await;
    let item = app.create_item("contract", 1.0).await;
    let path = format!("/items/{}", item["id"]);
    app.get(&path).await;
    app.get("/items").await;
    app.send_json(
        reqwest::Method::PATCH,
        &path,
        &serde_json::json!({"quantity": 2}),
    )
    .await;
    app.delete(&path).await;
    app.get("/unknown").await;
    let exported: BTreeSet<String> = parse(&app.metrics_text().await)
        .into_iter()
        .map(|s| s.name)
        .collect();

    let (rules, recorded) = rule_queries();
    let mut known = exported.clone();
    known.extend(recorded.iter().cloned());
    known.extend(PROMETHEUS_BUILTINS.iter().map(|s| s.to_string()));

    let dashboards = dashboard_queries();
    let cookbook = cookbook_queries();
    assert!(
        dashboards.len() > 50,
        "found only {} dashboard queries",
        dashboards.len()
    );
    assert!(
        rules.len() > 40,
        "found only {} rule expressions",
        rules.len()
    );
    assert!(
        cookbook.len() > 10,
        "found only {} cookbook queries",
        cookbook.len()
    );

    let problems: Vec<String> = dashboards
        .iter()
        .chain(&rules)
        .chain(&cookbook)
        .flat_map(|q| check(q, &known))
        .collect();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The check itself bites: a misspelt name and a broken expression are both caught.
    let typo = Query {
        origin: "self-test".into(),
        expr: "sum(rate(http_server_request_duration_secnds_count[5m]))".into(),
    };
    assert_eq!(
        check(&typo, &known),
        ["self-test: unknown metric `http_server_request_duration_secnds_count`"]
    );
    let broken = Query {
        origin: "self-test".into(),
        expr: "sum(rate(up[5m])".into(),
    };
    assert_eq!(check(&broken, &known).len(), 1);
    // And the names it knows are the real ones, not a catch-all.
    assert!(exported.contains("http_server_request_duration_seconds_bucket"));
    assert!(!known.contains("http_requests_total") || recorded.contains("http_requests_total"));
}
