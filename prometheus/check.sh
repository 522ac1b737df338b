#!/usr/bin/env bash
# Validates the Prometheus and Alertmanager configuration with the real tools
# (promtool, amtool). Runs from any directory; exits non-zero on the first failure.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$dir"

for tool in promtool amtool; do
  command -v "$tool" >/dev/null || {
    echo "check.sh: $tool not found (Debian: apt-get install prometheus prometheus-alertmanager)" >&2
    exit 1
  }
done

step() { printf '\n==> %s\n' "$*"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# prometheus.yml names the rules by their path inside the container; a glob that
# matches nothing is not an error to promtool, so point a copy at the repo's
# rules and insist that the rewrite happened.
step "promtool check config prometheus.yml (rule_files -> $dir/rules)"
sed "s#/etc/prometheus/rules/#$dir/rules/#g" prometheus.yml >"$tmp/prometheus.yml"
grep -q "$dir/rules/\*\.yml" "$tmp/prometheus.yml" || {
  echo "check.sh: prometheus.yml no longer loads /etc/prometheus/rules/*.yml" >&2
  exit 1
}
promtool check config "$tmp/prometheus.yml"

step "promtool check rules rules/*.yml"
promtool check rules rules/*.yml

step "promtool test rules tests/*.yml"
promtool test rules tests/*.yml

# Every alert needs a unit test where it fires and one where it stays silent,
# a runbook entry, and a runbook annotation that points at that entry.
step "every alert has firing and silent tests, a runbook section and a runbook link"
alerts="$(sed -n 's/^[[:space:]]*- alert:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' rules/*.yml)"
[ -n "$alerts" ] || { echo "check.sh: no alerts found in rules/" >&2; exit 1; }
missing=0
for a in $alerts; do
  anchor="$(printf '%s' "$a" | tr '[:upper:]' '[:lower:]')"
  after="$(grep -h -A1 "alertname: $a\$" tests/*.yml || true)"
  grep -q 'exp_alerts:$' <<<"$after" || { echo "  $a: no test where it fires" >&2; missing=1; }
  grep -q 'exp_alerts: \[\]$' <<<"$after" || { echo "  $a: no test where it stays silent" >&2; missing=1; }
  grep -q "^### $a\$" README.md || { echo "  $a: no '### $a' in README.md" >&2; missing=1; }
  grep -q "runbook: prometheus/README.md#$anchor\$" rules/*.yml || { echo "  $a: runbook annotation does not point at README.md#$anchor" >&2; missing=1; }
done
[ "$missing" -eq 0 ] || exit 1
echo "  $(echo "$alerts" | wc -l) alerts OK"

step "amtool check-config alertmanager.yml"
amtool check-config alertmanager.yml

step "render_alertmanager.sh: delivery settings from the environment"
ALERT_SMTP_SMARTHOST=smtp.example.org:587 ALERT_EMAIL_FROM=alerts@example.org \
ALERT_EMAIL_TO=team@example.org ALERT_WEBHOOK_URL=http://hooks.example.org:8080/am/ \
  sh render_alertmanager.sh alertmanager.yml "$tmp/alertmanager.yml"
amtool check-config "$tmp/alertmanager.yml" >/dev/null
for want in "smtp_smarthost: smtp.example.org:587" "smtp_from: alerts@example.org" \
            "- to: team@example.org" "- url: http://hooks.example.org:8080/am/page"; do
  grep -qF -- "$want" "$tmp/alertmanager.yml" || { echo "  rendered config lacks: $want" >&2; exit 1; }
done
leftover="$(grep -vE '^[[:space:]]*#' "$tmp/alertmanager.yml" | grep -E 'mailpit:1025|alert-webhook:5001|@items-api\.local' || true)"
if [ -n "$leftover" ]; then
  echo "  rendered config still holds a default: $leftover" >&2
  exit 1
fi
echo "  SMTP host, sender, recipient and webhook URL all replaced; amtool accepts it"

step "amtool config routes test: severity decides the receiver"
route_is() { # expected-receiver labels...
  local want="$1"; shift
  # --config.file makes amtool warn that it ignores --alertmanager.url; that is the point.
  if amtool config routes test --config.file=alertmanager.yml --verify.receivers="$want" "$@" \
       2> >(grep -v 'flag overrides the --alertmanager.url' >&2) >/dev/null; then
    echo "  $* -> $want"
  else
    echo "  $* -> expected $want" >&2
    return 1
  fi
}
route_is page alertname=ItemsApiHighErrorRatio job=items-api severity=critical
route_is ticket alertname=ItemsApiHighLatencyP95 job=items-api severity=warning
route_is default alertname=Watchdog job=items-api

echo
echo "All Prometheus/Alertmanager checks passed."
