//! A real Prometheus (the Debian package) in a temp dir, scraping test apps every second.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::cli::free_port;

pub struct Prometheus {
    child: Child,
    pub url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// One scrape job for the config.
pub struct Target {
    pub job: String,
    pub address: String,
}

impl Prometheus {
    /// Starts Prometheus with 1 s scrape and evaluation intervals, `rule_files` loaded from the
    /// given paths, and waits until it is ready.
    pub async fn start(targets: &[Target], rule_files: &[&Path]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 1s\n",
        );
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for file in rule_files {
                config.push_str(&format!("  - {}\n", file.display()));
            }
        }
        config.push_str("scrape_configs:\n");
        for target in targets {
            config.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
                target.job, target.address
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus on PATH (Debian package `prometheus`)");
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus
                .client
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break prometheus;
            }
            assert!(Instant::now() < deadline, "Prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every target has been scraped successfully after this moment.
    pub async fn wait_for_fresh_scrape(&self) {
        let since = chrono::Utc::now();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let targets: Value = self.api("/api/v1/targets", &[]).await;
            let active = targets["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let fresh = !active.is_empty()
                && active.iter().all(|t| {
                    t["health"] == "up"
                        && t["lastScrape"]
                            .as_str()
                            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                            .is_some_and(|at| at > since)
                });
            if fresh {
                return;
            }
            assert!(Instant::now() < deadline, "no fresh scrape: {targets}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query; returns `data.result`.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        let body = self.api("/api/v1/query", &[("query", promql)]).await;
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{labels} → value` of a vector result, for exact comparison.
pub fn by_labels(result: &[Value], keys: &[&str]) -> std::collections::BTreeMap<Vec<String>, f64> {
    result
        .iter()
        .map(|r| {
            let key = keys
                .iter()
                .map(|k| r["metric"][*k].as_str().unwrap_or_default().to_owned())
                .collect();
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (key, value)
        })
        .collect()
}
