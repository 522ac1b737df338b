#!/bin/sh
# Renders prometheus/alertmanager.yml with the delivery settings of this deployment:
#
#   render_alertmanager.sh IN OUT
#
#   ALERT_SMTP_SMARTHOST  host:port of the SMTP relay      (default mailpit:1025)
#   ALERT_EMAIL_FROM      sender address                   (default alertmanager@items-api.local)
#   ALERT_EMAIL_TO        recipient of every receiver      (default oncall@items-api.local)
#   ALERT_WEBHOOK_URL     base URL of the webhook receiver; /page, /ticket, /default are
#                         appended per route              (default http://alert-webhook:5001)
#
# Alertmanager 0.25 (Debian 12) does not expand environment variables in its
# configuration, so compose runs this before Alertmanager, and
# scripts/check_stack.py runs it with its local sinks. POSIX sh and sed only: it
# runs in the BusyBox of the prom/alertmanager image. IN keeps the defaults, so it
# stays a valid configuration that amtool checks as it is.
set -eu

[ "$#" -eq 2 ] || { echo "usage: $0 IN OUT" >&2; exit 2; }
in="$1"
out="$2"

smarthost="${ALERT_SMTP_SMARTHOST:-mailpit:1025}"
from="${ALERT_EMAIL_FROM:-alertmanager@items-api.local}"
to="${ALERT_EMAIL_TO:-oncall@items-api.local}"
webhook="${ALERT_WEBHOOK_URL:-http://alert-webhook:5001}"
webhook="${webhook%/}"

# The values go into sed replacements and YAML scalars: refuse what would break either.
for value in "$smarthost" "$from" "$to" "$webhook"; do
    case "$value" in
        "" | *"|"* | *"&"* | *"\\"* | *" "* | *"'"* | *'"'* | *"#"*)
            echo "render_alertmanager.sh: unusable value: '$value'" >&2
            exit 1
            ;;
    esac
done

# Each default must be present exactly where expected, or the output would keep it.
for key in "^  smtp_smarthost: mailpit:1025\$" "^  smtp_from: alertmanager@items-api.local\$" \
           "^      - to: oncall@items-api.local\$" "^      - url: http://alert-webhook:5001/"; do
    grep -q "$key" "$in" || { echo "render_alertmanager.sh: $in has no line matching $key" >&2; exit 1; }
done

sed -e "s|^  smtp_smarthost: mailpit:1025\$|  smtp_smarthost: $smarthost|" \
    -e "s|^  smtp_from: alertmanager@items-api.local\$|  smtp_from: $from|" \
    -e "s|^      - to: oncall@items-api.local\$|      - to: $to|" \
    -e "s|^      - url: http://alert-webhook:5001/|      - url: $webhook/|" \
    "$in" >"$out.tmp"
mv "$out.tmp" "$out"
